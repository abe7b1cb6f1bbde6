"""Closed-form composition of a frozen Gaussian actor with a Gaussian prior.

Every rule has the signature ``rule(actor, prior, param) -> DiagGaussian`` where
``actor`` and ``prior`` are :class:`~poe_jax.gaussian.DiagGaussian` over
``[..., act_dim]`` and ``param`` is a scalar or an array broadcastable against
``[..., act_dim]`` (use ``alpha[..., None]`` for a per-state coefficient). Rules
are pure, jittable and vmappable, e.g. over a coefficient grid::

    jax.vmap(compose.poe, in_axes=(None, None, 0))(actor, prior, alphas)

Definitions (per state and action dimension, precisions ``lam = 1/std**2``):

=============  ==========  ====================================================
rule           param       result
=============  ==========  ====================================================
``frozen``     --          the actor
``prior_only`` --          the prior
``additive``   alpha       mean (1-a)mu_t + a mu_g, std (1-a)s_t + a s_g
``poe``        alpha       lam = (1-a)lam_t + a lam_g, mu = ((1-a)lam_t mu_t + a lam_g mu_g)/lam
``kl_reg``     beta >= 0   lam = lam_t + b lam_g,  mu = (lam_t mu_t + b lam_g mu_g)/lam
``poe_adaptive`` eps >= 0  ``poe`` at a per-state a(s): the largest a in [0, 1] with
                           KL(poe(a)(s) || pi_t(s)) <= eps nats (adaptive alpha)
=============  ==========  ====================================================

``poe(a).mean == kl_reg(a/(1-a)).mean`` and ``kl_reg(..).var == (1-a) poe(a).var``.
``alpha = 1`` is exact (the prior for ``poe``); ``beta = inf`` is the limit
``N(mu_g, 0)``, a point mass on the prior mean.

Invalid input. Python cannot raise on values it has not seen, so validation
works in three layers:

* Concrete (non-traced) inputs are checked eagerly: a coefficient outside its
  range or NaN, or a standard deviation <= 0, raises :class:`ValueError` naming
  the parameter and the offending value.
* Inside ``jit``/``vmap`` without checking, an invalid coefficient poisons its
  output with NaN (never a plausible number); a non-positive actor std is
  likewise propagated as NaN.
* :func:`checked` (or the :func:`checking` context around your own
  ``checkify.checkify``) turns the same checks into errors raised under ``jit``.

A prior entry that is non-finite, has std <= 0 (when traced), or a degenerate
std outside ``(STD_MIN, STD_FLAT) = (1e-18, 1e18)`` is treated as
uninformative in its action dimension: the output there is the frozen actor's
(for ``poe``/``kl_reg`` this is exactly the product with a flat expert).
:func:`apply` reports per state whether any dimension fell back, so callers
(the rollout) can count fallbacks. NaN from the prior never reaches the output.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from poe_jax.gaussian import DiagGaussian, kl

__all__ = [
    "RULES",
    "RULE_NAMES",
    "Composed",
    "Rule",
    "additive",
    "alpha_equiv",
    "alpha_to_beta",
    "apply",
    "beta_to_alpha",
    "by_index",
    "checked",
    "checking",
    "frozen",
    "get",
    "kl_reg",
    "poe",
    "prior_only",
    "prior_valid",
]

_CHECKING: contextvars.ContextVar[bool] = contextvars.ContextVar("poe_jax_checking", default=False)


# --------------------------------------------------------------------------- validation


def _is_traced(x) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _fmt(values: np.ndarray) -> str:
    flat = np.ravel(values)
    shown = ", ".join(repr(float(v)) for v in flat[:4])
    return shown if flat.size <= 4 else f"{shown}, ... ({flat.size} bad values)"


def _coefficient(name: str, value, lo: float, hi: float, dtype) -> jax.Array:
    """Validate a rule coefficient in ``[lo, hi]`` (see module docstring)."""
    if not _is_traced(value):
        arr = np.asarray(value, dtype=np.float64)
        bad = ~((arr >= lo) & (arr <= hi))  # NaN fails both comparisons
        if bad.any():
            raise ValueError(f"{name} must be in [{lo}, {hi}]; got {name}={_fmt(arr[bad])}")
        return jnp.asarray(value, dtype)
    value = jnp.asarray(value, dtype)
    ok = (value >= lo) & (value <= hi)
    if _CHECKING.get():
        checkify.check(jnp.all(ok), f"{name} must be in [{lo}, {hi}]; got {name}={{}}", value)
        return value
    return jnp.where(ok, value, jnp.nan)


def _check_std(name: str, d: DiagGaussian) -> None:
    """Eager (or checked) check that ``d.std > 0``; ``name`` is 'actor' or 'prior'."""
    if not _is_traced(d):
        std = np.asarray(d.std)
        bad = std <= 0
        if bad.any():
            raise ValueError(f"{name}.std must be > 0; got {name}.std={_fmt(std[bad])}")
        if name == "actor":
            mean = np.asarray(d.mean)
            if not (np.isfinite(std).all() and np.isfinite(mean).all()):
                raise ValueError("actor.mean and actor.std must be finite; got non-finite values")
    elif _CHECKING.get():
        checkify.check(jnp.all(d.std > 0), f"{name}.std must be > 0; got {name}.std={{}}", d.std)


def prior_valid(prior: DiagGaussian) -> jax.Array:
    """``[...]`` bool: every action dim of the prior is valid (finite, ``STD_MIN < std < STD_FLAT``)."""
    return jnp.all(_entry_valid(prior), axis=-1)


def _guard(actor: DiagGaussian, prior: DiagGaussian, param=None):
    """Validate inputs; return (safe prior, [..., act_dim] validity mask)."""
    _check_std("actor", actor)
    if not _is_traced(prior.std):
        std = np.asarray(prior.std)
        finite = np.isfinite(std)
        if (std[finite] <= 0).any():
            raise ValueError(f"prior.std must be > 0; got prior.std={_fmt(std[finite & (std <= 0)])}")
    elif _CHECKING.get():
        checkify.check(
            jnp.all(~jnp.isfinite(prior.std) | (prior.std > 0)),
            "prior.std must be > 0; got prior.std={}",
            prior.std,
        )
    # Element-wise: an invalid prior entry is uninformative (lam_g = 0) in that action
    # dimension, so the product keeps the actor there. Element-wise rather than per
    # state keeps the kernel a single pass (a per-state reduce re-reads the prior).
    ok = _entry_valid(prior)
    # Invalid entries get the actor's mean and a neutral unit std (never an
    # underflowing one); every rule then selects the actor's values there.
    safe = DiagGaussian(jnp.where(ok, prior.mean, actor.mean), jnp.where(ok, prior.std, 1.0))
    return safe, ok


def _fallback(ok: jax.Array, out: DiagGaussian, actor: DiagGaussian) -> DiagGaussian:
    return DiagGaussian(jnp.where(ok, out.mean, actor.mean), jnp.where(ok, out.std, actor.std))


# --------------------------------------------------------------------------- rules


# A prior entry is usable when STD_MIN < std < STD_FLAT and its mean is finite. Above
# STD_FLAT it is a flat expert, whose product with the actor is the actor: the same
# as an invalid entry. Below STD_MIN its variance nears float32 underflow; treating
# it as invalid (counted as a fallback) keeps D > 0 in the blend for every alpha < 1
# without a clamp on the hot path (actors clamp log-std >= -20, i.e. std >= 2e-9).
STD_MIN = 1e-18
STD_FLAT = 1e18


def _entry_valid(prior: DiagGaussian) -> jax.Array:
    """``[..., act_dim]`` bool: finite mean and ``STD_MIN < std < STD_FLAT``.

    ``x - x == 0`` is false exactly for NaN and +-inf, and is cheaper on XLA:CPU than
    ``isfinite``; the std comparisons are false for NaN.
    """
    return (prior.std > STD_MIN) & (prior.std < STD_FLAT) & (prior.mean - prior.mean == 0)


def _var(std: jax.Array) -> jax.Array:
    """``std**2``. An actor std that underflows gives 0, the exact limit (the actor
    dominates); prior stds are kept above ``STD_MIN`` by :func:`_entry_valid`."""
    return std * std


def _blend(actor: DiagGaussian, prior: DiagGaussian, w_t, w_g):
    """Precision-weighted product with ``lam = w_t lam_t + w_g lam_g``.

    Written with variances: ``mu = (w_t v_g mu_t + w_g v_t mu_g) / D`` and
    ``1/sqrt(lam) = s_t s_g / sqrt(D)`` with ``D = w_t v_g + w_g v_t``. Each output
    has exactly one divide or rsqrt, used once, so XLA fuses each output into one
    pass over memory with no materialised temporaries (the precision form
    materialises ``1/v`` and the weight; see benchmarks/compose_throughput.py).
    """
    v_t, v_g = _var(actor.std), _var(prior.std)
    a_t, a_g = w_t * v_g, w_g * v_t
    d = a_t + a_g
    mean = (a_t * actor.mean + a_g * prior.mean) / d
    # s_t s_g / sqrt(D) as s_t sqrt(v_g / D): a divide and a sqrt are ~2x cheaper than
    # rsqrt on XLA:CPU, and v_g / D <= 1 / w_t stays bounded.
    std = actor.std * jnp.sqrt(v_g / d)
    return mean, std


def _lerp(x_t: jax.Array, x_g: jax.Array, w) -> jax.Array:
    """``(1 - w) x_t + w x_g``: exact at ``w = 0`` and ``w = 1`` (no cancellation)."""
    return (1.0 - w) * x_t + w * x_g


def frozen(actor: DiagGaussian, prior: DiagGaussian | None = None, param=None) -> DiagGaussian:
    """The frozen actor, unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> a = DiagGaussian(jnp.array([0.5]), jnp.array([0.1]))
        >>> g = DiagGaussian(jnp.array([-1.0]), jnp.array([1.0]))
        >>> frozen(a, g).mean.tolist()
        [0.5]
    """
    _check_std("actor", actor)
    return actor


def prior_only(actor: DiagGaussian, prior: DiagGaussian, param=None) -> DiagGaussian:
    """The goal prior alone (the frozen actor's value where a prior entry is invalid).

    Example:
        >>> import jax.numpy as jnp
        >>> a = DiagGaussian(jnp.array([0.5]), jnp.array([0.1]))
        >>> g = DiagGaussian(jnp.array([-1.0]), jnp.array([1.0]))
        >>> prior_only(a, g).mean.tolist()
        [-1.0]
    """
    safe, ok = _guard(actor, prior)
    return _fallback(ok, safe, actor)


def additive(actor: DiagGaussian, prior: DiagGaussian, alpha) -> DiagGaussian:
    """Precision-blind blend: mean ``(1-a)mu_t + a mu_g``, std ``(1-a)s_t + a s_g``.

    Args:
        actor: frozen actor ``[..., act_dim]``.
        prior: goal prior ``[..., act_dim]``.
        alpha: coefficient in ``[0, 1]``.

    Example:
        >>> import jax.numpy as jnp
        >>> a = DiagGaussian(jnp.array([0.0]), jnp.array([0.1]))
        >>> g = DiagGaussian(jnp.array([1.0]), jnp.array([1.0]))
        >>> d = additive(a, g, 0.5)
        >>> [round(float(d.mean[0]), 4), round(float(d.std[0]), 4)]
        [0.5, 0.55]
    """
    alpha = _coefficient("alpha", alpha, 0.0, 1.0, actor.mean.dtype)
    safe, ok = _guard(actor, prior)
    mean = _lerp(actor.mean, safe.mean, alpha)
    std = _lerp(actor.std, safe.std, alpha)
    return _fallback(ok, DiagGaussian(mean, std), actor)


def poe(actor: DiagGaussian, prior: DiagGaussian, alpha) -> DiagGaussian:
    """Product of experts ``pi ∝ pi_t^(1-a) pi_g^a`` in precision form.

    ``lam = (1-a) lam_t + a lam_g`` and ``mu = mu_t + (a lam_g / lam)(mu_g - mu_t)``:
    a precision-weighted convex combination, so a vague prior (small ``lam_g``)
    barely moves the actor.

    Args:
        actor: frozen actor ``[..., act_dim]``.
        prior: goal prior ``[..., act_dim]``.
        alpha: coefficient in ``[0, 1]``; 0 gives the actor, 1 the prior.

    Example:
        >>> import jax.numpy as jnp
        >>> a = DiagGaussian(jnp.array([0.0]), jnp.array([1.0]))
        >>> g = DiagGaussian(jnp.array([1.0]), jnp.array([1.0]))
        >>> d = poe(a, g, 0.5)
        >>> [round(float(d.mean[0]), 4), round(float(d.std[0]), 4)]
        [0.5, 1.0]
    """
    alpha = _coefficient("alpha", alpha, 0.0, 1.0, actor.mean.dtype)
    safe, ok = _guard(actor, prior)
    mean, std = _blend(actor, safe, 1.0 - alpha, alpha)
    # Exact end points: alpha = 0 is the actor and alpha = 1 the prior, bit for bit.
    mean = jnp.where(alpha == 0, actor.mean, jnp.where(alpha == 1, safe.mean, mean))
    std = jnp.where(alpha == 0, actor.std, jnp.where(alpha == 1, safe.std, std))
    return _fallback(ok, DiagGaussian(mean, std), actor)


def kl_reg(actor: DiagGaussian, prior: DiagGaussian, beta) -> DiagGaussian:
    """KL-regularised adaptation ``argmax_pi b E_pi[log pi_g] - KL(pi || pi_t)``.

    The maximiser is ``pi ∝ pi_t pi_g^b``: ``lam = lam_t + b lam_g``,
    ``mu = mu_t + (b lam_g / lam)(mu_g - mu_t)``. ``beta = inf`` returns the limit,
    a point mass ``N(mu_g, 0)``.

    Args:
        actor: frozen actor ``[..., act_dim]``.
        prior: goal prior ``[..., act_dim]``.
        beta: coefficient in ``[0, inf]``.

    Example:
        >>> import jax.numpy as jnp
        >>> a = DiagGaussian(jnp.array([0.0]), jnp.array([1.0]))
        >>> g = DiagGaussian(jnp.array([1.0]), jnp.array([1.0]))
        >>> d = kl_reg(a, g, 1.0)  # same mean as poe(alpha=0.5), half the variance
        >>> [round(float(d.mean[0]), 4), round(float(d.std[0]) ** 2, 4)]
        [0.5, 0.5]
    """
    beta = _coefficient("beta", beta, 0.0, math.inf, actor.mean.dtype)
    safe, ok = _guard(actor, prior)
    # lam = lam_t + b lam_g = (1 + b) * ((1-a) lam_t + a lam_g) with a = b / (1 + b):
    # the PoE blend at the equivalent alpha, with variance shrunk by 1 / (1 + b).
    infinite = jnp.isinf(beta)
    one_plus = 1.0 + jnp.where(infinite, 0.0, beta)
    a = jnp.where(infinite, 1.0, beta / one_plus)
    mean, std = _blend(actor, safe, 1.0 - a, a)
    std = std * jnp.where(infinite, 0.0, jax.lax.rsqrt(one_plus))
    mean = jnp.where(beta == 0, actor.mean, jnp.where(infinite, safe.mean, mean))
    std = jnp.where(beta == 0, actor.std, std)
    return _fallback(ok, DiagGaussian(mean, std), actor)


def adaptive_alpha(actor: DiagGaussian, prior: DiagGaussian, budget, rule: str = "poe",
                   num_iters: int = 20) -> jax.Array:
    """Per state, the largest ``alpha`` in [0, 1] with ``KL(rule(alpha)(s) || actor(s)) <= budget``.

    For ``poe`` (and ``additive``) the KL is nondecreasing in ``alpha``: the composed
    policies lie on a line in natural parameters that starts at the actor. Bisection
    then finds the boundary to within ``2**-num_iters``; the returned ``alpha`` is
    always within budget (``alpha = 1`` when the whole prior is).

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
    fn = poe if rule == "poe" else additive
    dtype = actor.mean.dtype
    batch = actor.mean.shape[:-1]
    budget = jnp.asarray(budget, dtype)
    if budget.ndim == len(batch) + 1:  # a per-state [..., 1] (or per-dim) budget: one value per state
        budget = budget[..., 0]
    budget = jnp.broadcast_to(budget, batch)

    def kl_at(alpha):
        return kl(fn(actor, prior, alpha[..., None]), actor)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        inside = kl_at(mid) <= budget
        return jnp.where(inside, mid, lo), jnp.where(inside, hi, mid)

    one = jnp.ones(batch, dtype)
    lo, _ = jax.lax.fori_loop(0, num_iters, body, (jnp.zeros(batch, dtype), one))
    return jnp.where(kl_at(one) <= budget, one, lo)


def poe_adaptive(actor: DiagGaussian, prior: DiagGaussian, budget) -> DiagGaussian:
    """``poe`` at a per-state ``alpha(s)``: the largest alpha whose KL to the actor is within ``budget``.

    A trust region instead of a fixed coefficient: where the prior agrees with the
    actor, alpha goes up to 1; where it disagrees (or is confidently wrong), alpha
    shrinks so that the composed policy moves at most ``budget`` nats from the
    frozen actor (:func:`adaptive_alpha`, 20 bisection steps).

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
    budget = _coefficient("budget", budget, 0.0, math.inf, actor.mean.dtype)
    alpha = adaptive_alpha(actor, prior, budget)
    # A zero budget is the actor exactly (float32 KL of near-equal Gaussians can round to <= 0).
    positive = budget > 0
    alpha = jnp.where(positive[..., 0] if positive.ndim == alpha.ndim + 1 else positive, alpha, 0.0)
    return poe(actor, prior, alpha[..., None])


# --------------------------------------------------------------------------- coefficients


def alpha_to_beta(alpha):
    """``beta = alpha / (1 - alpha)`` (``alpha = 1`` maps to ``inf``).

    Example:
        >>> float(alpha_to_beta(0.5)), float(alpha_to_beta(1.0))
        (1.0, inf)
    """
    alpha = jnp.asarray(alpha)
    return jnp.where(alpha >= 1.0, jnp.inf, alpha / jnp.where(alpha >= 1.0, 1.0, 1.0 - alpha))


def beta_to_alpha(beta):
    """``alpha = beta / (1 + beta)`` (``beta = inf`` maps to 1).

    Example:
        >>> float(beta_to_alpha(1.0)), float(beta_to_alpha(float("inf")))
        (0.5, 1.0)
    """
    beta = jnp.asarray(beta)
    return jnp.where(jnp.isinf(beta), 1.0, beta / (1.0 + jnp.where(jnp.isinf(beta), 0.0, beta)))


# --------------------------------------------------------------------------- registry


class Rule(NamedTuple):
    """A registered composition rule.

    Attributes:
        name: registry key.
        fn: ``fn(actor, prior, param) -> DiagGaussian``.
        param: the coefficient's name (``"alpha"``, ``"beta"``) or ``None``.
        lo, hi: the coefficient's valid range.
        uses_prior: whether the composed policy depends on the goal prior. A grid runs a
            rule that does not (``frozen``, the critic-only rules) once per (goal, shift,
            seed, episode) and serves its episodes to every prior quality.
    """

    name: str
    fn: Callable[..., DiagGaussian]
    param: str | None
    lo: float = 0.0
    hi: float = 1.0
    uses_prior: bool = True

    def __call__(self, actor, prior, param=None):
        return self.fn(actor, prior, param)

    def validate(self, values) -> np.ndarray:
        """Check a grid of coefficients eagerly; returns it as float64 array."""
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if self.param is None:
            return arr
        bad = ~((arr >= self.lo) & (arr <= self.hi))
        if bad.any():
            raise ValueError(
                f"rule {self.name!r}: {self.param} must be in [{self.lo}, {self.hi}]; "
                f"got {self.param}={_fmt(arr[bad])}"
            )
        return arr


def alpha_equiv(rule: str, param):
    """The PoE-equivalent coefficient of ``rule(param)`` (same mean for ``kl_reg``).

    ``frozen`` is 0, ``prior_only`` is 1, ``kl_reg(beta)`` is ``beta/(1+beta)``;
    ``poe_adaptive`` has no fixed one (NaN: its alpha varies per state).
    """
    rule = get(rule).name
    if rule == "frozen":
        return jnp.zeros_like(jnp.asarray(param, float))
    if rule == "prior_only":
        return jnp.ones_like(jnp.asarray(param, float))
    if rule == "kl_reg":
        return beta_to_alpha(param)
    if rule == "poe_adaptive":
        return jnp.full_like(jnp.asarray(param, float), jnp.nan)
    return jnp.asarray(param)


class _Registry(Mapping[str, Rule]):
    """Read-only name -> :class:`Rule` map whose misses list the known names."""

    def __init__(self, rules: list[Rule]):
        self._rules = {r.name: r for r in rules}

    def __getitem__(self, name: str) -> Rule:
        try:
            return self._rules[name]
        except KeyError:
            raise KeyError(
                f"unknown rule {name!r}; known rules: {', '.join(sorted(self._rules))}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"RULES({', '.join(self._rules)})"


RULES = _Registry(
    [
        Rule("frozen", frozen, None, uses_prior=False),
        Rule("prior_only", prior_only, None),
        Rule("additive", additive, "alpha", 0.0, 1.0),
        Rule("poe", poe, "alpha", 0.0, 1.0),
        Rule("kl_reg", kl_reg, "beta", 0.0, math.inf),
        Rule("poe_adaptive", poe_adaptive, "budget", 0.0, math.inf),
    ]
)
RULE_NAMES: tuple[str, ...] = tuple(RULES)


def get(name: str | Rule) -> Rule:
    """Look a rule up by name (``KeyError`` lists the known rules)."""
    return name if isinstance(name, Rule) else RULES[name]


class Composed(NamedTuple):
    """Result of :func:`apply`: the composed policy and the per-state fallback mask."""

    dist: DiagGaussian
    fallback: jax.Array  # [...] bool: some prior dimension was invalid, the actor was used there


def apply(rule: str | Rule, actor: DiagGaussian, prior: DiagGaussian, param=None) -> Composed:
    """Compose and report where the prior was invalid (for counting fallbacks)."""
    r = get(rule)
    return Composed(r.fn(actor, prior, param), ~prior_valid(prior))


def by_index(index, actor: DiagGaussian, prior: DiagGaussian, param) -> DiagGaussian:
    """Rule chosen by traced integer ``index`` into :data:`RULE_NAMES`.

    The rule is data: ``jax.vmap(by_index)`` over lanes with different rules is
    one program (``lax.switch`` becomes a select under ``vmap``). ``param`` is
    interpreted by the chosen rule (ignored for ``frozen``/``prior_only``).
    """
    param = jnp.asarray(param, actor.mean.dtype)
    branches = [functools.partial(_by_index_branch, RULES[n].fn) for n in RULE_NAMES]
    return jax.lax.switch(index, branches, actor, prior, param)


def _by_index_branch(fn, actor, prior, param):
    return fn(actor, prior, param)


# --------------------------------------------------------------------------- checked mode


@contextlib.contextmanager
def checking():
    """Emit ``checkify`` checks from rules traced inside this context.

    Use around a ``checkify.checkify``-transformed call of your own program::

        with compose.checking():
            err, out = jax.jit(checkify.checkify(my_program))(...)
        err.throw()
    """
    token = _CHECKING.set(True)
    try:
        yield
    finally:
        _CHECKING.reset(token)


def checked(fn: Callable) -> Callable:
    """Jitted ``fn`` whose invalid inputs raise ``ValueError`` even when traced.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> a = DiagGaussian(jnp.zeros(2), jnp.ones(2))
        >>> safe_vmapped = checked(jax.vmap(poe, in_axes=(None, None, 0)))
        >>> safe_vmapped(a, a, jnp.array([0.5, 1.5]))
        Traceback (most recent call last):
        ...
        jax._src.checkify.JaxRuntimeError: alpha must be in [0.0, 1.0]; got alpha=1.5...
    """

    def traced(*args, **kwargs):
        with checking():
            return fn(*args, **kwargs)

    compiled = jax.jit(checkify.checkify(traced))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        err, out = compiled(*args, **kwargs)
        err.throw()
        return out

    return wrapper
