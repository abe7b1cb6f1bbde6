"""Choosing the composition coefficient without rollouts.

* :func:`kl_budget` -- one coefficient for a batch of states: the largest value
  on a grid whose mean ``KL(pi || pi_t)`` over the states stays within a budget.
* :func:`adaptive_alpha` -- one coefficient per state: the largest ``alpha`` whose
  ``KL(pi_alpha(s) || pi_t(s))`` stays within the budget, found by bisection.

Both are pure, jittable and vmappable (e.g. over goals or budgets).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax import compose
from poe_jax.gaussian import DiagGaussian, kl

__all__ = ["Selection", "adaptive_alpha", "kl_budget"]


class Selection(NamedTuple):
    """Result of :func:`kl_budget`.

    Attributes:
        index: int scalar, position of the chosen coefficient in the grid.
        coefficient: the chosen coefficient.
        mean_kl: ``[num_coefficients]`` mean KL to the actor per coefficient.
        within_budget: ``[num_coefficients]`` bool.
    """

    index: jax.Array
    coefficient: jax.Array
    mean_kl: jax.Array
    within_budget: jax.Array


def kl_budget(
    actor: DiagGaussian,
    prior: DiagGaussian,
    coefficients: jax.Array,
    budget,
    rule: str = "poe",
    axis_name: str | None = None,
) -> Selection:
    """Largest coefficient whose mean KL(rule(c) || actor) is within ``budget``.

    Args:
        actor: frozen actor over a batch of states ``[batch, act_dim]``.
        prior: goal prior ``[batch, act_dim]``.
        coefficients: ``[num_coefficients]`` grid (any order).
        budget: scalar KL budget in nats (summed over action dims, averaged
            over states).
        rule: name of a registered rule with a coefficient (not a critic rule).
        axis_name: inside ``shard_map`` (or ``pmap``) over the states, the mapped axis: the mean KL is
            then over every shard's states (``pmean``), so each shard selects the same coefficient as
            the whole batch would. Without it each shard selects from its own states.

    Returns:
        :class:`Selection`. If no coefficient is within budget, the one with the
        smallest mean KL is chosen (``within_budget`` is then all false).

    Example:
        >>> import jax.numpy as jnp
        >>> a = DiagGaussian(jnp.zeros((4, 2)), jnp.ones((4, 2)))
        >>> g = DiagGaussian(jnp.ones((4, 2)), jnp.ones((4, 2)))
        >>> s = kl_budget(a, g, jnp.linspace(0, 1, 11), 0.25)
        >>> round(float(s.coefficient), 2)
        0.5
    """
    r = compose.get(rule)
    if r.param is None:
        raise ValueError(f"rule {rule!r} has no coefficient to select; give a rule with one (poe, kl_reg, additive)")
    if r.needs_critic:
        raise ValueError(f"rule {rule!r} needs the actor's critic, which kl_budget does not take; select poe, kl_reg "
                         "or additive")
    # validated as the rules validate theirs: concrete values raise here, traced ones become NaN (never chosen)
    if not compose._is_traced(coefficients) and not np.size(coefficients):
        raise ValueError("coefficients: empty; give the grid of coefficients to choose from")
    coefficients = compose.check_coefficient(r.param, coefficients, r.lo, r.hi, actor.mean.dtype)
    budget = compose.check_coefficient("budget", budget, 0.0, math.inf, actor.mean.dtype)
    return _kl_budget(actor, prior, coefficients, budget, rule, axis_name)


@functools.partial(jax.jit, static_argnames=("rule", "axis_name"))
def _kl_budget(actor, prior, coefficients, budget, rule: str, axis_name) -> Selection:
    fn = compose.get(rule).fn
    mean_kl = jax.vmap(lambda c: jnp.mean(kl(fn(actor, prior, c), actor)))(coefficients)
    if axis_name is not None:  # shards of equal size: the mean of their means is the mean over all states
        mean_kl = jax.lax.pmean(mean_kl, axis_name)
    ok = mean_kl <= budget
    best_ok = jnp.argmax(jnp.where(ok, coefficients, -jnp.inf))
    # an invalid (NaN) budget or coefficient selects nothing: NaN, never a plausible coefficient
    index = jnp.where(jnp.any(ok), best_ok, jnp.argmin(jnp.where(jnp.isnan(mean_kl), jnp.inf, mean_kl)))
    valid = ~jnp.isnan(budget) & ~jnp.isnan(coefficients[index]) & jnp.isfinite(mean_kl[index])  # (NaN actor: none)
    return Selection(index, jnp.where(valid, coefficients[index], jnp.nan), mean_kl, ok)


def adaptive_alpha(
    actor: DiagGaussian,
    prior: DiagGaussian,
    budget,
    rule: str = "poe",
    num_iters: int = compose.BISECTION_STEPS,
) -> jax.Array:
    """Per-state largest ``alpha`` with ``KL(rule(alpha)(s) || actor(s)) <= budget``.

    For ``poe`` the KL is nondecreasing in ``alpha`` (the composed policies lie on
    a line in natural parameters starting at the actor), and likewise for
    ``additive``; bisection therefore finds the boundary to within
    ``2**-num_iters``. The returned ``alpha`` is always within budget.

    Args:
        actor: ``[..., act_dim]``.
        prior: ``[..., act_dim]``.
        budget: KL budget (nats), scalar or broadcastable to ``[...]``.
        rule: ``"poe"`` or ``"additive"``.
        num_iters: bisection steps.

    Returns:
        ``[...]`` coefficients in ``[0, 1]``; use ``alpha[..., None]`` as the
        rule's parameter.

    Example:
        >>> import jax.numpy as jnp
        >>> a = DiagGaussian(jnp.zeros((2, 1)), jnp.ones((2, 1)))
        >>> g = DiagGaussian(jnp.array([[0.1], [10.0]]), jnp.ones((2, 1)))
        >>> [round(float(x), 3) for x in adaptive_alpha(a, g, 0.125)]
        [1.0, 0.05]
    """
    budget = compose.check_coefficient("budget", budget, 0.0, math.inf, actor.mean.dtype)
    return _adaptive_alpha(actor, prior, budget, rule, num_iters)


@functools.partial(jax.jit, static_argnames=("rule", "num_iters"))
def _adaptive_alpha(actor, prior, budget, rule: str, num_iters: int) -> jax.Array:
    return compose.adaptive_alpha(actor, prior, budget, rule=rule, num_iters=num_iters)
