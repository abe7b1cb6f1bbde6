"""Physics backends: one small interface, two ways to step MuJoCo.

Every backend exposes :class:`~poe_jax.physics.base.Physics`:
``step(q, ctrl, active) -> q'`` acting on one lane of float64-faithful
generalised coordinates (:class:`~poe_jax.physics.base.Coords`), usable under
``jax.jit`` and ``jax.vmap``.

* ``native`` -- MuJoCo C through ``mujoco.rollout`` on a persistent thread pool,
  called from the jitted program with ``jax.pure_callback`` (the CPU path).
* ``mjx`` -- ``mujoco.mjx`` in JAX (GPUs/TPUs; slow to compile and run on CPU).
"""

from poe_jax.physics.base import Coords, Physics, accelerator_present, make_physics, resolve_backend

__all__ = ["Coords", "Physics", "accelerator_present", "make_physics", "resolve_backend"]
