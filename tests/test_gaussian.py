"""DiagGaussian against scipy.stats in float64."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, stats

from poe_jax.kernels.gaussian import DiagGaussian, entropy, from_natural, kl, log_prob, to_natural
from poe_jax.kernels.gaussian import total_variation, tv_lower_bound, tv_upper_bound

RNG = np.random.default_rng(0)
M = RNG.normal(size=(5, 3))
S = RNG.uniform(0.1, 2.0, size=(5, 3))
X = RNG.normal(size=(5, 3))


def test_log_prob_and_entropy_match_scipy_float64():
    with jax.enable_x64(True):
        d = DiagGaussian(jnp.asarray(M), jnp.asarray(S))
        np.testing.assert_allclose(log_prob(d, jnp.asarray(X)), stats.norm(M, S).logpdf(X).sum(-1), rtol=1e-12)
        np.testing.assert_allclose(entropy(d), stats.norm(M, S).entropy().sum(-1), rtol=1e-12)


def test_pytree_and_natural_roundtrip():
    d = DiagGaussian(jnp.asarray(M, jnp.float32), jnp.asarray(S, jnp.float32))
    leaves = jax.tree_util.tree_leaves(d)
    assert len(leaves) == 2
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, d)
    assert isinstance(doubled, DiagGaussian)
    back = from_natural(*to_natural(d))
    np.testing.assert_allclose(back.mean, d.mean, rtol=1e-5)
    np.testing.assert_allclose(back.std, d.std, rtol=1e-5)
    assert d.act_dim == 3 and d.var.shape == (5, 3)


def test_sample_moments():
    d = DiagGaussian(jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0]))
    x = d.sample(jax.random.key(0), (200_000,))
    assert x.shape == (200_000, 2)
    np.testing.assert_allclose(x.mean(0), [1.0, -2.0], atol=0.02)
    np.testing.assert_allclose(x.std(0), [0.5, 2.0], rtol=0.01)


def exact_tv_1d(m1, s1, m2, s2):
    f = lambda x: 0.5 * abs(stats.norm.pdf(x, m1, s1) - stats.norm.pdf(x, m2, s2))
    lo, hi = min(m1 - 12 * s1, m2 - 12 * s2), max(m1 + 12 * s1, m2 + 12 * s2)
    return integrate.quad(f, lo, hi, limit=400, points=[m1, m2])[0]


def test_total_variation_estimate_and_bound():
    cases = [(0.0, 1.0, 0.5, 1.0), (0.0, 1.0, 0.0, 2.0), (0.0, 0.3, 2.0, 1.0), (1.0, 1.0, 1.0, 1.0)]
    keys = jax.random.split(jax.random.key(3), len(cases))
    for (m1, s1, m2, s2), k in zip(cases, keys):
        p = DiagGaussian(jnp.array([m1]), jnp.array([s1]))
        q = DiagGaussian(jnp.array([m2]), jnp.array([s2]))
        exact = exact_tv_1d(m1, s1, m2, s2)
        est = float(total_variation(p, q, k, num_samples=100_000))
        assert abs(est - exact) < 0.01, (exact, est)  # 5 standard errors at n=1e5
        assert float(tv_lower_bound(p, q)) - 1e-6 <= exact <= float(tv_upper_bound(p, q)) + 1e-6
    # Several dims against a float64 Monte-Carlo TV: the bounds bracket it; the Hellinger bound
    # is the tightest of the three upper bounds when the distributions are far apart.
    p = DiagGaussian(jnp.array([0.0, 1.0, -0.5]), jnp.array([0.3, 0.5, 1.0]))
    q = DiagGaussian(jnp.array([1.0, 0.0, 0.5]), jnp.array([0.5, 0.2, 0.7]))
    x = np.random.default_rng(0).normal(np.asarray(p.mean, float), np.asarray(p.std, float), (400_000, 3))
    logr = (stats.norm.logpdf(x, np.asarray(q.mean, float), np.asarray(q.std, float)).sum(1)
            - stats.norm.logpdf(x, np.asarray(p.mean, float), np.asarray(p.std, float)).sum(1))
    tv = float(np.mean(np.maximum(0.0, 1.0 - np.exp(np.minimum(logr, 0.0)))))
    lo, hi = float(tv_lower_bound(p, q)), float(tv_upper_bound(p, q))
    assert lo <= tv <= hi and hi < float(np.sqrt(1 - np.exp(-kl(p, q))))
    point = DiagGaussian(jnp.zeros(1), jnp.zeros(1))  # kl_reg(beta=inf): a point mass is TV 1 from any Gaussian
    assert float(tv_lower_bound(point, DiagGaussian(jnp.zeros(1), jnp.ones(1)))) == 1.0
    # KL of independent dims adds up.
    p = DiagGaussian(jnp.zeros(2), jnp.ones(2))
    q = DiagGaussian(jnp.array([1.0, 0.0]), jnp.array([1.0, 2.0]))
    expected = 0.5 + (np.log(2) + 1 / 8 - 0.5)
    np.testing.assert_allclose(kl(p, q), expected, rtol=1e-6)


def test_kl_keeps_its_precision_in_float32_near_zero():
    """Users run float32: KL between nearly equal Gaussians (std perturbed by 1e-4, means equal)
    matches the float64 closed form to 1%, where ``0.5 (r^2 - 1) - log r`` loses about half."""
    s = RNG.uniform(0.1, 2.0, size=(64, 6))
    m = RNG.normal(size=(64, 6))
    t = s * (1 + 1e-4 * RNG.choice([-1.0, 1.0], size=s.shape))
    r = t / s
    ref = (0.5 * (r**2 - 1) - np.log(r)).sum(-1)  # float64
    got = np.asarray(kl(DiagGaussian(jnp.asarray(m, jnp.float32), jnp.asarray(t, jnp.float32)),
                        DiagGaussian(jnp.asarray(m, jnp.float32), jnp.asarray(s, jnp.float32))))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-2)
