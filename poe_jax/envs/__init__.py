"""Environments: ``make(name, backend=...)``, ``names()``, goals.

Example:
    >>> from poe_jax import envs
    >>> envs.names()
    ('hopper', 'halfcheetah', 'walker2d', 'ant', 'hopper-v5', 'halfcheetah-v5', 'walker2d-v5', 'ant-v5', 'antmaze-umaze', 'antmaze-medium')
"""

from __future__ import annotations

from poe_jax.envs import registry
from poe_jax.envs.locomotion import D4RL_NAMES, SPECS  # registers first: names() lists locomotion, then AntMaze
from poe_jax.envs.antmaze import MAZES, AntMaze  # noqa: I001
from poe_jax.envs.base import Env, EnvSpec, State
from poe_jax.envs.goals import Goal, goal_names, make_goal
from poe_jax.envs.registry import register_env

__all__ = ["AntMaze", "Env", "EnvSpec", "Goal", "State", "goal_names", "locomotion_names", "make", "make_goal",
           "names", "register_env", "spec"]


def locomotion_names() -> tuple[str, ...]:
    """The D4RL locomotion envs (Gymnasium-v4 semantics); the ``-v5`` ones are in :func:`names`."""
    return D4RL_NAMES


def names() -> tuple[str, ...]:
    """The registered environment names: locomotion, then AntMaze (then any registered by user code)."""
    return registry.names()


def spec(name: str) -> EnvSpec:
    if name in MAZES:
        return AntMaze(name, backend="native").spec
    if name not in SPECS:
        if name in registry.ENVS:
            return make(name, backend="native").spec
        raise KeyError(f"unknown env {name!r}; known envs: {', '.join(names())}")
    return SPECS[name]


def make(name: str, backend: str = "auto", **options) -> Env:
    """Build environment ``name`` on ``backend`` (``auto``, ``native`` or ``mjx``).

    Options: ``max_steps`` (episode length), and backend options such as
    ``nthread`` (native), or ``options`` (a :class:`poe_jax.physics.mjx.MjxOptions`) and ``impl`` (mjx). On
    MJX, the env's registered solver settings apply unless ``options`` is given.
    """
    if name not in registry.ENVS:
        raise KeyError(f"unknown env {name!r}; known envs: {', '.join(names())}")
    from poe_jax.physics import resolve_backend

    if resolve_backend(backend) == "mjx" and "options" not in options:
        from poe_jax.physics.options import MjxOptions

        options = {**options, "options": MjxOptions(**registry.mjx_defaults(name))}
    return registry.ENVS[name].factory(backend=backend, **options)
