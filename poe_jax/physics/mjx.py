"""``mujoco.mjx`` physics: MuJoCo in JAX, for GPUs and TPUs.

float32. On CPU it compiles for tens of seconds and runs far slower than the
``native`` backend; ``backend="auto"`` only picks it with an accelerator.

Model shifts (``scales``) replace ``body_mass``, ``body_inertia`` and
``geom_friction`` per lane (batched ``mjx.Model`` fields under ``vmap``); the
constants ``mj_setConst`` derives from masses (the constraint solver's
``*_invweight0``) keep their nominal values, on the native backend too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx

from poe_jax.physics.base import Coords, register_backend, scaled_fields
from poe_jax.physics.options import IMPLS, MjxOptions  # noqa: F401 - re-exported: the backend's options


@register_backend("mjx")
class MjxPhysics:
    """``mjx.step`` ``frame_skip`` times inside ``fori_loop``; vmaps over lanes. ``options``
    (:class:`MjxOptions`) set the solver MJX runs; the native backend keeps the model's."""

    name = "mjx"

    def __init__(self, model: mujoco.MjModel, frame_skip: int, impl: str | None = None,
                 track_body: int | None = None, contact_forces: bool = False, options: MjxOptions | None = None):
        options = (options or MjxOptions())._replace(**({} if impl is None else {"impl": impl})).check()
        self.options = options
        self.model = model
        self.frame_skip = int(frame_skip)
        self.track_body = track_body
        self.contact_forces = bool(contact_forces)
        self.mjx_model = mjx.put_model(options.apply(model), impl=options.impl)
        self._data0 = mjx.make_data(self.mjx_model)

    def step(self, q: Coords, ctrl: jax.Array, active, scales=None) -> Coords:
        data = self._data0.replace(
            qpos=q.qpos + q.qpos_lo, qvel=q.qvel + q.qvel_lo, ctrl=jnp.asarray(ctrl, jnp.float32)
        )
        model = self.mjx_model
        if scales is not None:  # per-lane model fields: batched under vmap
            m = model
            mass, inertia, friction = scaled_fields(m.body_mass, m.body_inertia, m.geom_friction,
                                                    jnp.asarray(scales, jnp.float32))
            model = m.replace(body_mass=mass, body_inertia=inertia, geom_friction=friction)
        nxt = jax.lax.fori_loop(0, self.frame_skip, lambda _, d: mjx.step(model, d), data)
        q_next = Coords(nxt.qpos, jnp.zeros_like(q.qpos), nxt.qvel, jnp.zeros_like(q.qvel))
        if self.track_body is not None:
            x = nxt.xpos[self.track_body, :1]
            q_next, q = q_next.replace(xbody=x, xbody_lo=jnp.zeros_like(x)), q.tracking()
        if self.contact_forces:  # Gymnasium: mj_rnePostConstraint on the data mj_step left
            cfrc = mjx.rne_postconstraint(model, nxt)._impl.cfrc_ext.reshape(-1)
            q_next, q = q_next.replace(cfrc=cfrc), q.with_forces(self.model.nbody)
        active = jnp.asarray(active, jnp.bool_)
        return jax.tree_util.tree_map(lambda new, old: jnp.where(active, new, old), q_next, q)

    def body_x(self, q: Coords, body: int) -> tuple[jax.Array, jax.Array]:
        """``([1], [1])``: body ``body``'s world x (hi, lo = 0) from forward kinematics at ``q``."""
        x = mjx.kinematics(self.mjx_model, self._data0.replace(qpos=q.qpos + q.qpos_lo)).xpos[body, :1]
        return x, jnp.zeros_like(x)
