"""Environments: ``make(name, backend=...)``, ``names()``, goals.

Example:
    >>> from poe_jax import envs
    >>> envs.names()
    ('hopper', 'halfcheetah', 'walker2d', 'ant')
"""

from __future__ import annotations

from poe_jax.envs.base import Env, EnvSpec, State
from poe_jax.envs.goals import Goal, goal_names, make_goal
from poe_jax.envs.locomotion import SPECS

__all__ = ["Env", "EnvSpec", "Goal", "State", "goal_names", "make", "make_goal", "names", "spec"]


def names() -> tuple[str, ...]:
    """The registered environment names."""
    return tuple(SPECS)


def spec(name: str) -> EnvSpec:
    if name not in SPECS:
        raise KeyError(f"unknown env {name!r}; known envs: {', '.join(SPECS)}")
    return SPECS[name]


def make(name: str, backend: str = "auto", **options) -> Env:
    """Build environment ``name`` on ``backend`` (``auto``, ``native`` or ``mjx``).

    Options: ``max_steps`` (episode length), and backend options such as
    ``nthread`` (native) or ``impl`` (mjx).
    """
    return Env(spec(name), backend=backend, **options)
