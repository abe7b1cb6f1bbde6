"""Prior qualities: each registered, deterministic from its keys, with the distribution it documents."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poe_jax import DiagGaussian, nets
from poe_jax.kernels import priors

M = 1.0


def _inputs(key, untrained=None):
    trained = DiagGaussian(jnp.full((4000, 3), 0.3), jnp.full((4000, 3), 0.05))
    return priors.QualityInputs(trained, untrained if untrained is not None else trained, key, M, 0.5)


def test_registry_names_and_unknown_quality():
    assert priors.names()[:5] == ("trained", "degraded", "random", "uniform", "adversarial")
    with pytest.raises(KeyError, match="unknown prior quality 'noisy'; known: trained, degraded"):
        priors.get("noisy")


def test_each_quality_is_deterministic_from_its_key_and_has_its_distribution():
    k = jax.random.key(5)
    x = _inputs(k)
    for q in priors.names():
        a = priors.apply(priors.names().index(q), priors.names(), x)
        b = priors.apply(priors.names().index(q), priors.names(), _inputs(jax.random.key(5)))
        np.testing.assert_array_equal(np.asarray(a.mean), np.asarray(b.mean))
    t = priors.get("trained").fn(x)
    assert t is x.trained
    d = priors.get("degraded").fn(x)
    np.testing.assert_array_equal(np.asarray(d.std), np.asarray(x.trained.std))
    noise = np.asarray(d.mean - x.trained.mean)
    assert abs(noise.std() - 0.5) < 0.05 and np.abs(np.asarray(d.mean)).max() <= M  # clip at the bounds
    u = priors.get("uniform").fn(x)
    um = np.asarray(u.mean)
    assert np.all(np.abs(um) <= M) and abs(um.mean()) < 0.03 and abs(um.std() - 1 / np.sqrt(3)) < 0.02
    np.testing.assert_array_equal(np.asarray(u.std), M)
    adv = priors.get("adversarial").fn(x)
    assert abs(np.asarray(adv.mean).std() - 1 / np.sqrt(3)) < 0.02
    np.testing.assert_array_equal(np.asarray(adv.std), np.asarray(x.trained.std))  # confidently wrong
    # another key, other draws
    assert not np.array_equal(np.asarray(priors.get("uniform").fn(_inputs(jax.random.key(6))).mean), um)


def test_random_prior_is_an_untrained_network_per_seed():
    """``random``: an untrained network of the prior's architecture, one per seed: the same for a
    seed whatever else differs, another for another seed, and not the trained prior."""
    spec = nets.PriorSpec(11, 3, ("G1_speed", "G3_target"), (32, 32))
    obs = jax.random.normal(jax.random.key(0), (64, 11))
    net = lambda seed: nets.init_prior(spec, priors.random_prior_key(seed)).distribution(obs, 0)  # noqa: E731
    a, a2, b = net(3), net(3), net(4)
    np.testing.assert_array_equal(np.asarray(a.mean), np.asarray(a2.mean))
    assert not np.allclose(np.asarray(a.mean), np.asarray(b.mean))
    x = _inputs(jax.random.key(1), untrained=a)
    assert priors.get("random").fn(x) is a
    assert priors.get("random").needs_untrained
    # an untrained head: std near exp(0) = 1, no confidence
    assert 0.3 < float(jnp.median(a.std)) < 3.0


def test_random_prior_is_as_vague_at_any_action_scale():
    """AntMaze's actions span ±30. A prior whose std is in units of max_action (priors trained now)
    gives an untrained network a std of about 30 there, as vague as at ±1; in absolute units (older
    priors) it would be about 1, ten times tighter than a BC actor's 3, and PoE would follow it."""
    obs = jax.random.normal(jax.random.key(0), (64, 29))
    std = {}
    for scale in ("max_action", "absolute"):
        spec = nets.PriorSpec(29, 8, ("G4_reach",), (32, 32), max_action=30.0, std_scale=scale)
        std[scale] = float(jnp.median(nets.init_prior(spec, priors.random_prior_key(0)).distribution(obs, 0).std))
    assert 10.0 < std["max_action"] < 90.0 and 0.3 < std["absolute"] < 3.0
    assert std["max_action"] == pytest.approx(30 * std["absolute"], rel=1e-5)
    with pytest.raises(ValueError, match="PriorSpec.std_scale: 'relative'; expected 'absolute' or 'max_action'"):
        nets.PriorSpec(29, 8, ("G4_reach",), std_scale="relative")
    legacy = nets.PriorSpec(3, 1, ("G1_speed",))
    assert legacy.std_scale == "absolute"  # a card without the field keeps its meaning


def test_register_quality_from_user_code():
    @priors.register_quality("test_shifted")
    def shifted(x):
        """Trained mean + 0.1."""
        return x.trained.replace(mean=x.trained.mean + 0.1)

    try:
        out = priors.apply(1, ("trained", "test_shifted"), _inputs(jax.random.key(0)))
        np.testing.assert_allclose(np.asarray(out.mean), 0.4, rtol=1e-6)
        with pytest.raises(ValueError, match="already registered"):
            priors.register_quality("test_shifted")(shifted)
    finally:
        priors.QUALITIES.pop("test_shifted")


def test_vague_keeps_the_mean_and_loses_precision():
    """``vague`` is accurate but imprecise: the trained mean bit for bit, the std times VAGUE_STD_SCALE; PoE with
    it moves the actor less than with the trained prior at every alpha (measured: KL to the actor)."""
    from poe_jax import compose
    from poe_jax.kernels.gaussian import kl

    x = _inputs(jax.random.key(2))
    v = priors.get("vague").fn(x)
    np.testing.assert_array_equal(np.asarray(v.mean), np.asarray(x.trained.mean))
    np.testing.assert_allclose(np.asarray(v.std), priors.VAGUE_STD_SCALE * np.asarray(x.trained.std), rtol=1e-6)
    actor = DiagGaussian(jnp.zeros((4000, 3)), jnp.full((4000, 3), 0.1))
    for alpha in (0.1, 0.5, 0.9):
        pulled = float(jnp.mean(kl(compose.poe(actor, x.trained, alpha), actor)))
        vague = float(jnp.mean(kl(compose.poe(actor, v, alpha), actor)))
        assert 0 < vague < pulled, alpha
