"""Physics backends: one small interface, two ways to step MuJoCo.

Every backend exposes :class:`~poe_jax.physics.base.Physics`:
``step(q, ctrl, active) -> q'`` acting on one lane of float64-faithful
generalised coordinates (:class:`~poe_jax.physics.base.Coords`), usable under
``jax.jit`` and ``jax.vmap``.

* ``native`` -- MuJoCo C through ``mujoco.rollout`` on a persistent thread pool,
  called from the jitted program with ``jax.pure_callback`` (the CPU path).
* ``mjx`` -- ``mujoco.mjx`` in JAX (GPUs/TPUs; slow to compile and run on CPU).
"""

import importlib

from poe_jax.physics.base import (BACKEND_FACTORIES, BUILTIN_MODULES, Coords, Physics, accelerator_present,
                                  backend_names, register_backend, resolve_backend)

__all__ = ["Coords", "Physics", "accelerator_present", "backend_names", "make_physics", "register_backend",
           "resolve_backend"]


def make_physics(backend: str, model, frame_skip: int, **options) -> Physics:
    """The backend ``backend`` (``auto`` resolved) bound to ``model`` and ``frame_skip``."""
    backend = resolve_backend(backend)
    if backend not in BACKEND_FACTORIES:
        importlib.import_module(BUILTIN_MODULES[backend])  # registers it
    return BACKEND_FACTORIES[backend](model, frame_skip, **options)
