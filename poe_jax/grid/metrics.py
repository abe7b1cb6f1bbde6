"""Declared signals: every per-episode quantity of a grid, each one registration.

A signal is ``fn(x: StepInputs) -> scalar``, evaluated at every step of every lane, with its
**reduction** over the episode's live steps and its column's dtype. :func:`register_metric`
declares one; the rollout carries one accumulator per (column, reduction) built from the
declarations (:func:`accumulators`), and the store's columns follow from the same declarations
(:func:`finalize`). Adding a per-episode quantity is one registration, e.g. from a ``--plugin``
module::

    @metrics.register_metric("mean_abs_action")
    def mean_abs_action(x):
        return jnp.mean(jnp.abs(x.action))

Reductions (``t`` over the live steps, ``L`` the episode's length):

===================  ==============================================  =====================
reduction            column                                          e.g.
===================  ==============================================  =====================
``mean``             ``sum_t m_t / L``                                ``kl_to_frozen``
``sum``              ``sum_t m_t``                                    ``return_task``
``discounted``       ``sum_t GAMMA^t m_t``                            ``discounted_goal``
``discounted_mean``  ``(1 - GAMMA) sum_t GAMMA^t m_t``: the mean      ``delta_pi_upper``
                     under the discounted state visitation (after
                     termination both policies sit in the absorbing
                     state, where the signal is 0)
``max``              ``max_t m_t``                                    ``max_abs_goal_reward``
``last``             ``m_T``, the last live step's                    --
``any``              ``m_t != 0`` at some live step                   --
===================  ==============================================  =====================

A registration may give the same per-step value a second column (``discounted="COLUMN"``: its
``discounted_mean``).

Built-in signals:

=========================  =========================================================
column                     per-step value (reduction)
=========================  =========================================================
``return_task``            the env's reward (sum)
``return_goal``            the goal's reward (sum); ``discounted_goal``: discounted
``max_abs_goal_reward``    ``|goal reward|`` (max)
``x_velocity``             the forward velocity (mean: the episode's mean speed)
``alpha_used``             the per-state alpha of a rule that has one (mean; the store
                           records the fixed PoE-equivalent alpha for the others)
``nonfinite_actions``      the executed action had a NaN or inf (sum: a count)
``kl_to_frozen``           ``KL(composed || actor)`` (mean)
``tv_upper``               upper bound on ``TV(composed, actor)``: the least of
                           Pinsker, Bretagnolle-Huber and Hellinger (mean); discounted:
                           ``delta_pi_upper``, the δπ of the performance-difference
                           bound ``|ΔJ_γ| <= 2 R_max δπ / (1 - γ)^2``
``tv_lower``               squared Hellinger, a lower bound (mean); discounted: ``delta_pi_lower``
``support_violation_E``    the actor's log-density at the executed action below
                           ``log E``, for ``E`` in :data:`SUPPORT_EPS` (mean)
``support_violation``      the same at ``E = 0.01`` (the report's headline)
``fallback_rate``          some dimension of the prior was invalid (the actor was used)
=========================  =========================================================

The report tabulates every registered ``mean`` signal that is not one of the built-in
episode columns (:data:`EPISODE_SIGNALS`), so a user's metric reaches the report with no other edit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax.kernels import rules as kernels
from poe_jax.kernels import gaussian
from poe_jax.kernels.gaussian import DiagGaussian

__all__ = ["EPISODE_SIGNALS", "GAMMA", "METRICS", "REDUCTIONS", "SUPPORT_EPS", "Metric", "StepInputs", "accumulators",
           "columns", "evaluate", "finalize", "get", "register_metric", "unregister_metric"]

GAMMA = 0.99  # discount of discounted_goal and of the discounted metrics (delta_pi)
SUPPORT_EPS = (0.001, 0.01, 0.05)  # density thresholds of the support-violation metrics
REDUCTIONS = ("mean", "sum", "discounted", "discounted_mean", "max", "last", "any")
_DTYPES = ("float64", "int64", "bool")


class StepInputs(NamedTuple):
    """What a signal may use, for one lane and step.

    Attributes:
        obs: the observation the policies saw (after the shift's observation noise).
        actor: the frozen actor's distribution ``[act_dim]``.
        prior: the goal prior's, after the lane's prior quality.
        composed: the rule's composed policy.
        action: the executed action (after the shift's action noise).
        actor_logp: ``actor.log_prob(action)``.
        reward: the env's reward for the step. goal_reward: the lane's goal's reward.
        next_state: the env's state after the step (its ``metrics``: ``x_velocity``, ...).
        alpha: the per-state alpha of a rule that has one (``Rule.alpha_fn``), else 0.
    """

    obs: jax.Array
    actor: DiagGaussian
    prior: DiagGaussian
    composed: DiagGaussian
    action: jax.Array
    actor_logp: jax.Array
    reward: jax.Array | None = None
    goal_reward: jax.Array | None = None
    next_state: object = None
    alpha: jax.Array | None = None


class Metric(NamedTuple):
    """A registered signal: ``fn(StepInputs) -> scalar``, its column, reduction and dtype, and optionally a
    second column holding the same value's ``discounted_mean``."""

    name: str
    fn: Callable[[StepInputs], jax.Array]
    discounted: str | None
    doc: str
    reduce: str = "mean"
    dtype: str = "float64"
    transition: bool = False

    def columns(self) -> tuple[tuple[str, str], ...]:
        """``((column, reduction), ...)`` this signal fills."""
        return ((self.name, self.reduce),) + (((self.discounted, "discounted_mean"),) if self.discounted else ())


METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, discounted: str | None = None, reduce: str = "mean", dtype: str = "float64",
                    transition: bool = False):
    """Decorator: register ``fn(x: StepInputs) -> scalar`` as signal ``name`` (its column).

    ``reduce``: how the episode's live steps reduce to the column (:data:`REDUCTIONS`). ``dtype``: the
    column's (``float64``, ``int64``, ``bool``). ``discounted``: also store the value's
    ``(1 - GAMMA) sum_t GAMMA^t m_t`` under this column name. ``transition``: the signal reads the step's
    outcome (``reward``, ``goal_reward``, ``next_state``) and is evaluated after the env's step, where the
    policy's fields of :class:`StepInputs` are None; otherwise it is evaluated with the policy, before the
    step, where the outcome's fields are None.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"metric {name!r}: reduce={reduce!r} is not one of {', '.join(REDUCTIONS)}")
    if dtype not in _DTYPES:
        raise ValueError(f"metric {name!r}: dtype={dtype!r} is not one of {', '.join(_DTYPES)}")

    def deco(fn):
        taken = {c for m in METRICS.values() for c, _ in m.columns()}
        for col in (name, discounted):
            if col in taken:
                raise ValueError(f"metric column {col!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        METRICS[name] = Metric(name, fn, discounted, doc[0] if doc else "", reduce, dtype, transition)
        return fn

    return deco


def unregister_metric(name: str) -> None:
    """Remove signal ``name`` (a user's, e.g. in a test); unknown names are ignored."""
    METRICS.pop(name, None)


def get(name: str) -> Metric:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def columns() -> dict[str, str]:
    """``{column: reduction}`` of every registered signal, in registration order."""
    return {c: r for m in METRICS.values() for c, r in m.columns()}


def evaluate(x: StepInputs, transition: bool = False) -> dict[str, jax.Array]:
    """``{column: float32 scalar}``: the per-step value of every registered signal of the policy (or, with
    ``transition``, of the step's outcome), once per column."""
    out = {}
    for name, m in METRICS.items():
        if m.transition != transition:
            continue
        v = jnp.asarray(m.fn(x), jnp.float32)
        for col, _ in m.columns():
            out[col] = v
    return out


def accumulators() -> dict[str, str]:
    """``{column: reduction}`` the rollout accumulates (:func:`poe_jax.grid.rollout.rollout`'s ``signals``)."""
    return columns()


def finalize(values: dict, length) -> dict[str, np.ndarray]:
    """The store's columns from the rollout's accumulators (``values``) and the episodes' lengths."""
    length = np.asarray(length)
    safe = np.maximum(length, 1)
    out = {}
    for m in METRICS.values():
        for col, reduce in m.columns():
            acc = np.asarray(values[col], np.float64)
            v = (acc / safe if reduce == "mean" else (1 - GAMMA) * acc if reduce == "discounted_mean"
                 else acc != 0 if reduce == "any" else acc)
            out[col] = v.astype(m.dtype)
    return out


# Episode accounting: the built-in signals every grid records (columns of the store).
@register_metric("return_task", reduce="sum", transition=True)
def return_task(x: StepInputs) -> jax.Array:
    """The env's reward."""
    return x.reward


@register_metric("return_goal", reduce="sum", transition=True)
def return_goal(x: StepInputs) -> jax.Array:
    """The goal's reward."""
    return x.goal_reward


@register_metric("x_velocity", transition=True)
def x_velocity(x: StepInputs) -> jax.Array:
    """The forward velocity (the episode's mean speed)."""
    return x.next_state.metrics["x_velocity"]


@register_metric("discounted_goal", reduce="discounted", transition=True)
def discounted_goal(x: StepInputs) -> jax.Array:
    """The goal's reward, discounted: ``sum_t GAMMA^t r_goal``."""
    return x.goal_reward


@register_metric("max_abs_goal_reward", reduce="max", transition=True)
def max_abs_goal_reward(x: StepInputs) -> jax.Array:
    """The largest ``|goal reward|`` of the episode."""
    return jnp.abs(x.goal_reward)


@register_metric("alpha_used")
def alpha_used(x: StepInputs) -> jax.Array:
    """The per-state alpha of a rule whose alpha varies per state."""
    return x.alpha


@register_metric("nonfinite_actions", reduce="sum", dtype="int64")
def nonfinite_actions(x: StepInputs) -> jax.Array:
    """The executed action had a NaN or inf (MuJoCo resets its state on such a control)."""
    return jnp.any(~jnp.isfinite(x.action)).astype(x.action.dtype)


EPISODE_SIGNALS = tuple(METRICS)  # the episode accounting above; the policy metrics follow


@register_metric("kl_to_frozen")
def kl_to_frozen(x: StepInputs) -> jax.Array:
    """KL(composed || actor)."""
    return gaussian.kl(x.composed, x.actor)


@register_metric("tv_upper", discounted="delta_pi_upper")
def tv_upper(x: StepInputs) -> jax.Array:
    """Upper bound on TV(composed, actor)."""
    return gaussian.tv_upper_bound(x.composed, x.actor)


@register_metric("tv_lower", discounted="delta_pi_lower")
def tv_lower(x: StepInputs) -> jax.Array:
    """Lower bound on TV(composed, actor) (squared Hellinger)."""
    return gaussian.tv_lower_bound(x.composed, x.actor)


def _violation(eps: float) -> Callable[[StepInputs], jax.Array]:
    log_eps = math.log(eps)

    def fn(x: StepInputs) -> jax.Array:
        return (x.actor_logp < log_eps).astype(jnp.float32)

    fn.__doc__ = f"The actor's density at the executed action below {eps}."
    return fn


register_metric("support_violation")(_violation(0.01))  # the report's headline threshold
for _eps in SUPPORT_EPS:
    register_metric(f"support_violation_{_eps}")(_violation(_eps))


@register_metric("fallback_rate")
def fallback_rate(x: StepInputs) -> jax.Array:
    """Some dimension of the prior was invalid, so the actor was used there."""
    return (~kernels.prior_valid(x.prior)).astype(jnp.float32)
