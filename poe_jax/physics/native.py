"""MuJoCo C stepping of all lanes from inside a jitted program.

``jax.pure_callback`` with ``vmap_method="broadcast_all"`` turns a vmapped
per-lane step into one host call on the whole batch; the host steps the active
lanes on a persistent thread pool (one thread per core by default, GIL
released), in float64, with one of two steppers that give bit-identical results:

* ``"batch"`` (default when MuJoCo >= 4 provides ``mujoco.batch``): the lanes are
  the state rows of a ``mujoco.batch.Batch``; a control step writes qpos, qvel and
  ctrl into the rows and runs ``frame_skip`` substeps of the active rows. It
  records no per-substep trajectory, so it steps ~10% faster than ``rollout``
  (benchmarks/rollout_throughput.py).
* ``"rollout"``: ``mujoco.rollout`` from the lanes' states, keeping the last substep.

Either way a step starts from (qpos, qvel) alone, with zero warm start, so a
lane's next state is a pure function of its JAX state.

Model shifts (per-lane ``scales`` = body-mass and friction scale): ``batch``
expands ``body_mass``, ``body_inertia`` and ``geom_friction`` into per-row values;
``rollout`` steps each lane on a scaled copy of the model (cached per scale
pair). Rows at scale (1, 1) use the nominal model's values, bit for bit. As on
MJX, which cannot rerun ``mj_setConst`` per lane, the constants MuJoCo derives at
compile time (the constraint solver's ``*_invweight0``, subtree masses) keep
their nominal values, so both backends shift the same model (tested).
"""

from __future__ import annotations

import copy
import os
import threading

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

try:  # MuJoCo >= 4
    from mujoco import batch as mj_batch
except ImportError:  # pragma: no cover - depends on the installed MuJoCo
    mj_batch = None

from poe_jax.physics.base import Coords, register_backend, scaled_fields, split64

def default_threads() -> int:
    return int(os.environ.get("POE_JAX_THREADS", os.cpu_count() or 1))


@register_backend("native")
class NativePhysics:
    """``mujoco.rollout``-backed physics (see module docstring).

    Args:
        model: the MuJoCo model (float64, host).
        frame_skip: MuJoCo steps per control step.
        nthread: worker threads (default: ``POE_JAX_THREADS`` or all cores).
        stepper: ``"batch"`` or ``"rollout"`` (default: ``"batch"`` when available).
        track_body: a body id whose x from ``xpos`` after each step is returned (``Coords.xbody``);
            only the ``batch`` stepper can read ``xpos`` (``mujoco.rollout`` records states only).
        contact_forces: also return ``cfrc_ext`` after ``mj_rnePostConstraint`` (``Coords.cfrc``), as
            Gymnasium computes it after every step: the batch keeps each row's ``MjData``
            (``persistent=True``), and each stepped row's data gets ``mj_rnePostConstraint`` (~8 us a
            row). ``batch`` stepper only.
    """

    name = "native"

    def __init__(self, model: mujoco.MjModel, frame_skip: int, nthread: int | None = None,
                 stepper: str | None = None, track_body: int | None = None, contact_forces: bool = False):
        self.model = model
        self.track_body = None if track_body is None else int(track_body)
        self.contact_forces = bool(contact_forces)
        self.frame_skip = int(frame_skip)
        self.nthread = default_threads() if nthread is None else int(nthread)
        if stepper is None:
            stepper = "rollout" if mj_batch is None else "batch"
        if stepper not in ("batch", "rollout"):
            raise ValueError(f"unknown native stepper {stepper!r}; expected 'batch' or 'rollout'")
        if stepper == "batch" and mj_batch is None:
            raise ValueError("stepper='batch' needs MuJoCo >= 4 (mujoco.batch); use stepper='rollout'")
        if stepper == "rollout" and track_body is not None:
            raise ValueError("stepper='rollout' cannot read xpos (mujoco.rollout records states only), which "
                             "this env's reward needs (track_body); use stepper='batch' (MuJoCo >= 4)")
        if stepper == "rollout" and self.contact_forces:
            raise ValueError("stepper='rollout' cannot compute cfrc_ext (mujoco.rollout records states only), which "
                             "this env needs (contact_forces); use stepper='batch' (MuJoCo >= 4)")
        self.stepper = stepper
        self._batch = None  # mujoco.batch.Batch, grown to the largest call
        self._row_scales = None  # [nsim, 2] scales each batch row's model holds (after expansion)
        self._scaled_models: dict[tuple[float, float], mujoco.MjModel] = {}
        self._datas = [mujoco.MjData(model) for _ in range(max(1, self.nthread))]
        self._spec = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
        self.nstate = mujoco.mj_stateSize(model, self._spec)
        # Offsets of qpos / qvel inside the full-physics state vector (time first).
        self._qpos_at = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME.value)
        self._qvel_at = self._qpos_at + model.nq
        self._lock = threading.Lock()  # MjData scratch is per physics object
        self._pool = None  # this object's mujoco.rollout thread pool, started on first use, ended with it

    def close(self) -> None:
        """Stop this backend's thread pool now (it also stops when the object is collected)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _rollout_pool(self) -> mj_rollout.Rollout:
        if self._pool is None:
            self._pool = mj_rollout.Rollout(nthread=self.nthread)
        return self._pool

    # ---------------------------------------------------------------- host side
    def step_host(self, qpos, qvel, ctrl, active=None, scales=None):
        """Step float64 ``qpos [B, nq]``, ``qvel [B, nv]`` with ``ctrl [B, nu]``.

        ``scales``: optional ``[B, 2]`` (body-mass, friction) scales of each lane's model.
        Returns float64 ``(qpos', qvel')``, then ``xbody' [B]`` when tracking a body (the tracked
        body's x from ``xpos``; NaN on inactive lanes) and ``cfrc' [B, nbody * 6]`` when computing
        contact forces (NaN on inactive lanes); inactive lanes are copied unchanged.
        """
        m = self.model
        b = qpos.shape[0]
        qpos_out, qvel_out = qpos.copy(), qvel.copy()
        idx = np.arange(b) if active is None else np.flatnonzero(active)
        nominal = scales is None or bool(np.all(scales == 1.0))
        if self.stepper == "batch" or idx.size == 0:
            xbody = np.full(b, np.nan)
            cfrc = np.full((b, 6 * m.nbody), np.nan) if self.contact_forces else None
            if idx.size:
                with self._lock:
                    self._step_batch(qpos_out, qvel_out, ctrl, idx, None if nominal else scales, xbody, cfrc)
            return (qpos_out, qvel_out, *([xbody] if self.track_body is not None else []),
                    *([cfrc] if self.contact_forces else []))
        n = idx.size
        models = [m] * n if nominal else [self._scaled_model(*map(float, scales[i])) for i in idx]
        init = np.zeros((n, self.nstate))
        init[:, self._qpos_at : self._qpos_at + m.nq] = qpos[idx]
        init[:, self._qvel_at : self._qvel_at + m.nv] = qvel[idx]
        control = np.empty((n, self.frame_skip, m.nu))
        control[:] = np.asarray(ctrl, np.float64)[idx, None, :]
        states = np.empty((n, self.frame_skip, self.nstate))
        sensors = np.empty((n, self.frame_skip, m.nsensordata))
        with self._lock:
            # skip_checks: shapes are built right here; saves validation, tiling and
            # output allocation on every control step.
            # One chunk per thread: a control step is only a few substeps, so the
            # default chunking (10 chunks per thread) costs more in dispatch than it
            # gains in balance (measured in benchmarks/rollout_throughput.py).
            self._rollout_pool().rollout(
                models, self._datas, init, control, nstep=self.frame_skip,
                state=states, sensordata=sensors, skip_checks=True,
                chunk_size=-(-n // self.nthread),
            )
        last = states[:, -1]
        qpos_out[idx] = last[:, self._qpos_at : self._qpos_at + m.nq]
        qvel_out[idx] = last[:, self._qvel_at : self._qvel_at + m.nv]
        return qpos_out, qvel_out

    def _scaled_model(self, mass: float, friction: float) -> mujoco.MjModel:
        key = (mass, friction)
        if key not in self._scaled_models:
            m = copy.copy(self.model)
            m.body_mass[:], m.body_inertia[:], m.geom_friction[:] = scaled_fields(
                self.model.body_mass, self.model.body_inertia, self.model.geom_friction, key)
            self._scaled_models[key] = m
        return self._scaled_models[key]

    def _set_row_scales(self, scales, b: int) -> None:
        """Give batch rows ``0..b-1`` the models of ``scales`` (``None``: nominal)."""
        batch, m = self._batch, self.model
        want = np.ones((b, 2)) if scales is None else np.asarray(scales, np.float64)
        if self._row_scales is None:
            if scales is None:
                return  # never shifted: the batch still shares the nominal model
            self._row_scales = np.ones((batch.nsim, 2))
            self._fields = (batch.expand("body_mass"), batch.expand("body_inertia"), batch.expand("geom_friction"))
        changed = np.flatnonzero(np.any(self._row_scales[:b] != want, axis=1))
        if changed.size == 0:
            return
        mass, inertia, friction = self._fields
        w = want[changed]
        mass[changed] = m.body_mass[None] * w[:, 0, None]
        inertia[changed] = m.body_inertia[None] * w[:, 0, None, None]
        friction[changed] = m.geom_friction[None] * w[:, 1, None, None]
        self._row_scales[changed] = w

    def _step_batch(self, qpos, qvel, ctrl, idx, scales, xbody, cfrc):
        """Step rows ``idx`` of ``qpos``/``qvel`` (and the tracked body's ``xbody``, the contact
        forces ``cfrc``) in place with a ``mujoco.batch.Batch``."""
        b = qpos.shape[0]
        if self._batch is None or self._batch.nsim < b:
            batch = mj_batch.Batch(self.model, nsim=b, nthread=self.nthread, persistent=self.contact_forces)
            self._batch, self._row_scales = batch, None
            self._rows = (batch.state, batch.bind("qpos"), batch.bind("qvel"), batch.bind("ctrl"), batch.bind("xpos"))
        self._set_row_scales(scales, b)
        state, bq, bv, bc, bx = self._rows
        state[:b] = 0.0  # time, warm start, act, ...: a step starts from (qpos, qvel) alone
        bq[:b], bv[:b], bc[:b] = qpos, qvel, ctrl
        self._batch.step(ids=None if idx.size == self._batch.nsim else idx, nstep=self.frame_skip)
        qpos[idx], qvel[idx] = bq[idx], bv[idx]
        if self.track_body is not None:
            xbody[idx] = bx[idx, self.track_body, 0]
        if self.contact_forces:  # Gymnasium: mj_rnePostConstraint on the data mj_step left
            data = self._datas[0]
            for i in idx:
                self._batch.get_data(int(i), data)
                shifted = scales is not None and np.any(scales[i] != 1.0)
                mujoco.mj_rnePostConstraint(self._scaled_model(*map(float, scales[i])) if shifted else self.model, data)
                cfrc[i] = data.cfrc_ext.ravel()

    def _callback(self, packed):
        # One packed float32 array in and one out: pure_callback device_puts every
        # argument and converts every result, so each extra array costs ~50 us.
        packed = np.asarray(packed)
        lead = packed.shape[:-1]
        nq, nv, nu = self.model.nq, self.model.nv, self.model.nu
        x = packed.reshape(-1, packed.shape[-1])
        p = x[:, :nq].astype(np.float64) + x[:, nq : 2 * nq]
        v = x[:, 2 * nq : 2 * nq + nv].astype(np.float64) + x[:, 2 * nq + nv : 2 * nq + 2 * nv]
        ctrl = x[:, 2 * (nq + nv) : 2 * (nq + nv) + nu]
        scales = x[:, 2 * (nq + nv) + nu : 2 * (nq + nv) + nu + 2]
        active = x[:, -1] > 0.5
        qpos, qvel, *extra = self.step_host(p, v, ctrl, active, scales)  # then xbody, cfrc where computed
        parts = [*split64(qpos), *split64(qvel)]
        if self.track_body is not None:
            parts += split64(extra.pop(0)[:, None])
        if self.contact_forces:
            parts.append(extra.pop(0).astype(np.float32))
        out = np.concatenate(parts, axis=-1)
        return out.reshape(*lead, out.shape[-1])

    # ---------------------------------------------------------------- JAX side
    def step(self, q: Coords, ctrl: jax.Array, active, scales=None) -> Coords:
        nq, nv = self.model.nq, self.model.nv
        f32 = jnp.float32
        active = jnp.asarray(active, f32)[None]
        scales = jnp.ones(2, f32) if scales is None else jnp.asarray(scales, f32)
        packed = jnp.concatenate([q.qpos, q.qpos_lo, q.qvel, q.qvel_lo, jnp.asarray(ctrl, f32), scales, active])
        tracked = 2 if self.track_body is not None else 0
        forces = 6 * self.model.nbody if self.contact_forces else 0
        out = jax.pure_callback(
            self._callback,
            jax.ShapeDtypeStruct((2 * (nq + nv) + tracked + forces,), f32),
            packed,
            vmap_method="broadcast_all",
        )
        n = 2 * (nq + nv)
        q_next = Coords(out[:nq], out[nq : 2 * nq], out[2 * nq : 2 * nq + nv], out[2 * nq + nv : n])
        if tracked:  # inactive lanes keep their x (the host returns NaN there)
            old, keep = q.tracking(), active[0] > 0.5
            q_next = q_next.replace(xbody=jnp.where(keep, out[n : n + 1], old.xbody),
                                    xbody_lo=jnp.where(keep, out[n + 1 : n + 2], old.xbody_lo))
        if forces:  # inactive lanes keep their forces (the host returns NaN there)
            old = q.with_forces(self.model.nbody).cfrc
            m = n + tracked
            q_next = q_next.replace(cfrc=jnp.where(active[0] > 0.5, out[m : m + forces], old))
        return q_next

    def body_x(self, q: Coords, body: int) -> tuple[jax.Array, jax.Array]:
        """``([1], [1])``: body ``body``'s world x (hi, lo) from forward kinematics at ``q`` (``mj_kinematics``)."""
        nq = self.model.nq
        packed = jnp.concatenate([q.qpos, q.qpos_lo])

        def host(x):
            x = np.asarray(x)
            rows = x.reshape(-1, x.shape[-1])
            xb = np.empty(rows.shape[0])
            with self._lock:
                data = self._datas[0]
                for i, r in enumerate(rows):
                    data.qpos[:] = r[:nq].astype(np.float64) + r[nq:]
                    mujoco.mj_kinematics(self.model, data)
                    xb[i] = data.xpos[body, 0]
            return np.stack(split64(xb), axis=-1).reshape(*x.shape[:-1], 2)

        out = jax.pure_callback(host, jax.ShapeDtypeStruct((2,), jnp.float32), packed, vmap_method="broadcast_all")
        return out[:1], out[1:]
