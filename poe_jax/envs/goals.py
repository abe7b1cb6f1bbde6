"""Deployment goals: reward functions of ``(state, action, next_state)``.

**A goal never pays for falling.** Every goal's reward on a live step is ``>= 0`` and
bounded, and the rollout scores the absorbing state after termination 0, so ending an
episode early can only forfeit reward, never earn it. ``v`` below is the forward
velocity ``next_state.metrics["x_velocity"]`` (m/s, as Gymnasium computes it) and ``a``
the action.

==============  ===================================================================  ==============
goal            per-step reward on a live step                                       range
==============  ===================================================================  ==============
``G1_speed``    ``clip(v, 0, v_max)``: forward speed (backwards earns nothing)       ``[0, v_max]``
``G2_balanced`` ``clip(v, 0, v_max) * exp(-ctrl_weight |a|^2) *                      ``[0, v_max]``
                exp(-upright_weight tilt^2)``: speed, discounted by effort and by
                torso tilt (pitch ``qpos[2]`` for the planar walkers; the angle of
                the Ant's torso z axis from the vertical)
``G3_target``   ``exp(-(v - target_speed)^2 / (2 width^2))``: a bounded kernel that  ``[0, 1]``
                peaks at the target speed. Defaults (m/s; each env's own, from its
                registration in ``envs.locomotion``): hopper 1.2, walker2d 1.5,
                halfcheetah 3.0, ant 2.5 -- speeds the shipped medium actors do not
                run at (2.3, 2.5, 5.7, 3.5) but a behaviour in the priors' data does
                (``checkpoints/README.md``, "Goal priors")
``G4_reach``    AntMaze only: 1 within 0.5 of the maze's goal, else 0 (D4RL's        ``{0, 1}``
                reward; the episode ends there, so the return is the success)
==============  ===================================================================  ==============

Defaults: ``v_max = 20`` m/s (above every zoo policy's speed), ``ctrl_weight = 0.1``,
``upright_weight = 1``, ``width = 0.5`` m/s (halfcheetah: 1.0, its speeds spread wider).

A goal is registered where it is defined, with :func:`register_goal` (usable from user
code, e.g. a ``--plugin`` module); an unknown goal or parameter is an error listing the
known ones. Goals are jittable and vmappable; a goal parameter may be a traced value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from poe_jax.domain import FINITE, NONNEGATIVE, POSITIVE, Domain
from poe_jax.envs import registry
from poe_jax.envs.base import State

__all__ = ["DEFAULT_GOAL", "GOALS", "Goal", "GoalDef", "bound_params", "g1_speed", "g2_balanced", "g3_target", "goal_names",
           "goal_params", "make_goal", "prior_head", "register_goal"]


@dataclass(frozen=True)
class GoalDef:
    """A registered goal: ``fn(env, state, action, next_state, **params)``, its default
    parameters, its documented reward range ``(lo, hi)`` (``hi`` may name a parameter, e.g.
    ``"v_max"``), and the prior head a prior without it uses (``prior_goal``)."""

    name: str
    fn: Callable
    defaults: dict
    bounds: tuple
    prior_goal: str | None = None
    envs: tuple[str, ...] | None = None  # the envs it applies to; None: every env that publishes what it needs
    domains: dict | None = None  # {param: Domain}; a parameter without one is any finite number
    tracks: tuple[str, str] | None = None  # (signal, param): the goal tracks a continuous target
    needs: tuple[str, ...] = ()  # the state metrics it reads, which an env must publish (EnvEntry.metrics)


GOALS: dict[str, GoalDef] = {}


def register_goal(name: str, *, bounds: tuple, prior_goal: str | None = None, envs: tuple[str, ...] | None = None,
                  domains: dict[str, Domain] | None = None, tracks: tuple[str, str] | None = None,
                  needs: tuple[str, ...] = (), **defaults):
    """Decorator: register ``fn(env, state, action, next_state, **params)`` as goal ``name``.

    ``bounds``: the per-step reward range on a live step, ``(lo, hi)`` with ``lo >= 0``; a
    bound may be a parameter name. An env may set its own defaults for the parameters
    (``register_env(..., goal_defaults=...)``, e.g. G3's target speed per env).
    ``prior_goal``: for a goal no prior was trained on, the goal whose prior head steers
    toward it (e.g. a variant of ``G1_speed``); a grid with a prior that knows neither is refused.
    ``envs``: the envs the goal applies to (e.g. those that publish the metrics it reads); None: every env.
    ``domains``: ``{param: poe_jax.domain.Domain}``, each parameter's type and range (checked for every
    bound value, overrides and env defaults alike); a parameter without one may be any finite number.
    A bound that names a parameter (``hi = "v_max"``) needs that parameter's domain to keep it > 0.
    ``tracks``: ``(signal, param)`` for a goal that tracks a continuous target: the episode signal it
    steers (a column of :mod:`poe_jax.grid.metrics`, e.g. ``"x_velocity"``) and the parameter holding the
    target; the grid records the target in a column of the parameter's name, the report the tracking
    error, and a goal prior is trained on a range of targets. ``needs``: the state metrics the goal reads
    (``next_state.metrics``); it applies only to envs that publish them (``register_env(metrics=...)``).
    """
    lo = bounds[0]
    if not isinstance(lo, str) and lo < 0:
        raise ValueError(f"goal {name!r}: bounds[0] must be >= 0 (a goal never pays for falling); got {lo}")

    def deco(fn):
        if name in GOALS:
            raise ValueError(f"goal {name!r} is already registered")
        unknown = sorted(set(domains or {}) - set(defaults))
        if unknown:
            raise ValueError(f"goal {name!r}: domains for parameters {unknown} it does not have")
        if tracks is not None and (len(tracks) != 2 or tracks[1] not in defaults):
            raise ValueError(f"goal {name!r}: tracks must be (signal, one of its parameters); got {tracks!r}")
        GOALS[name] = GoalDef(name, fn, dict(defaults), tuple(bounds), prior_goal, None if envs is None else tuple(envs),
                              dict(domains or {}), None if tracks is None else tuple(tracks), tuple(needs))
        return fn

    return deco


@register_goal("G1_speed", bounds=(0.0, "v_max"), domains={"v_max": POSITIVE}, needs=("x_velocity",), v_max=20.0)
def g1_speed(env: str, state: State, action, next_state: State, v_max=20.0) -> jax.Array:
    """``r = clip(v, 0, v_max)``."""
    return jnp.clip(next_state.metrics["x_velocity"], 0.0, v_max)


@register_goal("G2_balanced", bounds=(0.0, "v_max"),
               domains={"v_max": POSITIVE, "ctrl_weight": NONNEGATIVE, "upright_weight": NONNEGATIVE},
               needs=("x_velocity", "tilt"), v_max=20.0, ctrl_weight=0.1, upright_weight=1.0)
def g2_balanced(env: str, state: State, action, next_state: State, v_max=20.0, ctrl_weight=0.1,
                upright_weight=1.0) -> jax.Array:
    """``r = clip(v, 0, v_max) * exp(-ctrl_weight |a|^2 - upright_weight tilt^2)``."""
    v = jnp.clip(next_state.metrics["x_velocity"], 0.0, v_max)
    a = jnp.asarray(action)
    tilt = next_state.metrics["tilt"]  # published by the env (EnvSpec.tilt_fn)
    return v * jnp.exp(-ctrl_weight * jnp.sum(a * a) - upright_weight * tilt * tilt)


@register_goal("G3_target", bounds=(0.0, 1.0), domains={"target_speed": FINITE, "width": POSITIVE},
               tracks=("x_velocity", "target_speed"), needs=("x_velocity",), target_speed=1.0, width=0.5)  # per-env targets: envs.locomotion
def g3_target(env: str, state: State, action, next_state: State, target_speed=1.0, width=0.5) -> jax.Array:
    """``r = exp(-(v - target_speed)^2 / (2 width^2))``."""
    d = (next_state.metrics["x_velocity"] - target_speed) / width
    return jnp.exp(-0.5 * d * d)


@register_goal("G4_reach", bounds=(0.0, 1.0), needs=("success",))
def g4_reach(env: str, state: State, action, next_state: State) -> jax.Array:
    """``r = 1`` within 0.5 of the maze's goal, else 0 (D4RL's AntMaze reward; the episode ends there)."""
    return next_state.metrics["success"]


@dataclass(frozen=True)
class Goal:
    """A goal bound to an env and parameters; call as ``goal(state, action, next_state)``."""

    name: str
    env: str
    params: dict
    fn: Callable

    def __call__(self, state: State, action, next_state: State, **override) -> jax.Array:
        return self.fn(self.env, state, action, next_state, **{**self.params, **override})

    @property
    def bounds(self) -> tuple[float, float]:
        """The per-step reward range on a live step, with parameters filled in."""
        return tuple(float(self.params[b]) if isinstance(b, str) else float(b) for b in GOALS[self.name].bounds)


def prior_head(goal: str, prior_goals) -> str | None:
    """The goal whose head of a prior trained on ``prior_goals`` a grid uses for ``goal``: the goal
    itself, else its ``prior_goal`` (None when the prior knows neither)."""
    prior_goals = list(prior_goals)
    if goal in prior_goals:
        return goal
    fallback = GOALS[goal].prior_goal if goal in GOALS else None
    return fallback if fallback in prior_goals else None


def _applies(d: GoalDef, env: str) -> bool:
    """Goal ``d`` applies to ``env``: listed in its ``envs``, or (without a list) the env publishes what it needs."""
    if d.envs is not None:
        return env in d.envs
    entry = registry.ENVS.get(env)
    return entry is None or set(d.needs) <= set(entry.metrics)


def goal_names(env: str | None = None) -> tuple[str, ...]:
    """The registered goals; with ``env``, those that apply to it."""
    return tuple(g for g, d in GOALS.items() if env is None or _applies(d, env))


DEFAULT_GOAL = "G1_speed"  # a grid's goal when it names none


def make_goal(name: str, env: str, **params) -> Goal:
    """Bind goal ``name`` to ``env`` with parameter overrides."""
    if name not in GOALS:
        raise KeyError(f"unknown goal {name!r}; known goals: {', '.join(GOALS)}")
    d = GOALS[name]
    if not _applies(d, env):
        where = (f"it applies to {', '.join(d.envs)}" if d.envs is not None else
                 f"it applies to the envs that publish {', '.join(d.needs)}: "
                 f"{', '.join(e for e in registry.ENVS if _applies(d, e))}")
        raise ValueError(f"goal {name!r} does not apply to env {env!r}; {where}")
    unknown = set(params) - set(d.defaults)
    if unknown:
        raise ValueError(
            f"goal {name!r} has no parameter(s) {sorted(unknown)}; its parameters: {sorted(d.defaults) or 'none'}"
        )
    bound = {**d.defaults, **registry.goal_defaults(env).get(name, {}), **params}
    bound = {k: (d.domains or {}).get(k, FINITE).check(f"goal_params.{name}.{k}", v) for k, v in bound.items()}
    return Goal(name, env, bound, d.fn)


def goal_params(name: str, env: str) -> dict:
    """The default parameters of goal ``name`` on ``env``."""
    return dict(make_goal(name, env).params)


def bound_params(goals, env: str, overrides: dict | None = None) -> dict[str, dict]:
    """``{goal: its parameters on env}`` with ``overrides`` (``{goal: {param: value}}``, a grid's
    ``goal_params``) applied."""
    overrides = overrides or {}
    return {g: make_goal(g, env, **overrides.get(g, {})).params for g in goals}
