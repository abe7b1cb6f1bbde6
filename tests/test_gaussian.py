"""DiagGaussian against scipy.stats in float64."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, stats

from poe_jax.kernels.gaussian import DiagGaussian, bhattacharyya, entropy, from_natural, kl, log_prob, precision, to_natural
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


def _kl_std_part_f64(sp, sq):
    """0.5 (r^2 - 1) - log r and its derivative in s_p, in float64 from the float32 inputs (r - 1 exact)."""
    sp, sq = np.float64(sp), np.float64(sq)
    u = (sp - sq) / sq
    # for |u| <= 1e-3 the series 0.5 (2u + u^2) - log1p(u) = u^2 - u^3/3 + u^4/4 - u^5/5 + ...
    val = 0.5 * (2 * u + u * u) - np.log1p(u) if abs(u) > 1e-3 else u * u - u**3 / 3 + u**4 / 4 - u**5 / 5
    return val, (sp * sp / sq / sq - 1) / sp


def test_kl_value_and_gradient_near_equal_stds_at_every_scale():
    """Review finding: log s_p - log s_q has an absolute error of eps |log s|, so KL was 17x too large (and
    its gradient 4x) at s = 1e-3 with a ratio of 1 + 1.2e-7, and 0 at s = 50. Now within 1e-3 of float64's
    value at every scale, and within 1e-5 for its gradient."""
    for s in (1e-6, 1e-3, 1.0, 50.0, 1e6):
        for eps in (1.2e-7, 1e-5, 1e-3, 3e-2, -1e-4, 0.3, 2.0):
            sq = np.float32(s)
            sp = np.float32(sq * (1 + eps))
            if sp == sq:
                continue
            ref, gref = _kl_std_part_f64(sp, sq)
            f = lambda x: kl(DiagGaussian(jnp.zeros(1), x[None]), DiagGaussian(jnp.zeros(1), jnp.array([sq])))  # noqa: E731
            got, g = float(f(jnp.float32(sp))), float(jax.grad(f)(jnp.float32(sp)))
            np.testing.assert_allclose(got, ref, rtol=1e-3, err_msg=f"s={s} eps={eps}")
            np.testing.assert_allclose(g, gref, rtol=1e-5, err_msg=f"s={s} eps={eps}")


def test_point_mass_density_and_kl_are_infinite_not_nan():
    """``kl_reg`` at beta = inf returns std 0. Its log density is +inf at its mean and -inf off it; the KL of a
    Gaussian to it is +inf (both were NaN)."""
    point = DiagGaussian(jnp.array([0.5, -1.0]), jnp.zeros(2))
    assert float(log_prob(point, jnp.array([0.5, -1.0]))) == np.inf
    assert float(log_prob(point, jnp.array([0.5, -0.9]))) == -np.inf
    assert float(kl(DiagGaussian(jnp.zeros(2), jnp.ones(2)), point)) == np.inf
    g = DiagGaussian(jnp.zeros(2), jnp.ones(2))
    np.testing.assert_allclose(float(log_prob(g, jnp.zeros(2))), stats.norm.logpdf(0.0) * 2, rtol=1e-6)


def test_bhattacharyya_and_tv_bound_at_extreme_stds_and_at_equality():
    """Review findings: equal stds of 1e-20 or 1e20 gave BC = NaN (the variance sum underflowed or
    overflowed), a std of 1e20 against 1 gave 0 where BC is 1.41e-10, and the TV upper bound's gradient at
    p = q was NaN (sqrt's slope at 0 times 0)."""
    for s in (1e-20, 1e20):
        d = DiagGaussian(jnp.zeros(1), jnp.array([s], jnp.float32))
        assert float(bhattacharyya(d, d)) == 1.0
    wide = DiagGaussian(jnp.zeros(1), jnp.array([1e20], jnp.float32))
    np.testing.assert_allclose(float(bhattacharyya(wide, DiagGaussian(jnp.zeros(1), jnp.ones(1)))),
                               np.sqrt(2 * 1e20 / (1e40 + 1)), rtol=1e-6)
    # against scipy's integral of sqrt(p q) at ordinary values
    p, q = (0.3, 0.5), (-0.4, 1.7)
    ref = integrate.quad(lambda x: np.sqrt(stats.norm.pdf(x, *p) * stats.norm.pdf(x, *q)), -30, 30)[0]
    got = bhattacharyya(DiagGaussian(jnp.array([p[0]]), jnp.array([p[1]])), DiagGaussian(jnp.array([q[0]]), jnp.array([q[1]])))
    np.testing.assert_allclose(float(got), ref, rtol=1e-6)
    a = DiagGaussian(jnp.array([0.2, -0.1]), jnp.array([0.5, 1.5]))
    grad = jax.grad(lambda m: tv_upper_bound(DiagGaussian(m, a.std), a))(a.mean)
    assert np.isfinite(np.asarray(grad)).all()
    near = jax.grad(lambda m: tv_upper_bound(DiagGaussian(m, a.std), a))(a.mean + 1e-3)
    assert np.isfinite(np.asarray(near)).all() and np.abs(np.asarray(near)).max() > 0.1


def test_precision_gradient_is_exact_for_tiny_stds():
    """Review finding: d precision / d std was -inf below std 3e-10 (1/std**4 overflowed) and NaN below 1e-19."""
    for s in (1e-3, 1e-10, 1e-12):
        g = float(jax.grad(lambda x: precision(x))(jnp.float32(s)))
        np.testing.assert_allclose(g, -2 / np.float64(np.float32(s)) ** 3, rtol=1e-5)
    assert float(jax.grad(lambda x: precision(x))(jnp.float32(1e-20))) == 0.0  # clamped: value and slope
