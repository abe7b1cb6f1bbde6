"""Composition rules against an independent float64 reference (written here)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.experimental import checkify
from scipy import optimize

from poe_jax import compose
from poe_jax.kernels.gaussian import DiagGaussian, kl

CLOSED_FORM = ("frozen", "prior_only", "additive", "poe", "kl_reg", "poe_adaptive")  # the rules without a critic

# ----------------------------------------------------------------------------- reference


def ref_poe(mt, st_, mg, sg, a):
    lt, lg = 1 / st_**2, 1 / sg**2
    lam = (1 - a) * lt + a * lg
    return ((1 - a) * lt * mt + a * lg * mg) / lam, 1 / np.sqrt(lam)


def ref_kl_reg(mt, st_, mg, sg, b):
    lt, lg = 1 / st_**2, 1 / sg**2
    lam = lt + b * lg
    return (lt * mt + b * lg * mg) / lam, 1 / np.sqrt(lam)


def ref_additive(mt, st_, mg, sg, a):
    return (1 - a) * mt + a * mg, (1 - a) * st_ + a * sg


def ref_kl(m1, s1, m2, s2):
    return np.sum(np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5, axis=-1)


# ----------------------------------------------------------------------------- strategies

ACT = 4
# XLA flushes float32 subnormals to zero, so keep magnitudes normal in float32.
_mean = st.floats(-5, 5).map(lambda x: 0.0 if abs(x) < 1e-30 else x)
means = hnp.arrays(np.float64, (3, ACT), elements=_mean)
stds = hnp.arrays(np.float64, (3, ACT), elements=st.floats(1e-2, 1e2))
alphas = st.floats(0.0, 0.999)


def dist(m, s, dtype):
    return DiagGaussian(jnp.asarray(m, dtype), jnp.asarray(s, dtype))


def close64(x, y):
    np.testing.assert_allclose(np.asarray(x), y, rtol=1e-10, atol=1e-10)


def close32(x, y, scale):
    # 1e-5 relative to the magnitude of the inputs: means are convex combinations,
    # so an output near 0 can come from cancellation of O(scale) terms.
    np.testing.assert_allclose(np.asarray(x), y, rtol=1e-5, atol=1e-5 * scale)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(means, stds, means, stds, alphas)
def test_poe_kl_reg_identity_float64(mt, st_, mg, sg, a):
    with jax.enable_x64(True):
        actor, prior = dist(mt, st_, jnp.float64), dist(mg, sg, jnp.float64)
        p = compose.poe(actor, prior, a)
        k = compose.kl_reg(actor, prior, compose.alpha_to_beta(a))
        close64(p.mean, k.mean)
        close64(np.asarray(k.std) ** 2, (1 - a) * np.asarray(p.std) ** 2)
        rm, rs = ref_poe(mt, st_, mg, sg, a)
        close64(p.mean, rm)
        close64(p.std, rs)
        rm, rs = ref_kl_reg(mt, st_, mg, sg, a / (1 - a))
        close64(k.mean, rm)
        close64(k.std, rs)
        rm, rs = ref_additive(mt, st_, mg, sg, a)
        add = compose.additive(actor, prior, a)
        close64(add.mean, rm)
        close64(add.std, rs)


@settings(max_examples=60, deadline=None)
@given(means, stds, means, stds, alphas)
def test_rules_float32_match_float64_reference(mt, st_, mg, sg, a):
    actor, prior = dist(mt, st_, jnp.float32), dist(mg, sg, jnp.float32)
    # The float32 inputs are the rounded values; the reference uses the same ones.
    mt, st_, mg, sg = (np.asarray(x, np.float64) for x in (actor.mean, actor.std, prior.mean, prior.std))
    a32 = float(np.float32(a))
    scale = max(np.abs(mt).max(), np.abs(mg).max(), 1.0)
    p = compose.poe(actor, prior, a32)
    rm, rs = ref_poe(mt, st_, mg, sg, a32)
    assert p.mean.dtype == jnp.float32
    close32(p.mean, rm, scale)
    np.testing.assert_allclose(np.asarray(p.std), rs, rtol=1e-5)
    b = a32 / (1 - a32)
    k = compose.kl_reg(actor, prior, b)
    rm2, rs2 = ref_kl_reg(mt, st_, mg, sg, b)
    close32(k.mean, rm2, scale)
    np.testing.assert_allclose(np.asarray(k.std), rs2, rtol=1e-5)
    close32(k.mean, np.asarray(p.mean, np.float64), scale)  # the identity in float32


@settings(max_examples=15, deadline=None)
@given(
    st.floats(-3, 3), st.floats(0.05, 3), st.floats(-3, 3), st.floats(0.05, 3), st.floats(0.05, 20)
)
def test_kl_reg_is_the_maximiser(mt, st_, mg, sg, beta):
    """Maximise b E_pi[log pi_g] - KL(pi || pi_t) numerically over (mu, log sigma)."""

    def neg_objective(x):
        mu, s = x[0], math.exp(x[1])
        e_log_g = -0.5 * math.log(2 * math.pi * sg**2) - (s**2 + (mu - mg) ** 2) / (2 * sg**2)
        kl_ = math.log(st_ / s) + (s**2 + (mu - mt) ** 2) / (2 * st_**2) - 0.5
        return -(beta * e_log_g - kl_)

    res = optimize.minimize(neg_objective, x0=[0.0, 0.0], method="BFGS", options={"gtol": 1e-10})
    with jax.enable_x64(True):
        d = compose.kl_reg(
            dist([[mt]], [[st_]], jnp.float64), dist([[mg]], [[sg]], jnp.float64), beta
        )
        closed = [float(d.mean[0, 0]), math.log(float(d.std[0, 0]))]
    assert neg_objective(closed) <= res.fun + 1e-10  # closed form is at least as good
    np.testing.assert_allclose(res.x, closed, atol=1e-4)  # and it is the optimiser's answer


@settings(max_examples=40, deadline=None)
@given(means, stds, means, stds)
def test_kl_properties(m1, s1, m2, s2):
    with jax.enable_x64(True):
        p, q = dist(m1, s1, jnp.float64), dist(m2, s2, jnp.float64)
        np.testing.assert_allclose(np.asarray(kl(p, p)), 0.0, atol=1e-12)
        assert np.all(np.asarray(kl(p, q)) >= -1e-12)
        np.testing.assert_allclose(np.asarray(kl(p, q)), ref_kl(m1, s1, m2, s2), rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(means, stds, means, stds)
def test_alpha_limits(mt, st_, mg, sg):
    actor, prior = dist(mt, st_, jnp.float32), dist(mg, sg, jnp.float32)
    for rule in ("poe", "additive"):
        d0 = compose.RULES[rule](actor, prior, 0.0)
        np.testing.assert_array_equal(d0.mean, actor.mean)
        np.testing.assert_array_equal(d0.std, actor.std)
        d1 = compose.RULES[rule](actor, prior, 1.0)
        np.testing.assert_array_equal(d1.mean, prior.mean)
        np.testing.assert_array_equal(d1.std, prior.std)
        # Continuity at alpha -> 0: the first-order move is alpha * (lam_g/lam_t) * |mu_g - mu_t|
        # for poe (alpha * |mu_g - mu_t| for additive), so bound it by that.
        eps = 1e-7
        near0 = compose.RULES[rule](actor, prior, eps)
        gain = np.maximum((st_ / sg) ** 2, 1.0) if rule == "poe" else 1.0
        bound = 2 * eps * gain * np.abs(mg - mt) + 1e-6 * np.maximum(np.abs(mt), 1.0)
        assert np.all(np.abs(np.asarray(near0.mean, np.float64) - np.asarray(actor.mean)) <= bound)
    k0 = compose.kl_reg(actor, prior, 0.0)
    np.testing.assert_array_equal(k0.mean, actor.mean)
    kinf = compose.kl_reg(actor, prior, math.inf)
    np.testing.assert_array_equal(kinf.mean, prior.mean)
    np.testing.assert_array_equal(kinf.std, 0.0)
    kbig = compose.kl_reg(actor, prior, 1e30)
    assert np.all(np.isfinite(kbig.mean))
    np.testing.assert_allclose(kbig.mean, prior.mean, rtol=1e-5, atol=1e-5)


def test_alpha_beta_conversion():
    a = jnp.array([0.0, 0.25, 0.5, 0.9, 1.0])
    b = compose.alpha_to_beta(a)
    np.testing.assert_allclose(b, [0.0, 1 / 3, 1.0, 9.0, np.inf], rtol=1e-6)
    np.testing.assert_allclose(compose.beta_to_alpha(b), a, rtol=1e-6)
    np.testing.assert_allclose(compose.alpha_equiv("kl_reg", 1.0), 0.5)
    assert float(compose.alpha_equiv("frozen", 0.3)) == 0.0
    assert float(compose.alpha_equiv("prior_only", 0.3)) == 1.0


def test_degenerate_stds():
    """Underflowing actor stds give the exact limit; degenerate prior stds fall back."""
    actor = DiagGaussian(jnp.array([0.3, -0.2, 0.1]), jnp.array([1e-30, 0.5, 1e-30]))
    prior = DiagGaussian(jnp.array([0.9, 0.9, 0.9]), jnp.array([0.5, 1e-30, 1e30]))
    for rule in ("poe", "kl_reg"):
        res = compose.apply(rule, actor, prior, 0.5)
        assert np.all(np.isfinite(res.dist.mean)) and np.all(np.isfinite(res.dist.std)), rule
        np.testing.assert_array_equal(res.dist.mean, actor.mean)  # actor dominates or prior invalid
        assert bool(res.fallback)


def test_tiny_and_huge_std_stay_finite():
    actor = DiagGaussian(jnp.array([0.3, -0.2]), jnp.array([1e-8, 1e-3]))
    prior = DiagGaussian(jnp.array([0.9, 0.9]), jnp.array([1e-3, 1e8]))
    for a in (0.1, 0.5, 0.9):
        d = compose.poe(actor, prior, a)
        assert np.all(np.isfinite(d.mean)) and np.all(np.isfinite(d.std)) and np.all(d.std > 0)
        # A near-deterministic actor dimension dominates; a near-flat prior is ignored.
        np.testing.assert_allclose(d.mean, [0.3, -0.2], atol=1e-4)


# ----------------------------------------------------------------------------- anchoring


def test_poe_stays_anchored_under_vague_random_prior():
    key = jax.random.key(0)
    k1, k2 = jax.random.split(key)
    actor = DiagGaussian(0.5 * jax.random.normal(k1, (1000, 6)), jnp.full((1000, 6), 0.1))
    rnd = DiagGaussian(jax.random.uniform(k2, (1000, 6), minval=-1, maxval=1), jnp.full((1000, 6), 5.0))
    alpha = 0.5
    poe_shift = float(jnp.mean(jnp.abs(compose.poe(actor, rnd, alpha).mean - actor.mean)))
    add_shift = float(jnp.mean(jnp.abs(compose.additive(actor, rnd, alpha).mean - actor.mean)))
    # Precision weight of the prior is (0.5/25)/(0.5/0.01 + 0.5/25) ~ 4e-4.
    assert poe_shift < 1e-3
    assert add_shift > 0.2
    assert float(jnp.mean(kl(compose.poe(actor, rnd, alpha), actor))) < 5.0
    assert float(jnp.mean(kl(compose.additive(actor, rnd, alpha), actor))) > 1000.0


# ----------------------------------------------------------------------------- bad input

A = DiagGaussian(jnp.zeros((2, 3)), jnp.ones((2, 3)))


@pytest.mark.parametrize(
    "rule,value,pattern",
    [
        ("poe", 1.5, r"alpha must be in \[0.0, 1.0\]; got alpha=1.5"),
        ("poe", -0.1, r"alpha must be in \[0.0, 1.0\]; got alpha=-0.1"),
        ("poe", math.nan, r"alpha must be in \[0.0, 1.0\]; got alpha=nan"),
        ("additive", 2.0, r"alpha must be in \[0.0, 1.0\]; got alpha=2.0"),
        ("kl_reg", -1.0, r"beta must be in \[0.0, inf\]; got beta=-1.0"),
        ("kl_reg", math.nan, r"beta must be in \[0.0, inf\]; got beta=nan"),
    ],
)
def test_bad_coefficient_eager(rule, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        compose.RULES[rule](A, A, value)


def test_bad_coefficient_in_array_names_values():
    with pytest.raises(ValueError, match=r"got alpha=1.25$"):
        compose.poe(A, A, jnp.array([[0.1], [1.25]]))
    bad = np.array([0.1, 1.25, 0.3, -0.5])
    with pytest.raises(ValueError, match=r"got alpha=1.25, -0.5"):
        compose.RULES["poe"].validate(bad)


def test_bad_std_eager():
    neg = DiagGaussian(jnp.zeros(3), jnp.array([1.0, -0.5, 1.0]))
    zero = DiagGaussian(jnp.zeros(3), jnp.array([1.0, 0.0, 1.0]))
    ok = DiagGaussian(jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match=r"actor.std must be > 0; got actor.std=-0.5"):
        compose.poe(neg, ok, 0.5)
    with pytest.raises(ValueError, match=r"prior.std must be > 0; got prior.std=0.0"):
        compose.poe(ok, zero, 0.5)
    with pytest.raises(ValueError, match=r"actor.std must be > 0"):
        compose.frozen(zero)
    nan_actor = DiagGaussian(jnp.array([0.0, jnp.nan, 0.0]), jnp.ones(3))
    with pytest.raises(ValueError, match=r"actor.mean and actor.std must be finite"):
        compose.additive(nan_actor, ok, 0.5)


def test_traced_bad_coefficient_is_nan_not_garbage():
    out = jax.jit(jax.vmap(compose.poe, in_axes=(None, None, 0)))(A, A, jnp.array([0.5, 1.5, jnp.nan]))
    assert np.all(np.isfinite(out.mean[0]))
    assert np.all(np.isnan(out.mean[1])) and np.all(np.isnan(out.std[1]))
    assert np.all(np.isnan(out.mean[2]))


def test_checked_raises_under_jit_and_vmap():
    safe = compose.checked(jax.vmap(compose.kl_reg, in_axes=(None, None, 0)))
    np.testing.assert_allclose(safe(A, A, jnp.array([0.0, 1.0])).mean, 0.0)
    with pytest.raises(ValueError, match=r"beta must be in \[0.0, inf\]; got beta="):
        safe(A, A, jnp.array([1.0, -2.0]))
    bad_prior = DiagGaussian(jnp.zeros((2, 3)), -jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"prior.std must be > 0"):
        compose.checked(compose.poe)(A, bad_prior, 0.5)

    def program(actor, alpha):
        return compose.additive(actor, actor, alpha).mean.sum()

    err, _ = jax.jit(checkify.checkify(program))(A, 3.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        err.throw()


def test_checks_do_not_depend_on_where_a_kernel_was_first_traced():
    """A kernel traced plainly first still raises under checkify later, and one traced under
    checkify first still runs plainly (NaN-poisoned) later; the module-level jitted
    select.kl_budget obeys checkify as well."""
    from poe_jax.kernels import selectors as select

    kernel = jax.jit(lambda actor, alpha: compose.poe(actor, actor, alpha).mean)
    assert np.isnan(np.asarray(kernel(A, 1.5))).all()  # plain trace first: poisoned, no error
    err, _ = jax.jit(checkify.checkify(kernel))(A, 1.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        err.throw()
    assert np.isnan(np.asarray(kernel(A, 1.5))).all()  # and plain again after
    later = jax.jit(lambda actor, beta: compose.kl_reg(actor, actor, beta).mean)
    err, _ = jax.jit(checkify.checkify(later))(A, -1.0)  # checkify first
    with pytest.raises(ValueError, match="beta must be in"):
        err.throw()
    assert np.isnan(np.asarray(later(A, -1.0))).all()
    with pytest.raises(ValueError, match="alpha must be in"):  # concrete coefficients raise as they arrive
        err, _ = checkify.checkify(select.kl_budget)(A, A, jnp.array([0.5, 2.0]), 0.1)
        err.throw()
    # Under vmap over lanes of different rules, a discarded branch never raises.
    x = compose.RuleInputs(A, A, jnp.array([0.5, 3.0]))
    f = jax.vmap(lambda i, p: compose.switch(("poe", "kl_reg"), i, x._replace(param=p)).mean)
    err, out = jax.jit(checkify.checkify(f))(jnp.array([0, 1]), jnp.array([0.5, 3.0]))
    err.throw()
    assert np.isfinite(np.asarray(out)).all()


def test_non_finite_prior_falls_back_and_is_counted():
    actor = DiagGaussian(jnp.arange(12.0).reshape(4, 3), jnp.full((4, 3), 0.5))
    prior = DiagGaussian(
        jnp.array([[1.0, 1, 1], [jnp.nan, 1, 1], [1, 1, 1], [1, jnp.inf, 1]]),
        jnp.array([[1.0, 1, 1], [1, 1, 1], [1, 1, jnp.nan], [1, 1, 1]]),
    )
    bad = np.array([False, True, True, True])  # per state: some dimension is invalid
    bad_entry = ~(np.isfinite(prior.mean) & np.isfinite(prior.std))

    @jax.jit
    def run(actor, prior, alpha):
        out = {}
        for name in CLOSED_FORM:
            res = compose.apply(name, actor, prior, alpha)
            out[name] = (res.dist, res.fallback)
        return out

    for name, (d, fb) in run(actor, prior, 0.7).items():
        np.testing.assert_array_equal(fb, bad, err_msg=name)
        assert np.all(np.isfinite(d.mean)) and np.all(np.isfinite(d.std)), name
        # The invalid entries are the actor's; valid entries of the same state are composed.
        np.testing.assert_array_equal(d.mean[bad_entry], actor.mean[bad_entry], err_msg=name)
        np.testing.assert_array_equal(d.std[bad_entry], actor.std[bad_entry], err_msg=name)
        if name == "poe_adaptive":  # alpha(s) sees the whole state's KL, so valid dims differ too
            continue
        ref = compose.RULES[name](actor, DiagGaussian(jnp.ones((4, 3)), jnp.ones((4, 3))), 0.7)
        np.testing.assert_allclose(d.mean[~bad_entry], ref.mean[~bad_entry], rtol=1e-6, err_msg=name)
    # Gradients through the fallback stay finite too (no NaN from the masked branch).
    g = jax.grad(lambda m: compose.poe(DiagGaussian(m, actor.std), prior, 0.7).mean.sum())(actor.mean)
    assert np.all(np.isfinite(g))
    # Traced prior with std <= 0 counts as invalid and falls back as well.
    neg = DiagGaussian(jnp.ones((4, 3)), jnp.full((4, 3), -1.0))
    res = jax.jit(lambda a, p: compose.apply("poe", a, p, 0.5))(actor, neg)
    assert bool(jnp.all(res.fallback))
    np.testing.assert_array_equal(res.dist.mean, actor.mean)


def test_unknown_rule_lists_known():
    with pytest.raises(KeyError, match="unknown rule 'pow'; known rules: additive, critic_greedy, critic_prior, frozen, iql_guided, kl_reg, poe, poe_"):
        compose.RULES["pow"]


# ----------------------------------------------------------------------------- jit / vmap


def test_vmap_over_grids_goals_and_seeds_compiles_once():
    traces = []

    def kernel(actor, priors, alphas):
        traces.append(1)
        over_alpha = jax.vmap(compose.poe, in_axes=(None, None, 0))
        return jax.vmap(over_alpha, in_axes=(None, 0, None))(actor, priors, alphas)

    f = jax.jit(kernel)
    actor = DiagGaussian(jnp.zeros((8, 3)), jnp.ones((8, 3)))
    priors = DiagGaussian(jnp.ones((5, 8, 3)), jnp.full((5, 8, 3), 2.0))  # 5 goals
    out = f(actor, priors, jnp.linspace(0, 1, 7))
    assert out.mean.shape == (5, 7, 8, 3)
    f(actor, DiagGaussian(priors.mean + 1, priors.std), jnp.linspace(0.1, 0.9, 7))
    assert len(traces) == 1
    assert f._cache_size() == 1

    # Seeds: vmap over PRNG keys of sampling from the composed policy.
    def sample_actions(key, alpha):
        d = compose.poe(actor, priors, alpha)
        return d.sample(key)

    keys = jax.random.split(jax.random.key(0), 4)
    acts = jax.jit(jax.vmap(sample_actions, in_axes=(0, None)))(keys, 0.5)
    assert acts.shape == (4, 5, 8, 3)
    assert not np.allclose(acts[0], acts[1])


def test_switch_makes_the_rule_data():
    k = jax.random.split(jax.random.key(1), 2)
    actor = DiagGaussian(jax.random.normal(k[0], (6, 3)), jnp.full((6, 3), 0.3))
    prior = DiagGaussian(jax.random.normal(k[1], (6, 3)), jnp.full((6, 3), 0.7))
    idx = jnp.arange(len(CLOSED_FORM))
    params = jnp.array([0.0, 0.0, 0.4, 0.4, 2.0, 0.3])
    by_index = lambda i, a, g, p: compose.switch(CLOSED_FORM, i, compose.RuleInputs(a, g, p))  # noqa: E731
    out = jax.jit(jax.vmap(by_index, in_axes=(0, None, None, 0)))(idx, actor, prior, params)
    for i, name in enumerate(CLOSED_FORM):
        ref = compose.RULES[name](actor, prior, params[i])
        np.testing.assert_allclose(out.mean[i], ref.mean, rtol=1e-6)
        np.testing.assert_allclose(out.std[i], ref.std, rtol=1e-6)


def test_poe_adaptive_matches_a_float64_root_finder():
    """poe_adaptive(eps): per state, alpha solves KL(poe(alpha) || actor) = eps (float64 brentq
    reference), alpha = 1 when the whole prior is within budget, eps = 0 is the actor."""
    from scipy.optimize import brentq

    k = jax.random.split(jax.random.key(7), 3)
    actor = DiagGaussian(jax.random.normal(k[0], (64, 3)), 0.1 + jax.random.uniform(k[1], (64, 3)))
    near = jnp.arange(64)[:, None] < 16  # a quarter of the priors agree with the actor: alpha = 1 there
    prior = DiagGaussian(jnp.where(near, actor.mean + 0.01, 2.0 * jax.random.normal(k[2], (64, 3))),
                         jnp.where(near, actor.std, 0.5))
    eps = 0.2
    out = jax.jit(compose.poe_adaptive)(actor, prior, eps)
    mt, st, mg, sg = (np.asarray(x, np.float64) for x in (actor.mean, actor.std, prior.mean, prior.std))

    def kl64(a, i):
        lam = (1 - a) / st[i] ** 2 + a / sg[i] ** 2
        mu = ((1 - a) * mt[i] / st[i] ** 2 + a * mg[i] / sg[i] ** 2) / lam
        v = 1 / lam
        return float(np.sum(0.5 * (v / st[i] ** 2 + (mu - mt[i]) ** 2 / st[i] ** 2 - 1 - np.log(v / st[i] ** 2))))

    full = 0
    for i in range(64):
        a = 1.0 if kl64(1.0, i) <= eps else brentq(lambda x: kl64(x, i) - eps, 0.0, 1.0, xtol=1e-12)
        full += a == 1.0
        lam = (1 - a) / st[i] ** 2 + a / sg[i] ** 2
        mu = ((1 - a) * mt[i] / st[i] ** 2 + a * mg[i] / sg[i] ** 2) / lam
        np.testing.assert_allclose(out.mean[i], mu, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out.std[i], lam ** -0.5, rtol=1e-4)
    assert 0 < full < 64  # both regimes are exercised
    kls = np.asarray(kl(out, actor))
    assert np.all(kls <= eps * (1 + 1e-4))
    zero = compose.poe_adaptive(actor, prior, 0.0)
    np.testing.assert_allclose(zero.mean, actor.mean, atol=1e-6)
    with pytest.raises(ValueError, match="budget must be in"):
        compose.poe_adaptive(actor, prior, -0.1)
    assert np.isnan(float(compose.alpha_equiv("poe_adaptive", 0.2)))


def test_bad_actor_std_under_jit_is_nan_and_shapes_are_named():
    """Like an invalid coefficient, a non-positive (or NaN) actor std gives NaN under jit for every
    rule, never a plausible number; mismatched actor/prior shapes raise, eagerly and when traced."""
    actor = DiagGaussian(jnp.zeros((2, 3)), jnp.array([[1.0, -0.3, 0.0], [1.0, 1.0, 1.0]]))
    prior = DiagGaussian(jnp.ones((2, 3)), jnp.ones((2, 3)))
    for name in CLOSED_FORM:
        out = jax.jit(lambda a, g, name=name: compose.RULES[name](a, g, 0.5))(actor, prior)
        assert np.isnan(np.asarray(out.mean)[0, 1:]).all() and np.isnan(np.asarray(out.std)[0, 1:]).all(), name
        assert np.isfinite(np.asarray(out.mean)[1]).all() and np.isfinite(np.asarray(out.std)[0, 0]), name
    small = DiagGaussian(jnp.ones((2, 1)), jnp.ones((2, 1)))
    for call in (lambda: compose.poe(actor, small, 0.5), lambda: jax.jit(compose.poe)(actor, small, 0.5)):
        with pytest.raises(ValueError, match=r"actor and prior must have the same action size .* actor.mean of "
                                             r"shape \(2, 3\) and prior.mean of shape \(2, 1\)"):
            call()
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        compose.kl_reg(actor, DiagGaussian(jnp.ones((5, 3)), jnp.ones((5, 3))), 1.0)
