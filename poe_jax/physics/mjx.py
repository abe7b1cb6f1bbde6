"""``mujoco.mjx`` physics: MuJoCo in JAX, for GPUs and TPUs.

float32. On CPU it compiles for tens of seconds and runs far slower than the
``native`` backend; ``backend="auto"`` only picks it with an accelerator.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx

from poe_jax.physics.base import Coords


class MjxPhysics:
    """``mjx.step`` ``frame_skip`` times inside ``fori_loop``; vmaps over lanes."""

    name = "mjx"

    def __init__(self, model: mujoco.MjModel, frame_skip: int, impl: str | None = None):
        self.model = model
        self.frame_skip = int(frame_skip)
        kwargs = {} if impl is None else {"impl": impl}
        self.mjx_model = mjx.put_model(model, **kwargs)
        self._data0 = mjx.make_data(self.mjx_model)

    def step(self, q: Coords, ctrl: jax.Array, active) -> Coords:
        data = self._data0.replace(
            qpos=q.qpos + q.qpos_lo, qvel=q.qvel + q.qvel_lo, ctrl=jnp.asarray(ctrl, jnp.float32)
        )
        nxt = jax.lax.fori_loop(0, self.frame_skip, lambda _, d: mjx.step(self.mjx_model, d), data)
        q_next = Coords(nxt.qpos, jnp.zeros_like(q.qpos), nxt.qvel, jnp.zeros_like(q.qvel))
        active = jnp.asarray(active, jnp.bool_)
        return jax.tree_util.tree_map(lambda new, old: jnp.where(active, new, old), q_next, q)
