"""The env registry: name -> factory, and the env's defaults for goal parameters.

An env registers where it is defined (``poe_jax.envs.locomotion``, ``poe_jax.envs.antmaze``)
with :func:`register_env`; user code may add more (e.g. from a ``--plugin`` module). An
env's ``goal_defaults`` (``{goal: {param: value}}``) are what a goal's parameters default to
on it, e.g. G3's target speed: goals read them from here, never from env-name strings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from poe_jax.domain import FINITE, Domain

__all__ = ["ENVS", "MAX_STEPS", "OPTIONS", "EnvEntry", "check_options", "goal_defaults", "has_success", "mjx_defaults",
           "names", "recipe",
           "register_env"]

MAX_STEPS = 1_000_000  # the longest episode a grid or an env option may ask for
# The env options a grid may set (``env_options``), each with its type and range. An env declares
# which of them apply to it (``register_env(..., options=...)``).
OPTIONS: dict[str, Domain] = {
    "terminate_when_unhealthy": Domain(bool),
    "max_steps": Domain(int, lo=1, hi=MAX_STEPS),
    "forward_reward_weight": FINITE,
    "main_body": Domain((str, int), lo=1),
}


class EnvEntry(NamedTuple):
    name: str
    factory: Callable  # factory(backend="auto", **options) -> Env
    goal_defaults: dict
    options: tuple[str, ...]  # the names in OPTIONS that apply to this env
    success: bool = False  # reaching the env's goal is its termination: an episode's success is recorded
    metrics: tuple[str, ...] = ("x_velocity",)  # what its State.metrics publishes (goals read them: GoalDef.needs)
    gym_id: str | None = None  # the Gymnasium id of the same model (Minari datasets name it)
    tracked_body: str | None = None  # the body whose velocity is the forward velocity
    contact_forces: bool = False  # the observation ends with the clipped contact forces (Gymnasium's Ant-v5)
    recipe: dict | None = None  # how the zoo's data were made on it (poe_jax.data.generate): SAC settings, tracking speeds
    mjx: dict | None = None  # its MJX solver defaults (poe_jax.physics.mjx.MjxOptions fields); a grid's mjx_options override


ENVS: dict[str, EnvEntry] = {}


def register_env(name: str, *, goal_defaults: dict | None = None, options: tuple[str, ...] | None = None,
                 success: bool = False, metrics: tuple[str, ...] = ("x_velocity",), gym_id: str | None = None,
                 tracked_body: str | None = None, contact_forces: bool = False, recipe: dict | None = None,
                 mjx: dict | None = None):
    """Decorator: register ``factory(backend="auto", **options) -> Env`` as env ``name``.

    ``goal_defaults``: ``{goal: {param: value}}``, the env's defaults for goal parameters.
    ``options``: the names in :data:`OPTIONS` a grid may set for it (default: all of them).
    ``success``: the env terminates when its goal is reached (AntMaze), so a grid records each episode's
    success (its termination). ``metrics``: the state metrics it publishes (``State.metrics``), which
    decide the goals that apply to it. ``gym_id``: the Gymnasium id of the same model. ``tracked_body``: the
    body whose velocity is the forward velocity. ``contact_forces``: its observation ends with the clipped
    contact forces. ``recipe``: the settings the data generator uses on it (``sac_warmup``, ``sac_critic_lr``,
    ``tracking_speeds``: ``{speed: slope}``; see :mod:`poe_jax.data.generate`). ``mjx``: the env's MJX solver
    defaults (:class:`poe_jax.physics.mjx.MjxOptions` fields), which a grid's ``mjx_options`` override."""
    options = tuple(OPTIONS) if options is None else tuple(options)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"env {name!r}: unknown option(s) {unknown}; options: {', '.join(OPTIONS)}")

    def deco(factory):
        if name in ENVS:
            raise ValueError(f"env {name!r} is already registered")
        ENVS[name] = EnvEntry(name, factory, {g: dict(p) for g, p in (goal_defaults or {}).items()}, options,
                              success, tuple(metrics) + (("success",) if success and "success" not in metrics else ()),
                              gym_id, tracked_body, contact_forces, dict(recipe or {}), dict(mjx or {}))
        return factory

    return deco


def names() -> tuple[str, ...]:
    return tuple(ENVS)


def goal_defaults(env: str) -> dict:
    """``{goal: {param: value}}`` env ``env`` sets for goal parameters (empty for an unknown env)."""
    entry = ENVS.get(env)
    return entry.goal_defaults if entry is not None else {}


def check_options(env: str, options: dict) -> dict:
    """``options`` checked against what applies to ``env`` and each option's :class:`Domain`; returns them
    (numbers as their declared type). Raises ``ValueError("env_options.NAME: ...")``."""
    allowed = ENVS[env].options
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"env_options: unknown option(s) {unknown}; known: {', '.join(sorted(OPTIONS))}")
    wrong = sorted(set(options) - set(allowed))
    if wrong:
        raise ValueError(f"env_options: {wrong} do not apply to env {env!r}; its options: {', '.join(allowed)}")
    return {k: OPTIONS[k].check(f"env_options.{k}", v) for k, v in options.items()}


def mjx_defaults(env: str) -> dict:
    """The MJX solver settings ``env`` declares (empty: the model's own)."""
    entry = ENVS.get(env)
    return dict(entry.mjx or {}) if entry is not None else {}


def recipe(env: str) -> dict:
    """The data generator's settings for ``env`` (empty for an env without any)."""
    entry = ENVS.get(env)
    return dict(entry.recipe or {}) if entry is not None else {}


def has_success(env: str) -> bool:
    """Whether ``env`` terminates at its goal, so its episodes have a success (False for an unknown env)."""
    entry = ENVS.get(env)
    return bool(entry is not None and entry.success)
