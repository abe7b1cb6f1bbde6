"""Choosing the composition coefficient without rollouts, and the rule that chooses it per state.

* :func:`kl_budget` -- one coefficient for a batch of states: the largest value
  on a grid whose mean ``KL(pi || pi_t)`` over the states stays within a budget.
* :func:`adaptive_alpha` -- one coefficient per state: the largest ``alpha`` whose
  ``KL(pi_alpha(s) || pi_t(s))`` stays within the budget, found by bisection (the one
  bisection of the package, :data:`BISECTION_STEPS` steps).
* ``poe_adaptive`` -- the registered rule that composes ``poe`` at that per-state alpha.

Both are pure, jittable and vmappable (e.g. over goals or budgets).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax.kernels import rules
from poe_jax.kernels.gaussian import DiagGaussian, kl

__all__ = ["BISECTION_STEPS", "Selection", "adaptive_alpha", "kl_budget", "poe_adaptive"]


BISECTION_STEPS = 24  # the per-state alpha's bisection: within 2**-24 (float32's resolution near 1)


def _bisect(actor: DiagGaussian, prior: DiagGaussian, budget, rule: str = "poe",
            num_iters: int = BISECTION_STEPS) -> jax.Array:
    """Per state, the largest ``alpha`` in [0, 1] with ``KL(rule(alpha)(s) || actor(s)) <= budget``.

    For ``poe`` (and ``additive``) the KL is nondecreasing in ``alpha``: the composed
    policies lie on a line in natural parameters that starts at the actor. Bisection
    then finds the boundary to within ``2**-num_iters``; the returned ``alpha`` is
    always within budget (``alpha = 1`` when the whole prior is).

    Gradients: exact to first order by the implicit-function theorem. Inside (0, 1) the
    alpha solves ``F = KL(alpha) - budget = 0``, so ``d alpha = -dF / (dF/d alpha)`` for a
    change of the budget, the actor or the prior; at 0 and 1 it is locally constant
    (derivative 0). The bisection itself is not differentiated.

    Args:
        actor, prior: ``[..., act_dim]``.
        budget: KL budget in nats, broadcastable to ``[...]`` (or ``[..., 1]``).
        rule: ``"poe"`` or ``"additive"``.
        num_iters: bisection steps.

    Returns:
        ``[...]`` coefficients (use ``alpha[..., None]`` as the rule's parameter).
    """
    if rule not in ("poe", "additive"):
        raise ValueError(f"adaptive_alpha needs a monotone alpha rule ('poe', 'additive'); got rule={rule!r}")
    fn = rules.poe if rule == "poe" else rules.additive
    dtype = actor.mean.dtype
    # Every array of the bisection comes from the data (not jnp.zeros(shape)): under shard_map it then
    # varies over the manual axes as the data do.
    zeros = jnp.zeros_like(actor.mean[..., 0] + prior.mean[..., 0])
    budget = jnp.asarray(budget, dtype)
    if budget.ndim == zeros.ndim + 1:  # a per-state [..., 1] (or per-dim) budget: one value per state
        budget = budget[..., 0]
    budget = budget + zeros
    sg = jax.lax.stop_gradient
    a0, g0, b0 = sg(actor), sg(prior), sg(budget)

    def kl_at(alpha, a=a0, g=g0):
        return kl(fn(a, g, alpha[..., None]), a)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        inside = kl_at(mid) <= b0
        return jnp.where(inside, mid, lo), jnp.where(inside, hi, mid)

    one = zeros + 1.0
    lo, _ = jax.lax.fori_loop(0, num_iters, body, (zeros, one))
    alpha = sg(jnp.where(kl_at(one) <= b0, one, lo))
    # Implicit-function gradients: one Newton step whose value is 0 and whose derivative is -dF / F_alpha.
    interior = (alpha > 0) & (alpha < 1)
    f = kl(fn(actor, prior, alpha[..., None]), actor) - budget
    f_alpha = jax.jvp(kl_at, (alpha,), (jnp.ones_like(alpha),))[1]
    f_alpha = jnp.where(interior & (f_alpha > 0), f_alpha, 1.0)
    step = jnp.where(interior, (f - sg(f)) / sg(f_alpha), 0.0)
    return alpha - step


@rules._in_float32
def poe_adaptive(actor: DiagGaussian, prior: DiagGaussian, budget) -> DiagGaussian:
    """``poe`` at a per-state ``alpha(s)``: the largest alpha whose KL to the actor is within ``budget``.

    A trust region instead of a fixed coefficient: where the prior agrees with the
    actor, alpha goes up to 1; where it disagrees (or is confidently wrong), alpha
    shrinks so that the composed policy moves at most ``budget`` nats from the
    frozen actor (:func:`adaptive_alpha`: bisection, with implicit-function gradients).

    Args:
        actor, prior: ``[..., act_dim]``.
        budget: per-state KL budget ``eps >= 0`` in nats; 0 gives the actor.

    Example:
        >>> import jax.numpy as jnp
        >>> a = DiagGaussian(jnp.zeros((2, 1)), jnp.ones((2, 1)))
        >>> g = DiagGaussian(jnp.array([[0.1], [10.0]]), jnp.ones((2, 1)))
        >>> [round(float(m), 3) for m in poe_adaptive(a, g, 0.125).mean[:, 0]]
        [0.1, 0.5]
    """
    return rules.poe(actor, prior, _adaptive_alpha_used(actor, prior, budget)[..., None])


def _adaptive_alpha_used(actor: DiagGaussian, prior: DiagGaussian, budget) -> jax.Array:
    """``[...]``: the per-state alpha :func:`poe_adaptive` uses at ``budget``."""
    budget = rules.check_coefficient("budget", budget, 0.0, math.inf, actor.mean.dtype)
    alpha = _bisect(actor, prior, budget)
    # A zero budget is the actor exactly (float32 KL of near-equal Gaussians can round to <= 0).
    positive = budget > 0
    return jnp.where(positive[..., 0] if positive.ndim == alpha.ndim + 1 else positive, alpha, 0.0)


rules.register_rule("poe_adaptive", param="budget", bounds=(0.0, math.inf),
                    alpha_fn=lambda x: _adaptive_alpha_used(x.actor, x.prior, x.param))(poe_adaptive)


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
    r = rules.get(rule)
    if r.param is None:
        raise ValueError(f"rule {rule!r} has no coefficient to select; give a rule with one (poe, kl_reg, additive)")
    if r.needs_critic:
        raise ValueError(f"rule {rule!r} needs the actor's critic, which kl_budget does not take; select poe, kl_reg "
                         "or additive")
    # validated as the rules validate theirs: concrete values raise here, traced ones become NaN (never chosen)
    if not rules._is_traced(coefficients) and not np.size(coefficients):
        raise ValueError("coefficients: empty; give the grid of coefficients to choose from")
    coefficients = rules.check_coefficient(r.param, coefficients, r.lo, r.hi, actor.mean.dtype)
    budget = rules.check_coefficient("budget", budget, 0.0, math.inf, actor.mean.dtype)
    return _kl_budget(actor, prior, coefficients, budget, rule, axis_name)


@functools.partial(jax.jit, static_argnames=("rule", "axis_name"))
def _kl_budget(actor, prior, coefficients, budget, rule: str, axis_name) -> Selection:
    fn = rules.get(rule).fn
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
    num_iters: int = BISECTION_STEPS,
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
    budget = rules.check_coefficient("budget", budget, 0.0, math.inf, actor.mean.dtype)
    return _adaptive_alpha(actor, prior, budget, rule, num_iters)


@functools.partial(jax.jit, static_argnames=("rule", "num_iters"))
def _adaptive_alpha(actor, prior, budget, rule: str, num_iters: int) -> jax.Array:
    return _bisect(actor, prior, budget, rule=rule, num_iters=num_iters)
