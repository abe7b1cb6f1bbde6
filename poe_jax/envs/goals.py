"""Deployment goals: reward functions of ``(state, action, next_state)``.

Each goal is jittable and vmappable, with parameters that can be overridden by
name (an unknown name is an error listing the known ones). ``v`` below is the
forward velocity ``next_state.metrics["x_velocity"]`` (m/s) and ``a`` the action.

* ``G1_speed`` -- pure forward speed: ``r = v``.
* ``G2_balanced`` -- speed with effort and posture: ``r = v - ctrl_weight * |a|^2
  - upright_weight * tilt^2``, with ``tilt`` the torso pitch ``qpos[2]`` (rad) for
  the planar walkers, and for the Ant the angle between the torso's z axis and
  the vertical.
* ``G3_target`` -- track a target speed the frozen actor does not run at:
  ``r = -|v - target_speed|``; defaults (m/s): hopper 0.5, walker2d 0.5,
  halfcheetah 2.0, ant 0.5.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from poe_jax.envs.base import State


def _tilt(env: str, qpos: jax.Array) -> jax.Array:
    if env == "ant":
        qx, qy = qpos[4], qpos[5]
        z_up = 1.0 - 2.0 * (qx * qx + qy * qy)  # z component of the torso z axis
        return jnp.arccos(jnp.clip(z_up, -1.0, 1.0))
    return qpos[2]


def g1_speed(env: str, state: State, action, next_state: State) -> jax.Array:
    """``r = v``."""
    return next_state.metrics["x_velocity"]


def g2_balanced(env: str, state: State, action, next_state: State, ctrl_weight: float = 0.1,
                upright_weight: float = 1.0) -> jax.Array:
    """``r = v - ctrl_weight * |a|^2 - upright_weight * tilt^2``."""
    v = next_state.metrics["x_velocity"]
    a = jnp.asarray(action)
    tilt = _tilt(env, next_state.q.qpos)
    return v - ctrl_weight * jnp.sum(a * a) - upright_weight * tilt * tilt


TARGET_SPEED = {"hopper": 0.5, "walker2d": 0.5, "halfcheetah": 2.0, "ant": 0.5}


def g3_target(env: str, state: State, action, next_state: State, target_speed: float | None = None) -> jax.Array:
    """``r = -|v - target_speed|``."""
    target = TARGET_SPEED.get(env, 1.0) if target_speed is None else target_speed
    return -jnp.abs(next_state.metrics["x_velocity"] - target)


@dataclass(frozen=True)
class Goal:
    """A goal bound to an env and parameters; call as ``goal(state, action, next_state)``."""

    name: str
    env: str
    params: dict
    fn: Callable

    def __call__(self, state: State, action, next_state: State) -> jax.Array:
        return self.fn(self.env, state, action, next_state, **self.params)


GOALS: dict[str, tuple[Callable, dict]] = {
    "G1_speed": (g1_speed, {}),
    "G2_balanced": (g2_balanced, {"ctrl_weight": 0.1, "upright_weight": 1.0}),
    "G3_target": (g3_target, {"target_speed": None}),
}


def goal_names() -> tuple[str, ...]:
    return tuple(GOALS)


def make_goal(name: str, env: str, **params) -> Goal:
    """Bind goal ``name`` to ``env`` with parameter overrides."""
    if name not in GOALS:
        raise KeyError(f"unknown goal {name!r}; known goals: {', '.join(GOALS)}")
    fn, defaults = GOALS[name]
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(
            f"goal {name!r} has no parameter(s) {sorted(unknown)}; its parameters: {sorted(defaults) or 'none'}"
        )
    bound = dict(defaults, **params)
    if name == "G3_target" and bound["target_speed"] is None:
        bound["target_speed"] = TARGET_SPEED.get(env, 1.0)
    return Goal(name, env, bound, fn)


def goal_params(name: str, env: str) -> dict:
    """The default parameters of goal ``name`` on ``env``."""
    return dict(make_goal(name, env).params)


__all__ = ["GOALS", "Goal", "g1_speed", "g2_balanced", "g3_target", "goal_names", "goal_params", "make_goal"]
