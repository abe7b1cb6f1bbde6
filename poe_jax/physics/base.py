"""The physics interface shared by the ``native`` and ``mjx`` backends."""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

@struct.dataclass
class Coords:
    """Generalised coordinates of one lane, float64-faithful in float32 storage.

    JAX runs in float32, MuJoCo C in float64. Each float64 value ``x`` is stored as
    ``hi = float32(x)`` and ``lo = float32(x - hi)``, so the native backend's state
    survives a round trip through the jitted program (to ~1e-14 relative) and
    differences such as the forward displacement stay accurate far from the
    origin. The ``mjx`` backend, which is float32, keeps ``lo = 0``.

    Attributes:
        qpos, qpos_lo: ``[nq]``. qvel, qvel_lo: ``[nv]``.
        xbody, xbody_lo: ``[1]``, the world x of the tracked body as MuJoCo's ``xpos`` holds it
            after the last step (Gymnasium's ``get_body_com(body)[0]``), when the physics tracks a
            body (``track_body``); None otherwise. Under RK4 ``xpos`` holds the kinematics of the
            last Runge-Kutta stage, which lags ``qpos`` by up to ~1e-4 m, so it is not a function
            of ``qpos`` and is carried here.
        cfrc: ``[nbody * 6]`` float32, MuJoCo's ``cfrc_ext`` (each body's com-based external force,
            torque first) after the step and ``mj_rnePostConstraint``, as Gymnasium's MuJoCo envs
            compute it after every step (Ant-v5 observes and pays for it), when the physics
            computes contact forces (``contact_forces=True``); None otherwise. Zero after a reset
            (``mj_forward`` does not compute it).
    """

    qpos: jax.Array
    qpos_lo: jax.Array
    qvel: jax.Array
    qvel_lo: jax.Array
    xbody: jax.Array | None = None
    xbody_lo: jax.Array | None = None
    cfrc: jax.Array | None = None

    @classmethod
    def from_float(cls, qpos, qvel) -> "Coords":
        """From float32 (or, outside jit, float64 NumPy) coordinates."""
        if isinstance(qpos, np.ndarray) and qpos.dtype == np.float64:
            return cls(*split64(qpos), *split64(np.asarray(qvel, np.float64)))
        qpos = jnp.asarray(qpos, jnp.float32)
        qvel = jnp.asarray(qvel, jnp.float32)
        return cls(qpos, jnp.zeros_like(qpos), qvel, jnp.zeros_like(qvel))

    def tracking(self) -> "Coords":
        """These coordinates with ``xbody`` set, to the root body's ``qpos[0]`` when it is unset (a
        reset or ``set_state`` runs ``mj_forward``, after which a free root body's ``xpos`` is its qpos)."""
        if self.xbody is not None:
            return self
        return self.replace(xbody=self.qpos[:1], xbody_lo=self.qpos_lo[:1])

    def with_forces(self, nbody: int) -> "Coords":
        """These coordinates with ``cfrc`` set, to zeros when it is unset (a reset)."""
        if self.cfrc is not None:
            return self
        return self.replace(cfrc=jnp.zeros(6 * nbody, jnp.float32))

    def to_float64(self) -> tuple[np.ndarray, np.ndarray]:
        """Host-side float64 ``(qpos, qvel)`` (outside jit)."""
        return join64(self.qpos, self.qpos_lo), join64(self.qvel, self.qvel_lo)


def split64(x) -> tuple[np.ndarray, np.ndarray]:
    """float64 array -> (hi, lo) float32 pair with ``hi + lo == x`` to ~2^-48."""
    x = np.asarray(x, np.float64)
    hi = x.astype(np.float32)
    lo = (x - hi.astype(np.float64)).astype(np.float32)
    return hi, lo


def join64(hi, lo) -> np.ndarray:
    return np.asarray(hi, np.float64) + np.asarray(lo, np.float64)


def diff_hi_lo(a_hi, a_lo, b_hi, b_lo):
    """``a - b`` of two hi/lo pairs, accurate in float32 when ``a ~ b``."""
    return (a_hi - b_hi) + (a_lo - b_lo)


class Physics(Protocol):
    """One backend bound to one MuJoCo model and frame skip.

    ``step(q, ctrl, active) -> q_next`` acts on one lane and works under ``jit``
    and ``vmap``:

    * ``q``: :class:`Coords` before the control step;
    * ``ctrl``: ``[nu]`` float32, already clipped to the actuator range;
    * ``active``: bool scalar; inactive lanes are returned unchanged (and the
      native backend does not simulate them);
    * ``scales``: optional ``[2]`` (body-mass scale, friction scale) of the lane's
      model; ``None`` or ``(1, 1)`` is the nominal model, bit for bit.

    A factory called with ``track_body=ID`` returns ``q_next`` with ``xbody``/``xbody_lo`` set to
    body ``ID``'s x from MuJoCo's ``xpos`` after the step (see :class:`Coords`); called with
    ``contact_forces=True``, with ``cfrc`` set to ``cfrc_ext`` after ``mj_rnePostConstraint``.
    ``body_x(q) -> [1]`` is the tracked body's x from forward kinematics at ``q`` (what ``xpos``
    holds after a reset's ``mj_forward``).
    """

    name: str
    model: mujoco.MjModel
    frame_skip: int

    def step(self, q: Coords, ctrl: jax.Array, active: jax.Array, scales: jax.Array | None = None) -> Coords: ...


def scaled_fields(body_mass, body_inertia, geom_friction, scales):
    """(body_mass, body_inertia, geom_friction) of a model shifted by ``scales = (mass, friction)``."""
    return body_mass * scales[0], body_inertia * scales[0], geom_friction * scales[1]


def accelerator_present() -> bool:
    return any(d.platform in ("gpu", "tpu", "cuda", "rocm") for d in jax.devices())


# The backend registry: name -> factory ``(model, frame_skip, **options) -> Physics``. A backend
# registers where it is defined (``@register_backend("native")`` on its class); the built-in ones
# are imported by name on first use (``poe_jax.physics.make_physics``), so importing this module
# imports no backend.
BACKEND_FACTORIES: dict[str, object] = {}
BUILTIN_MODULES = {"native": "poe_jax.physics.native", "mjx": "poe_jax.physics.mjx"}


def register_backend(name: str):
    """Decorator: register a :class:`Physics` factory ``(model, frame_skip, **options)`` as backend ``name``."""

    def deco(factory):
        if name == "auto" or (name in BACKEND_FACTORIES and BACKEND_FACTORIES[name] is not factory):
            raise ValueError(f"physics backend {name!r} is already registered")
        BACKEND_FACTORIES[name] = factory
        return factory

    return deco


def backend_names() -> tuple[str, ...]:
    """``auto`` and every known backend (built-in or registered)."""
    return ("auto", *dict.fromkeys([*BUILTIN_MODULES, *BACKEND_FACTORIES]))



def resolve_backend(backend: str) -> str:
    """``auto`` -> ``mjx`` with an accelerator, else ``native``."""
    if backend not in backend_names():
        raise ValueError(f"unknown backend {backend!r}; known backends: {', '.join(backend_names())}")
    if backend == "auto":
        return "mjx" if accelerator_present() else "native"
    return backend
