"""Per-step policy metrics of a grid: one registry, from the program to the stored columns.

A metric is ``fn(x: StepInputs) -> scalar``, evaluated at every live step of every lane.
The grid stores its **episode mean** (the sum over live steps divided by the episode's
length) in the column named after the metric, and, for a metric registered with
``discounted="COLUMN"``, also ``(1 - GAMMA) * sum_t GAMMA^t m_t`` in ``COLUMN``: the
metric's mean under the episode's discounted state visitation (after termination both
policies sit in the absorbing state, where the metric is 0). Register your own with
:func:`register_metric`, e.g. from a ``--plugin`` module::

    @metrics.register_metric("mean_abs_action")
    def mean_abs_action(x):
        return jnp.mean(jnp.abs(x.action))

Built-in metrics:

=========================  =========================================================
column                     per-step value
=========================  =========================================================
``kl_to_frozen``           ``KL(composed || actor)``
``tv_upper``               upper bound on ``TV(composed, actor)``: the least of
                           Pinsker, Bretagnolle-Huber and Hellinger; discounted:
                           ``delta_pi_upper``, the δπ of the performance-difference
                           bound ``|ΔJ_γ| <= 2 R_max δπ / (1 - γ)^2``
``tv_lower``               squared Hellinger, a lower bound; discounted: ``delta_pi_lower``
``support_violation_E``    the actor's log-density at the executed action below
                           ``log E``, for ``E`` in :data:`SUPPORT_EPS`
``support_violation``      the same at ``E = 0.01`` (the report's headline)
``fallback_rate``          some dimension of the prior was invalid (the actor was used)
=========================  =========================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from poe_jax import compose, gaussian
from poe_jax.gaussian import DiagGaussian

__all__ = ["GAMMA", "METRICS", "SUPPORT_EPS", "Metric", "StepInputs", "evaluate", "get", "register_metric"]

GAMMA = 0.99  # discount of discounted_goal and of the discounted metrics (delta_pi)
SUPPORT_EPS = (0.001, 0.01, 0.05)  # density thresholds of the support-violation metrics


class StepInputs(NamedTuple):
    """What a metric may use, for one lane and step.

    Attributes:
        obs: the observation the policies saw (after the shift's observation noise).
        actor: the frozen actor's distribution ``[act_dim]``.
        prior: the goal prior's, after the lane's prior quality.
        composed: the rule's composed policy.
        action: the executed action (after the shift's action noise).
        actor_logp: ``actor.log_prob(action)``.
    """

    obs: jax.Array
    actor: DiagGaussian
    prior: DiagGaussian
    composed: DiagGaussian
    action: jax.Array
    actor_logp: jax.Array


class Metric(NamedTuple):
    """A registered metric: its column, ``fn(StepInputs) -> scalar``, and its discounted column (or None)."""

    name: str
    fn: Callable[[StepInputs], jax.Array]
    discounted: str | None
    doc: str


METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, discounted: str | None = None):
    """Decorator: register ``fn(x: StepInputs) -> scalar`` as metric ``name`` (its episode-mean column).

    ``discounted``: also store ``(1 - GAMMA) sum_t GAMMA^t m_t`` under this column name.
    """

    def deco(fn):
        taken = {m.name for m in METRICS.values()} | {m.discounted for m in METRICS.values() if m.discounted}
        for col in (name, discounted):
            if col in taken:
                raise ValueError(f"metric column {col!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        METRICS[name] = Metric(name, fn, discounted, doc[0] if doc else "")
        return fn

    return deco


def get(name: str) -> Metric:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def evaluate(x: StepInputs) -> dict[str, jax.Array]:
    """``{metric: float32 scalar}`` for every registered metric."""
    return {name: jnp.asarray(m.fn(x), jnp.float32) for name, m in METRICS.items()}


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
    return (~compose.prior_valid(x.prior)).astype(jnp.float32)
