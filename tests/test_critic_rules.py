"""Critic-guided rules on toy critics with a known gradient and maximiser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poe_jax import compose
from poe_jax.kernels import critic_rules
from poe_jax.kernels.gaussian import DiagGaussian

TARGET = jnp.array([0.3, -0.6, 2.0])  # the toy critic's maximiser; the last entry is out of bounds
LOW, HIGH = -1.0, 1.0


def q_toy(a):
    """Q(a) = -|a - TARGET|^2 (weighted): gradient 2 w (TARGET - a), maximiser clip(TARGET) in the box."""
    return -jnp.sum(jnp.array([1.0, 4.0, 0.5]) * (a - TARGET) ** 2)


ACTOR = DiagGaussian(jnp.array([-0.2, 0.1, 0.0]), jnp.array([0.2, 0.3, 0.1]))
PRIOR = DiagGaussian(jnp.array([0.5, 0.5, 0.5]), jnp.array([0.4, 0.4, 0.4]))


def test_iql_guided_is_a_gradient_step_on_the_critic():
    eta = 0.05
    out = critic_rules.iql_guided(ACTOR, q_toy, eta, LOW, HIGH)
    grad = 2 * np.array([1.0, 4.0, 0.5]) * (np.asarray(TARGET) - np.asarray(ACTOR.mean))
    np.testing.assert_allclose(out.mean, np.clip(np.asarray(ACTOR.mean) + eta * grad, LOW, HIGH), rtol=1e-6)
    np.testing.assert_array_equal(out.std, ACTOR.std)
    np.testing.assert_array_equal(critic_rules.iql_guided(ACTOR, q_toy, 0.0, LOW, HIGH).mean, ACTOR.mean)
    assert np.all(np.abs(critic_rules.iql_guided(ACTOR, q_toy, 100.0, LOW, HIGH).mean) <= 1.0)  # clipped
    with pytest.raises(ValueError, match="eta must be in"):
        critic_rules.iql_guided(ACTOR, q_toy, -1.0, LOW, HIGH)


def test_critic_greedy_finds_the_maximiser_within_the_bounds():
    a = critic_rules.critic_greedy(ACTOR, q_toy, None, LOW, HIGH)
    np.testing.assert_allclose(a.mean, np.clip(TARGET, LOW, HIGH), atol=0.01 * (HIGH - LOW))
    np.testing.assert_array_equal(a.std, ACTOR.std)
    # With sampled candidates the result is never worse (by Q) than the ascent or the actor's mean.
    bumpy = lambda x: q_toy(x) + 0.5 * jnp.sum(jnp.cos(12 * x))  # noqa: E731  local maxima
    best = critic_rules.greedy_action(ACTOR, bumpy, LOW, HIGH, jax.random.key(0))
    ascent = critic_rules.greedy_action(ACTOR, bumpy, LOW, HIGH)
    assert float(bumpy(best)) >= max(float(bumpy(ascent)), float(bumpy(ACTOR.mean))) - 1e-6
    assert np.all((np.asarray(best) >= LOW) & (np.asarray(best) <= HIGH))


def test_critic_prior_is_poe_towards_the_greedy_action():
    a_star = critic_rules.greedy_action(ACTOR, q_toy, LOW, HIGH)
    for alpha in (0.0, 0.4, 1.0):
        out = critic_rules.critic_prior(ACTOR, PRIOR, q_toy, alpha, LOW, HIGH)
        ref = compose.poe(ACTOR, DiagGaussian(a_star, PRIOR.std), alpha)
        np.testing.assert_allclose(out.mean, ref.mean, rtol=1e-6)
        np.testing.assert_allclose(out.std, ref.std, rtol=1e-6)
    np.testing.assert_allclose(critic_rules.critic_prior(ACTOR, PRIOR, q_toy, 1.0, LOW, HIGH).mean, a_star)


def test_switch_covers_closed_form_and_critic_rules_under_vmap():
    names = compose.names()
    params = {"frozen": 0.0, "prior_only": 1.0, "additive": 0.3, "poe": 0.3, "kl_reg": 2.0, "poe_adaptive": 0.1,
              "iql_guided": 0.05, "critic_greedy": 0.0, "critic_prior": 0.5}
    assert set(names) >= set(params)
    names = tuple(params)
    idx = jnp.arange(len(names))
    p = jnp.asarray([params[n] for n in names])
    crit = compose.CriticInputs(q_toy, LOW, HIGH)
    out = jax.jit(jax.vmap(lambda i, c: compose.switch(names, i, compose.RuleInputs(ACTOR, PRIOR, c, crit))))(idx, p)
    for i, n in enumerate(names):
        if not compose.RULES[n].needs_critic:
            ref = compose.RULES[n](ACTOR, PRIOR, params[n])
        elif n == "iql_guided":
            ref = critic_rules.iql_guided(ACTOR, q_toy, params[n], LOW, HIGH)
        elif n == "critic_greedy":
            ref = critic_rules.critic_greedy(ACTOR, q_toy, None, LOW, HIGH)
        else:
            ref = critic_rules.critic_prior(ACTOR, PRIOR, q_toy, params[n], LOW, HIGH)
        np.testing.assert_allclose(out.mean[i], ref.mean, rtol=1e-5, atol=1e-6, err_msg=n)
        np.testing.assert_allclose(out.std[i], ref.std, rtol=1e-5, err_msg=n)


def test_critic_rules_live_in_the_one_registry_with_their_metadata():
    r = compose.RULES["critic_prior"]
    assert r.needs_critic and r.uses_prior and r.param == "alpha" and r.equiv(0.25) == 0.25
    g = compose.RULES["iql_guided"]
    assert g.needs_critic and not g.uses_prior and np.isnan(g.equiv(0.1))
    with pytest.raises(ValueError, match="needs the actor's critic"):
        g(ACTOR, PRIOR, 0.1)  # no CriticInputs
    out = g(ACTOR, PRIOR, 0.05, compose.CriticInputs(q_toy, LOW, HIGH))
    np.testing.assert_allclose(out.mean, critic_rules.iql_guided(ACTOR, q_toy, 0.05, LOW, HIGH).mean)
