"""KL-budget selector and adaptive alpha."""

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax import compose
from poe_jax.kernels import selectors as select
from poe_jax.kernels.gaussian import DiagGaussian, kl


def _pair(seed, batch=64, act=3):
    k = jax.random.split(jax.random.key(seed), 3)
    actor = DiagGaussian(jax.random.normal(k[0], (batch, act)), jnp.exp(0.3 * jax.random.normal(k[1], (batch, act))) * 0.3)
    prior = DiagGaussian(actor.mean + jax.random.normal(k[2], (batch, act)), jnp.full((batch, act), 0.6))
    return actor, prior


def test_kl_budget_matches_brute_force():
    actor, prior = _pair(0)
    grid = jnp.array([0.9, 0.1, 0.5, 0.0, 0.3, 0.7])  # unsorted on purpose
    for budget in (0.0, 0.05, 0.5, 2.0, 100.0):
        sel = select.kl_budget(actor, prior, grid, budget)
        kls = [float(jnp.mean(kl(compose.poe(actor, prior, a), actor))) for a in grid]
        np.testing.assert_allclose(sel.mean_kl, kls, rtol=1e-5, atol=1e-7)  # KL(alpha=0) is ~1e-16
        ok = [a for a, k in zip(grid.tolist(), kls) if k <= budget]
        assert ok, "alpha = 0 is the actor itself, KL exactly 0"
        assert float(sel.coefficient) == max(ok)
        assert bool(sel.within_budget[sel.index])


def test_kl_budget_none_within_budget_picks_smallest_kl():
    actor, prior = _pair(1)
    sel = select.kl_budget(actor, prior, jnp.array([0.8, 0.5, 0.9]), 1e-9)
    assert not bool(jnp.any(sel.within_budget))
    assert float(sel.coefficient) == np.float32(0.5)


def test_kl_budget_vmaps_over_budgets_and_goals():
    actor, prior = _pair(2)
    priors = jax.tree_util.tree_map(lambda x: jnp.stack([x, x + 0.5]), prior)
    grid = jnp.linspace(0, 1, 11)
    budgets = jnp.array([0.01, 0.1, 1.0])
    f = jax.vmap(jax.vmap(select.kl_budget, in_axes=(None, None, None, 0)), in_axes=(None, 0, None, None))
    sel = jax.jit(f)(actor, priors, grid, budgets)
    assert sel.coefficient.shape == (2, 3)
    assert bool(jnp.all(jnp.diff(sel.coefficient, axis=1) >= 0))  # more budget, larger alpha


def test_kl_reg_selector_uses_beta_grid():
    actor, prior = _pair(3)
    betas = compose.alpha_to_beta(jnp.linspace(0, 0.9, 10))
    sel = select.kl_budget(actor, prior, betas, 0.3, rule="kl_reg")
    assert bool(sel.within_budget[sel.index])


def test_adaptive_alpha_is_the_per_state_boundary():
    actor, prior = _pair(4, batch=200)
    # Second half: a prior so close to the actor that alpha = 1 is within budget.
    close = DiagGaussian(actor.mean + 0.01 * actor.std, actor.std)
    prior = jax.tree_util.tree_map(lambda p, c: jnp.concatenate([p[:100], c[100:]]), prior, close)
    budget = 0.2
    alpha = select.adaptive_alpha(actor, prior, budget)
    assert alpha.shape == (200,)
    kl_at = kl(compose.poe(actor, prior, alpha[:, None]), actor)
    # Within budget as judged inside jit; eager recomputation differs by float32 rounding.
    assert bool(jnp.all(kl_at <= budget * (1 + 1e-5)))
    inner = alpha < 1.0
    assert bool(jnp.any(inner)) and bool(jnp.any(~inner))
    above = kl(compose.poe(actor, prior, jnp.minimum(alpha + 1e-4, 1.0)[:, None]), actor)
    assert bool(jnp.all(above[inner] > budget))
    # Per-state budgets and vmap over budgets.
    many = jax.vmap(select.adaptive_alpha, in_axes=(None, None, 0))(actor, prior, jnp.array([0.05, 0.5]))
    assert bool(jnp.all(many[0] <= many[1]))
