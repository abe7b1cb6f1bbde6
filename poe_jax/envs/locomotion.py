"""Hopper, HalfCheetah, Walker2d and Ant with D4RL-v2 = Gymnasium-v4 semantics.

Sources: gymnasium/envs/mujoco/{hopper,walker2d,half_cheetah,ant}_v4.py (the
installed package) and D4RL's reference scores (d4rl/infos.py).

Ant's forward velocity is Gymnasium's: the torso's x from ``xpos`` before and after the step
(``get_body_com("torso")``). After an RK4 ``mj_step``, ``xpos`` holds the kinematics of the
last Runge-Kutta stage, up to ~1e-4 m from the end-of-step ``qpos``, so the physics returns it
with the state (``EnvSpec.forward_body``, ``Coords.xbody``; the native backend reads it from
``mujoco.batch``, MJX from ``mjx.Data.xpos``). D4RL's ant data were made the same way.
"""

from __future__ import annotations

import jax.numpy as jnp

import dataclasses
import functools

from poe_jax.envs.base import Env, EnvSpec, free_body_tilt
from poe_jax.envs.registry import register_env

ANT_OBS_PAD = 84  # D4RL ant-v2 stored 84 contact-force entries, all zero in MuJoCo >= 2


def _planar_obs(clip_qvel: bool):
    def obs(qpos, qvel):
        v = jnp.clip(qvel, -10.0, 10.0) if clip_qvel else qvel
        return jnp.concatenate([qpos[1:], v])

    return obs


def _hopper_healthy(qpos, qvel):
    state = jnp.concatenate([qpos, qvel])[2:]
    z, angle = qpos[1], qpos[2]
    ok_state = jnp.all((state > -100.0) & (state < 100.0))
    return ok_state & (z > 0.7) & (angle > -0.2) & (angle < 0.2)


def _walker_healthy(qpos, qvel):
    z, angle = qpos[1], qpos[2]
    return (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)


def _ant_obs(qpos, qvel):
    return jnp.concatenate([qpos[2:], qvel, jnp.zeros(ANT_OBS_PAD, qpos.dtype)])


def _ant_v5_obs(qpos, qvel):  # the clipped cfrc_ext is appended by Env (EnvSpec.contact_forces)
    return jnp.concatenate([qpos[2:], qvel])


def _ant_healthy(qpos, qvel):
    finite = jnp.all(jnp.isfinite(qpos)) & jnp.all(jnp.isfinite(qvel))
    return finite & (qpos[2] >= 0.2) & (qpos[2] <= 1.0)


SPECS: dict[str, EnvSpec] = {
    "hopper": EnvSpec(
        name="hopper", xml="hopper.xml", frame_skip=4,
        obs_fn=_planar_obs(clip_qvel=True), healthy_fn=_hopper_healthy,
        ctrl_cost_weight=1e-3, healthy_reward=1.0,
        qpos_noise=("uniform", 5e-3), qvel_noise=("uniform", 5e-3),
        ref_min_score=-20.272305, ref_max_score=3234.3,
    ),
    "halfcheetah": EnvSpec(
        name="halfcheetah", xml="half_cheetah.xml", frame_skip=5,
        obs_fn=_planar_obs(clip_qvel=False), healthy_fn=None,
        ctrl_cost_weight=0.1, healthy_reward=0.0,
        qpos_noise=("uniform", 0.1), qvel_noise=("normal", 0.1),
        ref_min_score=-280.178953, ref_max_score=12135.0,
    ),
    "walker2d": EnvSpec(
        name="walker2d", xml="walker2d.xml", frame_skip=4,
        obs_fn=_planar_obs(clip_qvel=True), healthy_fn=_walker_healthy,
        ctrl_cost_weight=1e-3, healthy_reward=1.0,
        qpos_noise=("uniform", 5e-3), qvel_noise=("uniform", 5e-3),
        ref_min_score=1.629008, ref_max_score=4592.3,
    ),
    "ant": EnvSpec(
        name="ant", xml="ant.xml", frame_skip=5,
        obs_fn=_ant_obs, healthy_fn=_ant_healthy, tilt_fn=free_body_tilt,
        ctrl_cost_weight=0.5, healthy_reward=1.0,
        qpos_noise=("uniform", 0.1), qvel_noise=("normal", 0.1),
        ref_min_score=-325.6, ref_max_score=3879.7,
        notes="obs: qpos[2:], qvel (27) + 84 zeros = 111; contact cost 0",
        forward_body="torso",
    ),
}

# G3's default target speeds (m/s): speeds the shipped medium actors do not run at (2.3, 2.5, 5.7,
# 3.5) but a behaviour in the priors' data does (checkpoints/README.md, "Goal priors").
GOAL_DEFAULTS = {
    "hopper": {"G3_target": {"target_speed": 1.2}},
    "walker2d": {"G3_target": {"target_speed": 1.5}},
    "halfcheetah": {"G3_target": {"target_speed": 3.0, "width": 1.0}},  # its speeds spread wider
    "ant": {"G3_target": {"target_speed": 2.5}},
}
# Gymnasium v5 (the envs Minari's MuJoCo datasets were collected on): the same dynamics and
# observations as v4 but the healthy reward only while healthy, and walker2d_v5.xml (both feet
# with friction 1.9; v4's left foot has 0.9). Ant-v5 observes qpos[2:], qvel and cfrc_ext (after
# mj_rnePostConstraint, clipped to [-1, 1]) of its 13 bodies: 13 + 14 + 78 = 105, and pays
# 5e-4 * sum(clip(cfrc_ext)^2). D4RL's reference scores are kept for the normalised score.
D4RL_NAMES = tuple(SPECS)  # the v4 envs D4RL's locomotion data and the zoo use
SPECS.update({
    f"{name}-v5": dataclasses.replace(SPECS[name], name=f"{name}-v5", healthy_reward_only_when_healthy=True,
                                      xml="walker2d_v5.xml" if name == "walker2d" else SPECS[name].xml)
    for name in ("hopper", "halfcheetah", "walker2d")
})
SPECS["ant-v5"] = dataclasses.replace(
    SPECS["ant"], name="ant-v5", obs_fn=_ant_v5_obs, healthy_reward_only_when_healthy=True, contact_forces=True,
    contact_cost_weight=5e-4, notes="obs: qpos[2:], qvel, clip(cfrc_ext[1:], -1, 1) (13 + 14 + 78 = 105); contact cost "
                                    "5e-4 * sum(clip(cfrc_ext)^2)")
GOAL_DEFAULTS.update({f"{name}-v5": GOAL_DEFAULTS[name] for name in ("hopper", "halfcheetah", "walker2d", "ant")})
# The Gymnasium ids of the same models (Minari's datasets name them).
GYM_IDS = {"hopper": "Hopper-v4", "halfcheetah": "HalfCheetah-v4", "walker2d": "Walker2d-v4", "ant": "Ant-v4",
           "hopper-v5": "Hopper-v5", "halfcheetah-v5": "HalfCheetah-v5", "walker2d-v5": "Walker2d-v5", "ant-v5": "Ant-v5"}
# The data generator's per-env settings (poe_jax.data.generate): SAC's random warm-up steps (10k for the
# envs that need more exploration), ant's critic learning rate (CleanRL's q_lr, see sac_config), and the
# speeds of the speed-tracking SAC policies of the goal priors' data with their reward's slope.
RECIPES = {
    "hopper": {"sac_warmup": 5_000, "tracking_speeds": {1.2: 0.0}},
    "walker2d": {"sac_warmup": 5_000, "tracking_speeds": {1.5: 0.0}},
    "halfcheetah": {"sac_warmup": 10_000, "tracking_speeds": {3.0: 1.0}},
    "ant": {"sac_warmup": 10_000, "sac_critic_lr": 1e-3},
}
# MJX solver settings (poe_jax.physics.mjx.MjxOptions): MuJoCo Playground's iterations / line-search iterations
# for hopper (4/10) and halfcheetah (4/8), kept where one step from 200 Gymnasium states still agrees as well as
# with the model's own 100/50 (measured on the 2-core VM; the 1e-3 parity tests run at these defaults).
# walker2d's Playground 2/5 did not: on walker2d-v5 2/5 moved the observation by 0.46 and 3/6 by 0.013, 4/8 by
# 5.5e-4 (kept); on walker2d (v4) 4/10 by 0.11 where 8/16 and 100/50 both give 0.025 on 2 of the 200 states
# (kept: 8/16). Ant keeps the model's. Euler damping stays on: without it halfcheetah's damped joints moved 5.1.
MJX_DEFAULTS = {"hopper": {"iterations": 4, "ls_iterations": 10}, "halfcheetah": {"iterations": 4, "ls_iterations": 8},
                "walker2d": {"iterations": 8, "ls_iterations": 16}, "hopper-v5": {"iterations": 4, "ls_iterations": 10},
                "halfcheetah-v5": {"iterations": 4, "ls_iterations": 8},
                "walker2d-v5": {"iterations": 4, "ls_iterations": 8}}
for _name, _spec in SPECS.items():
    _options = ("terminate_when_unhealthy", "max_steps", "forward_reward_weight") + (
        ("main_body",) if _spec.forward_body is not None else ())
    register_env(_name, goal_defaults=GOAL_DEFAULTS.get(_name), options=_options,
                 metrics=("x_velocity", "ctrl_cost", "tilt") + (("contact_cost",) if _spec.contact_forces else ()),
                 gym_id=GYM_IDS[_name], tracked_body=_spec.forward_body, contact_forces=_spec.contact_forces,
                 recipe=RECIPES.get(_name), mjx=MJX_DEFAULTS.get(_name))(functools.partial(Env, _spec))
