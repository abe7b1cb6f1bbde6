"""Functional environments over a physics backend: ``State`` and ``Env``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from poe_jax.envs.registry import OPTIONS
from poe_jax.physics import Coords, make_physics, resolve_backend
from poe_jax.physics.base import diff_hi_lo, split64


@struct.dataclass
class State:
    """One lane's environment state: an immutable pytree (update with ``.replace``).

    Attributes:
        q: generalised coordinates (:class:`~poe_jax.physics.Coords`).
        obs: ``[obs_size]`` observation.
        reward: task reward of the last step (0 after reset and once done).
        done: ``terminated | truncated``; a done lane is frozen by ``step``.
        terminated: the env's termination rule fired (not the time limit).
        truncated: the time limit ``max_steps`` was reached.
        step: control steps taken since reset (int32).
        metrics: per-step quantities goals and rollouts read (e.g. ``x_velocity``).
        scales: ``[2]`` float32 deployment shift of the lane's model: (body-mass scale,
            friction scale), ``(1, 1)`` after ``reset``. Set it with
            ``state.replace(scales=...)`` (:meth:`Env.with_scales`); every body's mass and
            inertia (uniform density scale) and every geom's friction are multiplied.
    """

    q: Coords
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    step: jax.Array
    metrics: dict[str, jax.Array]
    scales: jax.Array


def planar_pitch(qpos: jax.Array) -> jax.Array:
    """The torso pitch of a planar walker (hopper, walker2d, halfcheetah): ``qpos[2]``."""
    return qpos[2]


def free_body_tilt(qpos: jax.Array) -> jax.Array:
    """The angle of a free body's z axis from the vertical, from its quaternion ``qpos[3:7]`` (Ant)."""
    qx, qy = qpos[4], qpos[5]
    z_up = 1.0 - 2.0 * (qx * qx + qy * qy)  # z component of the body's z axis
    return jnp.arccos(jnp.clip(z_up, -1.0, 1.0))


@dataclass(frozen=True)
class EnvSpec:
    """Everything that defines an environment's semantics (Gymnasium v4 / D4RL v2).

    ``obs_fn(qpos, qvel)``, ``healthy_fn(qpos, qvel)``, ``tilt_fn(qpos)`` act on float32
    coordinates of one lane. Rewards are ``forward_reward_weight * x_velocity + healthy_reward -
    ctrl_cost_weight * |a|^2 - contact_cost_weight * |clip(cfrc_ext)|^2`` (the last only with
    ``contact_forces``, Gymnasium's Ant-v5, whose observation also ends with the clipped
    ``cfrc_ext`` of every body but the world).
    ``tilt_fn`` is the torso's tilt from upright (radians), published as ``metrics["tilt"]`` for
    goals: the pitch ``qpos[2]`` of the planar walkers by default (:func:`planar_pitch`).
    """

    name: str
    xml: str  # file name inside gymnasium's MuJoCo assets
    frame_skip: int
    obs_fn: Callable[[jax.Array, jax.Array], jax.Array]
    healthy_fn: Callable[[jax.Array, jax.Array], jax.Array] | None
    ctrl_cost_weight: float
    healthy_reward: float
    qpos_noise: tuple[str, float]  # ("uniform", scale) or ("normal", scale)
    qvel_noise: tuple[str, float]
    max_steps: int = 1000
    ref_min_score: float = 0.0
    ref_max_score: float = 1.0
    notes: str = ""
    extra: dict = field(default_factory=dict)
    tilt_fn: Callable[[jax.Array], jax.Array] = planar_pitch
    # The body whose x from MuJoCo's xpos gives the forward velocity (Gymnasium's Ant:
    # get_body_com("torso") before and after the step); None: qpos[0], as the planar walkers.
    # The root free body's xpos equals its qpos at a reset; another body's comes from forward kinematics.
    forward_body: str | None = None
    # Gymnasium v5: the healthy reward is paid only while healthy (v4 also pays it on the step
    # that terminates the episode).
    healthy_reward_only_when_healthy: bool = False
    # Gymnasium's Ant-v5: cfrc_ext after mj_rnePostConstraint, clipped to contact_force_range, is
    # appended to the observation (every body but the world) and costs contact_cost_weight * sum(clip^2).
    contact_forces: bool = False
    contact_cost_weight: float = 0.0
    contact_force_range: tuple[float, float] = (-1.0, 1.0)

    def normalized_score(self, returns):
        """D4RL's normalised score: ``100 (return - random) / (expert - random)``."""
        return 100 * (returns - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


def load_model(xml: str) -> mujoco.MjModel:
    """A MuJoCo model from Gymnasium's assets.

    MuJoCo >= 4 deprecates the ``settotalmass`` compiler attribute (half_cheetah.xml
    uses it) and warns on every parse. It is applied here as MuJoCo advises, with
    ``mj_setTotalmass`` and ``mj_setConst`` on the compiled model, which gives the
    same model field for field (tested).
    """
    path = gymnasium_asset(xml)
    text = path.read_text()
    found = re.search(r'\s+settotalmass="([^"]+)"', text)
    if found is None:
        return mujoco.MjModel.from_xml_path(str(path))
    model = mujoco.MjModel.from_xml_string(text.replace(found.group(0), "", 1))
    mujoco.mj_setTotalmass(model, float(found.group(1)))
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


def gymnasium_asset(xml: str) -> Path:
    """Path of a MuJoCo model shipped by the installed ``gymnasium`` package."""
    import gymnasium

    path = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets" / xml
    if not path.exists():
        raise FileNotFoundError(f"gymnasium does not ship {xml} (looked at {path})")
    return path


class Env:
    """A functional environment: ``reset``/``reset_to``/``step`` act on one lane.

    All three work under ``jax.jit`` and ``jax.vmap`` on both backends; on
    ``native`` a vmapped ``step`` is one batched host call. A done lane is
    frozen: ``step`` returns it unchanged with reward 0.

    Args:
        spec: the environment definition.
        backend: ``"auto"``, ``"native"`` or ``"mjx"``.
        max_steps: episode length before truncation (default: the spec's).
        terminate_when_unhealthy: as Gymnasium's option of that name; when False
            an unhealthy state earns no healthy reward but the episode goes on.
        model: the MuJoCo model (default: ``spec.xml`` from Gymnasium's assets).
        forward_reward_weight: as Gymnasium's option: the weight of the forward velocity in the
            task reward (``metrics["x_velocity"]``, which goals read, stays unweighted).
        main_body: as Gymnasium's Ant-v5 option (envs that measure the forward velocity from a
            body's ``xpos``): the body, by name or id, whose x displacement is the forward velocity.
        **physics_options: passed to the backend (e.g. ``nthread`` for native).
    """

    def __init__(self, spec: EnvSpec, backend: str = "auto", max_steps: int | None = None,
                 terminate_when_unhealthy: bool = True, model: mujoco.MjModel | None = None,
                 forward_reward_weight: float = 1.0, main_body: str | int | None = None, **physics_options):
        self.spec = spec
        self.terminate_when_unhealthy = OPTIONS["terminate_when_unhealthy"].check(
            "terminate_when_unhealthy", terminate_when_unhealthy)
        self.name = spec.name
        self.backend = resolve_backend(backend)
        self.model = load_model(spec.xml) if model is None else model
        self.forward_reward_weight = OPTIONS["forward_reward_weight"].check("forward_reward_weight", forward_reward_weight)
        if main_body is not None and spec.forward_body is None:
            raise ValueError(f"{self.name}: main_body does not apply (its forward velocity is qpos[0]'s); it applies "
                             "to envs that measure it from a body's xpos (ant, ant-v5)")
        self.forward_body, self._root_tracked = None, True
        if spec.forward_body is not None:
            self.forward_body, self._root_tracked = _body(self.model, spec.forward_body if main_body is None else main_body)
            physics_options = {**physics_options, "track_body": self.forward_body}
        if spec.contact_forces:
            physics_options = {**physics_options, "contact_forces": True}
        self.physics = make_physics(self.backend, self.model, spec.frame_skip, **physics_options)
        self.dt = float(self.model.opt.timestep * spec.frame_skip)
        self.max_steps = OPTIONS["max_steps"].check("max_steps", spec.max_steps if max_steps is None else max_steps)
        rng = self.model.actuator_ctrlrange
        self.action_low = jnp.asarray(rng[:, 0], jnp.float32)
        self.action_high = jnp.asarray(rng[:, 1], jnp.float32)
        self.init_qpos = np.asarray(self.model.qpos0, np.float64)
        self.init_qvel = np.zeros(self.model.nv)
        self.nq, self.nv, self.act_size = self.model.nq, self.model.nv, self.model.nu

    def __repr__(self) -> str:
        return f"Env({self.name!r}, backend={self.backend!r}, obs={self.obs_size}, act={self.act_size})"

    @property
    def obs_size(self) -> int:
        shape = jax.eval_shape(self.reset, jax.random.key(0)).obs.shape
        return int(shape[-1])

    # -------------------------------------------------------------- reset
    def _state(self, q: Coords) -> State:
        zero = jnp.zeros((), jnp.float32)
        if self.forward_body is not None and self._root_tracked:  # a reset runs mj_forward: the root's xpos is its qpos
            q = q.tracking()
        elif self.forward_body is not None:  # another body: forward kinematics
            xb, xb_lo = self.physics.body_x(q, self.forward_body)
            q = q.replace(xbody=xb, xbody_lo=xb_lo)
        if self.spec.contact_forces:
            q = q.with_forces(self.model.nbody)
        metrics = {"x_velocity": zero, "ctrl_cost": zero, "tilt": self.spec.tilt_fn(q.qpos)}
        if self.spec.contact_forces:
            metrics["contact_cost"] = zero
        false = jnp.zeros((), jnp.bool_)
        return State(q, self._obs(q), zero, false, false, false, jnp.zeros((), jnp.int32), metrics,
                     jnp.ones(2, jnp.float32))

    def _obs(self, q: Coords) -> jax.Array:
        obs = self.spec.obs_fn(q.qpos, q.qvel)
        if not self.spec.contact_forces:
            return obs
        return jnp.concatenate([obs, jnp.clip(q.cfrc[6:], *self.spec.contact_force_range)])

    @staticmethod
    def with_scales(state: State, mass=1.0, friction=1.0) -> State:
        """``state`` with its model shifted: body masses/inertias × ``mass``, frictions × ``friction``."""
        return state.replace(scales=jnp.stack([jnp.asarray(mass, jnp.float32), jnp.asarray(friction, jnp.float32)]))

    def reset(self, key: jax.Array) -> State:
        """Initial state with the env's reset noise, drawn from ``key``."""
        kp, kv = jax.random.split(key)
        qpos = _noise(kp, self.spec.qpos_noise, self.nq)
        qvel = _noise(kv, self.spec.qvel_noise, self.nv)
        # init + noise in float64 terms: hi = init (as hi/lo) + noise.
        hi, lo = (jnp.asarray(a) for a in split64(self.init_qpos))
        q = Coords(hi + qpos, lo, qvel, jnp.zeros_like(qvel))
        return self._state(q)

    def reset_to(self, qpos, qvel) -> State:
        """State at given coordinates (``[nq]``, ``[nv]``; float64 NumPy kept exact)."""
        qpos_np = np.asarray(qpos) if not isinstance(qpos, jax.core.Tracer) else None
        if qpos_np is not None and qpos_np.shape[-1] != self.nq:
            raise ValueError(f"{self.name}: qpos must have {self.nq} entries; got shape {qpos_np.shape}")
        if qpos_np is not None and np.shape(qvel)[-1] != self.nv:
            raise ValueError(f"{self.name}: qvel must have {self.nv} entries; got shape {np.shape(qvel)}")
        return self._state(Coords.from_float(qpos, qvel))

    def reset_to_batch(self, qpos, qvel) -> State:
        """Batched :meth:`reset_to` from host arrays ``[batch, nq]``, ``[batch, nv]``.

        float64 inputs stay exact (split into hi/lo float32 pairs on the host),
        which a vmapped ``reset_to`` on traced values cannot do.
        """
        qpos, qvel = np.asarray(qpos, np.float64), np.asarray(qvel, np.float64)
        if qpos.ndim != 2 or qpos.shape[1] != self.nq or qvel.shape != (qpos.shape[0], self.nv):
            raise ValueError(
                f"{self.name}: expected qpos [batch, {self.nq}] and qvel [batch, {self.nv}]; "
                f"got {qpos.shape} and {qvel.shape}"
            )
        return jax.vmap(self._state)(Coords.from_float(qpos, qvel))

    # -------------------------------------------------------------- step
    def step(self, state: State, action: jax.Array) -> State:
        """Advance one control step (``frame_skip`` MuJoCo steps).

        A template: clip the action, step the physics (done lanes are frozen, reward 0),
        compute the forward velocity, then :meth:`outcome` (reward, termination, metrics;
        what a subclass changes), truncation at ``max_steps``, and the observation."""
        action = jnp.clip(jnp.asarray(action, jnp.float32), self.action_low, self.action_high)
        active = ~state.done
        q0 = state.q
        q1 = self.physics.step(q0, action, active, state.scales)
        if self.forward_body is None:
            x_velocity = diff_hi_lo(q1.qpos[0], q1.qpos_lo[0], q0.qpos[0], q0.qpos_lo[0]) / self.dt
        else:
            x_velocity = diff_hi_lo(q1.xbody[0], q1.xbody_lo[0], q0.xbody[0], q0.xbody_lo[0]) / self.dt
        reward, terminated, metrics = self.outcome(state, q1, action, x_velocity)
        steps = state.step + 1
        truncated = (steps >= self.max_steps) & ~terminated
        new = State(q=q1, obs=self._obs(q1), reward=reward, done=terminated | truncated,
                    terminated=terminated, truncated=truncated, step=steps, metrics=metrics, scales=state.scales)
        frozen = state.replace(reward=jnp.zeros_like(state.reward))
        return jax.tree_util.tree_map(lambda n, o: jnp.where(active, n, o), new, frozen)

    def outcome(self, state: State, q1: Coords, action: jax.Array, x_velocity: jax.Array):
        """``(reward, terminated, metrics)`` of a step that reached ``q1`` (the hook of :meth:`step`).

        Locomotion: Gymnasium's ``forward + healthy - ctrl_cost`` and its health rule."""
        spec = self.spec
        ctrl_cost = spec.ctrl_cost_weight * jnp.sum(action * action)
        healthy = jnp.ones((), jnp.bool_) if spec.healthy_fn is None else spec.healthy_fn(q1.qpos, q1.qvel)
        if self.terminate_when_unhealthy and not spec.healthy_reward_only_when_healthy:
            terminated, healthy_reward = ~healthy, spec.healthy_reward
        elif self.terminate_when_unhealthy:
            terminated, healthy_reward = ~healthy, jnp.where(healthy, spec.healthy_reward, 0.0)
        else:
            terminated = jnp.zeros((), jnp.bool_)
            healthy_reward = jnp.where(healthy, spec.healthy_reward, 0.0)
        metrics = {"x_velocity": x_velocity, "ctrl_cost": ctrl_cost, "tilt": spec.tilt_fn(q1.qpos)}
        reward = self.forward_reward_weight * x_velocity + healthy_reward - ctrl_cost
        if spec.contact_forces:
            forces = jnp.clip(q1.cfrc, *spec.contact_force_range)
            metrics["contact_cost"] = spec.contact_cost_weight * jnp.sum(forces * forces)
            reward = reward - metrics["contact_cost"]
        return reward, terminated, metrics


def _body(model: mujoco.MjModel, body: str | int) -> tuple[int, bool]:
    """``(id, is the root free body)`` of ``body`` (a name or an id); the root free body hangs on a
    free joint at ``qpos[0:7]``, so its ``xpos`` after a reset is its qpos."""
    try:
        bid = model.body(body).id if isinstance(body, str) else int(body)
    except KeyError:
        names = [model.body(i).name for i in range(1, model.nbody)]
        raise ValueError(f"main_body: no body {body!r}; bodies: {', '.join(names)}") from None
    if isinstance(body, bool) or not 0 < bid < model.nbody:
        raise ValueError(f"main_body: body id {body!r} out of range 1..{model.nbody - 1}")
    jnt = model.body_jntadr[bid]
    root = bool(jnt >= 0 and model.jnt_type[jnt] == mujoco.mjtJoint.mjJNT_FREE and model.jnt_qposadr[jnt] == 0)
    return int(bid), root


def _noise(key, kind: tuple[str, float], n: int) -> jax.Array:
    dist, scale = kind
    if dist == "uniform":
        return jax.random.uniform(key, (n,), jnp.float32, -scale, scale)
    if dist == "normal":
        return scale * jax.random.normal(key, (n,), jnp.float32)
    raise ValueError(f"unknown reset noise {dist!r}")
