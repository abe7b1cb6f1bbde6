"""The env registry: name -> factory, and the env's defaults for goal parameters.

An env registers where it is defined (``poe_jax.envs.locomotion``, ``poe_jax.envs.antmaze``)
with :func:`register_env`; user code may add more (e.g. from a ``--plugin`` module). An
env's ``goal_defaults`` (``{goal: {param: value}}``) are what a goal's parameters default to
on it, e.g. G3's target speed: goals read them from here, never from env-name strings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

__all__ = ["ENVS", "EnvEntry", "goal_defaults", "names", "register_env"]


class EnvEntry(NamedTuple):
    name: str
    factory: Callable  # factory(backend="auto", **options) -> Env
    goal_defaults: dict


ENVS: dict[str, EnvEntry] = {}


def register_env(name: str, *, goal_defaults: dict | None = None):
    """Decorator: register ``factory(backend="auto", **options) -> Env`` as env ``name``.

    ``goal_defaults``: ``{goal: {param: value}}``, the env's defaults for goal parameters."""

    def deco(factory):
        if name in ENVS:
            raise ValueError(f"env {name!r} is already registered")
        ENVS[name] = EnvEntry(name, factory, {g: dict(p) for g, p in (goal_defaults or {}).items()})
        return factory

    return deco


def names() -> tuple[str, ...]:
    return tuple(ENVS)


def goal_defaults(env: str) -> dict:
    """``{goal: {param: value}}`` env ``env`` sets for goal parameters (empty for an unknown env)."""
    entry = ENVS.get(env)
    return entry.goal_defaults if entry is not None else {}
