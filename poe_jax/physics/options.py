"""MJX's solver settings (:class:`MjxOptions`), apart from :mod:`poe_jax.physics.mjx` so that checking a spec
does not import MJX (whose import prints when MuJoCo Warp is absent)."""

from __future__ import annotations

import copy
import importlib.util
from typing import NamedTuple

import mujoco

__all__ = ["IMPLS", "MjxOptions"]

IMPLS = ("jax", "warp")


class MjxOptions(NamedTuple):
    """How MJX solves a model: what MJX's authors tune for speed (MuJoCo Playground's settings).

    Attributes:
        impl: ``"jax"`` (MJX in JAX) or ``"warp"`` (MuJoCo Warp; needs ``mujoco_warp``).
        iterations, ls_iterations: the constraint solver's iterations and line-search iterations
            (``mjOption``; None keeps the model's, 100 and 50 in Gymnasium's models).
        eulerdamp: implicit joint damping in the Euler integrator (None keeps the model's: on).
    """

    impl: str = "jax"
    iterations: int | None = None
    ls_iterations: int | None = None
    eulerdamp: bool | None = None

    def check(self) -> "MjxOptions":
        """Itself, or a one-line ValueError naming the field, the value and what is allowed."""
        if self.impl not in IMPLS:
            raise ValueError(f"mjx_options.impl: {self.impl!r}; allowed: {', '.join(IMPLS)}")
        if self.impl == "warp" and importlib.util.find_spec("mujoco_warp") is None:
            raise ValueError("mjx_options.impl: 'warp' needs the mujoco_warp package, which is not installed; "
                             "use 'jax' or pip install mujoco-warp")
        for name in ("iterations", "ls_iterations"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"mjx_options.{name}: {v!r}; allowed: an integer >= 1 (or leave it out)")
        if self.eulerdamp is not None and not isinstance(self.eulerdamp, bool):
            raise ValueError(f"mjx_options.eulerdamp: {self.eulerdamp!r}; allowed: true or false (or leave it out)")
        return self

    def apply(self, model: mujoco.MjModel) -> mujoco.MjModel:
        """A copy of ``model`` with these solver settings (the model itself when none is set)."""
        if self.iterations is None and self.ls_iterations is None and self.eulerdamp is None:
            return model
        m = copy.deepcopy(model)
        if self.iterations is not None:
            m.opt.iterations = self.iterations
        if self.ls_iterations is not None:
            m.opt.ls_iterations = self.ls_iterations
        if self.eulerdamp is not None:
            bit = int(mujoco.mjtDisableBit.mjDSBL_EULERDAMP)
            m.opt.disableflags = (m.opt.disableflags & ~bit) if self.eulerdamp else (m.opt.disableflags | bit)
        return m
