"""The closed-form rules and the one rule registry.

Every rule has the signature ``rule(actor, prior, param) -> DiagGaussian`` where
``actor`` and ``prior`` are :class:`~poe_jax.kernels.gaussian.DiagGaussian` over
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
=============  ==========  ====================================================

``poe_adaptive`` (a per-state alpha) is registered in :mod:`poe_jax.kernels.selectors`, the critic
rules in :mod:`poe_jax.kernels.critic_rules`, both into :data:`RULES`. Dispatch over a grid's rules
(:func:`~poe_jax.kernels.dispatch.switch`) is in :mod:`poe_jax.kernels.dispatch`.

``poe(a).mean == kl_reg(a/(1-a)).mean`` and ``kl_reg(..).var == (1-a) poe(a).var``.
``alpha = 1`` is exact (the prior for ``poe``); ``beta = inf`` is the limit
``N(mu_g, 0)``, a point mass on the prior mean.

Invalid input. Python cannot raise on values it has not seen, so validation
works in three layers:

* Concrete (non-traced) inputs are checked eagerly: a coefficient outside its
  range or NaN, or a standard deviation <= 0, raises :class:`ValueError` naming
  the parameter and the offending value.
* Inside ``jit``/``vmap``, an invalid coefficient poisons its output with NaN
  (never a plausible number); a non-positive actor std is likewise propagated
  as NaN.
* Under ``checkify.checkify`` (or with :func:`checked`) the same checks raise,
  wherever the function was traced before: they are ``checkify.debug_check``,
  which cost nothing outside checkify.

A prior entry that is non-finite, has std <= 0 (when traced), or a degenerate
std outside ``(STD_MIN, STD_FLAT) = (1e-18, 1e18)`` is treated as
uninformative in its action dimension: the output there is the frozen actor's
(for ``poe``/``kl_reg`` this is exactly the product with a flat expert).
:func:`poe_jax.kernels.dispatch.apply` reports per state whether any dimension fell back, so callers
(the rollout) can count fallbacks. NaN from the prior never reaches the output.
"""


from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from poe_jax.kernels.gaussian import DiagGaussian

__all__ = ["RULES", "STD_FLAT", "STD_MIN", "CriticInputs", "Rule", "RuleInputs", "additive", "alpha_equiv",
           "alpha_to_beta", "beta_to_alpha", "check_coefficient", "frozen", "get", "kl_reg", "names", "poe",
           "prior_only", "prior_valid", "register_rule", "unregister_rule"]

# --------------------------------------------------------------------------- validation


def _is_traced(x) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _fmt(values: np.ndarray) -> str:
    flat = np.ravel(values)
    shown = ", ".join(repr(float(v)) for v in flat[:4])
    return shown if flat.size <= 4 else f"{shown}, ... ({flat.size} bad values)"


def check_coefficient(name: str, value, lo: float, hi: float, dtype) -> jax.Array:
    """Validate a coefficient in ``[lo, hi]`` (see module docstring): a concrete value outside (or NaN)
    raises ``ValueError``; a traced one becomes NaN (and fails under checkify)."""
    if not _is_traced(value):
        if isinstance(value, bool) or np.asarray(value).dtype == bool:
            raise ValueError(f"{name} must be a number in [{lo}, {hi}]; got the boolean {name}={value!r}")
        arr = np.asarray(value, dtype=np.float64)
        bad = ~((arr >= lo) & (arr <= hi))  # NaN fails both comparisons
        if bad.any():
            raise ValueError(f"{name} must be in [{lo}, {hi}]; got {name}={_fmt(arr[bad])}")
        return jnp.asarray(value, dtype)
    value = jnp.asarray(value, dtype)
    ok = (value >= lo) & (value <= hi)
    # No trace-time switch: a check that fires under checkify.checkify and is nothing otherwise.
    checkify.debug_check(jnp.all(ok), f"{name} must be in [{lo}, {hi}]; got {name}={{}}", value)
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
    else:
        checkify.debug_check(jnp.all(d.std > 0), f"{name}.std must be > 0; got {name}.std={{}}", d.std)


def prior_valid(prior: DiagGaussian) -> jax.Array:
    """``[...]`` bool: every action dim of the prior is valid (finite, ``STD_MIN < std < STD_FLAT``)."""
    return jnp.all(_entry_valid(prior), axis=-1)


def _check_shapes(actor: DiagGaussian, prior: DiagGaussian) -> None:
    """Shapes are static, so this raises eagerly and at trace time alike."""
    a, g = tuple(np.shape(actor.mean)), tuple(np.shape(prior.mean))
    if not a or not g or a[-1] != g[-1]:
        raise ValueError(f"actor and prior must have the same action size (last axis); got actor.mean of shape {a} "
                         f"and prior.mean of shape {g}")
    try:
        jnp.broadcast_shapes(a, g)  # jnp's: works on symbolic dimensions (jax.export)
    except (ValueError, TypeError):
        raise ValueError(f"actor and prior batch shapes do not broadcast; got actor.mean of shape {a} and prior.mean "
                         f"of shape {g} (vmap over the axis they do not share, e.g. in_axes)") from None


def _check_param_shape(name: str, value, actor: DiagGaussian) -> None:
    """A coefficient of the batch's shape (``[B]``, what the selectors return) is refused: it would
    broadcast against the action axis (per dimension when ``B == act_dim``, an error otherwise). A
    per-state coefficient is ``[..., 1]``; a per-dimension one ``[act_dim]`` or ``[..., act_dim]``."""
    shape, batch = tuple(np.shape(value)), tuple(np.shape(actor.mean))[:-1]
    if shape and shape == batch:
        raise ValueError(f"{name} has the batch's shape {shape}; for one {name} per state pass {name}[..., None] "
                         f"(shape {(*shape, 1)}); for one per action dimension, shape [..., act_dim]")


def _guard(actor: DiagGaussian, prior: DiagGaussian, param=None):
    """Validate inputs; return (safe prior, [..., act_dim] validity mask)."""
    _check_shapes(actor, prior)
    _check_std("actor", actor)
    if not _is_traced(prior.std):
        std = np.asarray(prior.std)
        finite = np.isfinite(std)
        if (std[finite] <= 0).any():
            raise ValueError(f"prior.std must be > 0; got prior.std={_fmt(std[finite & (std <= 0)])}")
    else:
        checkify.debug_check(
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
    """The actor where the prior entry is invalid; NaN where the actor's own std is not > 0."""
    mean = jnp.where(ok, out.mean, actor.mean)
    std = jnp.where(ok, out.std, actor.std)
    return _poison_bad_actor(DiagGaussian(mean, std), actor)


def _poison_bad_actor(out: DiagGaussian, actor: DiagGaussian) -> DiagGaussian:
    """NaN wherever ``actor.std > 0`` fails (a negative, zero or NaN std gives no plausible number)."""
    bad = ~(actor.std > 0)
    return DiagGaussian(jnp.where(bad, jnp.nan, out.mean), jnp.where(bad, jnp.nan, out.std))


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


@jax.custom_jvp
def _blend_core(mu_t, s_t, mu_g, s_g, w_t, w_g):
    """Precision-weighted product with ``lam = w_t lam_t + w_g lam_g``, for ``0 <= s_t`` and ``0 < s_g``.

    Written with variances: ``mu = (w_t v_g mu_t + w_g v_t mu_g) / D`` and
    ``1/sqrt(lam) = s_t s_g / sqrt(D)`` with ``D = w_t v_g + w_g v_t``. Each output
    has exactly one divide or rsqrt, used once, so XLA fuses each output into one
    pass over memory with no materialised temporaries (the precision form
    materialises ``1/v`` and the weight; see benchmarks/compose_throughput.py).
    Its derivative is :func:`_blend_jvp`'s, not this form's (whose ``1/D**2`` overflows).
    """
    v_t, v_g = _var(s_t), _var(s_g)
    a_t, a_g = w_t * v_g, w_g * v_t
    d = a_t + a_g
    mean = (a_t * mu_t + a_g * mu_g) / d
    # s_t s_g / sqrt(D) as s_t sqrt(v_g / D): a divide and a sqrt are ~2x cheaper than
    # rsqrt on XLA:CPU, and v_g / D <= 1 / w_t stays bounded.
    return mean, s_t * jnp.sqrt(v_g / d)


@_blend_core.defjvp
def _blend_jvp(primals, tangents):
    """The blend's derivative as a Jacobian computed from shares and the std *ratio*, never from ``1/D**2``.

    Differentiating :func:`_blend_core`'s form goes through ``1/D**2``, which overflows float32 once
    ``D ~ v**2`` is below ~1e-38: at ``alpha = 0`` with a prior std of 3e-10 the gradients were NaN where
    float64 gives 1e20. Here the variances are divided by ``hi**2``, the wider expert's: the narrower
    expert's weight is ``a = w * 1`` and the wider's ``a = w * rho`` with ``rho = (lo / hi)**2``, so
    ``d = a_t + a_g`` is at least the narrower's weight. With the shares ``k = a_g / d`` (the prior's) and
    ``k_t = a_t / d`` and ``q = (std / s)**2 = c / d`` per expert:

    ``d mean = k_t d mu_t + k d mu_g + (mu_g - mu_t)(2 k k_t (ds_t / s_t - ds_g / s_g) - k q_t dw_t + k_t q_g dw_g)``
    ``d std = k_t sqrt(q_t) ds_t + k sqrt(q_g) ds_g - std (q_t dw_t + q_g dw_g) / 2``

    a sum of terms with no cancellation. The partials are computed on the primal values and the tangents
    enter linearly, so reverse mode multiplies cotangents by the same finite numbers. ``d = 0`` happens
    only at an end point where the narrower expert has weight 0 and ``rho`` underflows (a std ratio under
    ~1e-19): the wider expert then has the whole share, and a partial beyond float32 (about ``1/rho``) is
    held at float32's largest value, so no NaN reaches another gradient.
    """
    mu_t, s_t, mu_g, s_g, w_t, w_g = primals
    mean, std = _blend_core(*primals)
    big = jnp.finfo(mean.dtype).max
    narrow_t = s_t <= s_g
    lo, hi = jnp.where(narrow_t, s_t, s_g), jnp.where(narrow_t, s_g, s_t)
    r = lo / hi
    rho = r * r
    c_t, c_g = jnp.where(narrow_t, 1.0, rho), jnp.where(narrow_t, rho, 1.0)
    d = w_t * c_t + w_g * c_g
    d0 = d == 0
    dd = jnp.where(d0, 1.0, d)
    k = jnp.where(d0, jnp.where(narrow_t, 1.0, 0.0), w_g * c_g / dd)  # the prior's share
    k_t = jnp.where(d0, jnp.where(narrow_t, 0.0, 1.0), w_t * c_t / dd)  # the actor's, without 1 - k
    q_t = jnp.where(d0, jnp.where(narrow_t, big, 1.0 / jnp.where(w_t > 0, w_t, 1.0)), c_t / dd)
    q_g = jnp.where(d0, jnp.where(narrow_t, 1.0 / jnp.where(w_g > 0, w_g, 1.0), big), c_g / dd)
    gap = mu_g - mu_t
    kk = 2.0 * k * k_t
    clip = lambda x: jnp.clip(x, -big, big)  # noqa: E731
    jac_mean = (k_t, k, clip(gap * jnp.where(s_t > 0, kk / jnp.where(s_t > 0, s_t, 1.0), 0.0)),
                clip(-gap * kk / s_g), clip(-gap * k * q_t), clip(gap * k_t * q_g))
    # the std from the ratio form (the primal's 0/0 at d = 0 is the wider expert's std then)
    w_hi = jnp.where(narrow_t, w_g, w_t)
    std_r = jnp.where(d0, hi / jnp.sqrt(jnp.where(w_hi > 0, w_hi, 1.0)), lo / jnp.sqrt(dd))
    jac_std = (k_t * jnp.sqrt(q_t), k * jnp.sqrt(q_g), clip(-0.5 * std_r * q_t), clip(-0.5 * std_r * q_g))
    dmu_t, ds_t, dmu_g, ds_g, dw_t, dw_g = tangents
    dmean = sum(j * t for j, t in zip(jac_mean, (dmu_t, dmu_g, ds_t, ds_g, dw_t, dw_g)))
    dstd = sum(j * t for j, t in zip(jac_std, (ds_t, ds_g, dw_t, dw_g)))
    return (mean, std), (dmean, dstd)


def _blend(actor: DiagGaussian, prior: DiagGaussian, w_t, w_g):
    """Precision-weighted product with ``lam = w_t lam_t + w_g lam_g`` (:func:`_blend_core`), with a flat actor."""
    # An actor entry with std >= STD_FLAT is a flat expert (lam_t = 0), like such a prior entry: its
    # product is the prior's at weight w_g, N(mu_g, s_g^2 / w_g) (its square would overflow float32).
    flat = actor.std >= STD_FLAT
    s_t = jnp.where(flat, 1.0, actor.std)
    shape = jnp.broadcast_shapes(actor.mean.shape, prior.mean.shape, jnp.shape(w_t), jnp.shape(w_g))
    dt = jnp.result_type(actor.mean, prior.mean, w_t, w_g)
    mean, std = _blend_core(*(jnp.broadcast_to(jnp.asarray(x, dt), shape)
                              for x in (actor.mean, s_t, prior.mean, prior.std, w_t, w_g)))
    mean = jnp.where(flat, prior.mean, mean)
    std = jnp.where(flat, prior.std / jnp.sqrt(jnp.where(flat, w_g, 1.0)), std)  # (no inf in the other branch's grad)
    return mean, std


def _in_float32(kernel: Callable) -> Callable:
    """A rule kernel that computes in float32 (or wider) whatever its inputs: integers are promoted to
    float32 (an integer alpha of 0.5 was 0, and the actor came back), and float16 / bfloat16 are computed
    in float32 and cast back (their squares under- or overflow: a std of 1e-4 or 300 gave NaN)."""

    @functools.wraps(kernel)
    def wrapper(actor, prior=None, *rest, **kw):
        dt = jnp.result_type(actor.mean, actor.std, *(() if prior is None else (prior.mean, prior.std)))
        if jnp.issubdtype(dt, jnp.floating) and jnp.finfo(dt).bits >= 32:
            return kernel(actor, prior, *rest, **kw)
        up = lambda d: None if d is None else DiagGaussian(jnp.asarray(d.mean, jnp.float32),  # noqa: E731
                                                            jnp.asarray(d.std, jnp.float32))
        out = kernel(up(actor), up(prior), *rest, **kw)
        if not jnp.issubdtype(dt, jnp.floating):
            return out
        return DiagGaussian(out.mean.astype(dt), out.std.astype(dt))

    return wrapper


@jax.custom_jvp
def _tangent_of(x: jax.Array) -> jax.Array:
    """0 in value and ``x``'s tangent in every derivative (forward and reverse, any order), even where
    ``x`` is not finite (``x - stop_gradient(x)`` is NaN there)."""
    return jnp.zeros_like(x)


_tangent_of.defjvp(lambda primals, tangents: (jnp.zeros_like(primals[0]), tangents[0]))


def _exact_at(exact: jax.Array, smooth: jax.Array, ends: jax.Array) -> jax.Array:
    """``exact`` where ``ends`` (bit for bit), ``smooth`` elsewhere; the derivative is ``smooth``'s everywhere.

    The smooth formula is exact in value at an end point only up to rounding, and a plain ``jnp.where``
    takes the end point's derivative from ``exact``, which does not depend on the coefficient (the
    gradient in alpha was 0 at alpha = 0 and 1). At an end the value is ``stop_gradient(exact)`` plus
    :func:`_tangent_of` ``(smooth)``; ``exact``'s own derivative must not be added too (it doubled
    d mean/d mu_t at alpha = 0). The smooth value may be 0/0 at an end (an actor std that underflows at
    alpha = 1); its derivative is :func:`_blend_jvp`'s, finite there."""
    return jnp.where(ends, jax.lax.stop_gradient(exact) + _tangent_of(smooth), smooth)


def _lerp(x_t: jax.Array, x_g: jax.Array, w) -> jax.Array:
    """``(1 - w) x_t + w x_g``: exact at ``w = 0`` and ``w = 1`` (no cancellation)."""
    return (1.0 - w) * x_t + w * x_g


@_in_float32
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
    return _poison_bad_actor(actor, actor) if _is_traced(actor) else actor


@_in_float32
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


@_in_float32
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
    alpha = check_coefficient("alpha", alpha, 0.0, 1.0, actor.mean.dtype)
    _check_param_shape("alpha", alpha, actor)
    safe, ok = _guard(actor, prior)
    mean = _lerp(actor.mean, safe.mean, alpha)
    std = _lerp(actor.std, safe.std, alpha)
    return _fallback(ok, DiagGaussian(mean, std), actor)


@_in_float32
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
    alpha = check_coefficient("alpha", alpha, 0.0, 1.0, actor.mean.dtype)
    _check_param_shape("alpha", alpha, actor)
    safe, ok = _guard(actor, prior)
    mean, std = _blend(actor, safe, 1.0 - alpha, alpha)
    # Exact end points: alpha = 0 is the actor and alpha = 1 the prior, bit for bit, with the smooth
    # formula's derivative there.
    ends = (alpha == 0) | (alpha == 1)
    mean = _exact_at(jnp.where(alpha == 0, actor.mean, safe.mean), mean, ends)
    std = _exact_at(jnp.where(alpha == 0, actor.std, safe.std), std, ends)
    return _fallback(ok, DiagGaussian(mean, std), actor)


@_in_float32
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
    beta = check_coefficient("beta", beta, 0.0, math.inf, actor.mean.dtype)
    _check_param_shape("beta", beta, actor)
    safe, ok = _guard(actor, prior)
    # lam = lam_t + b lam_g = (1 + b) * (w_t lam_t + w_g lam_g) with w_t = 1 / (1 + b), w_g = b / (1 + b):
    # the PoE blend at the equivalent alpha, with variance shrunk by 1 / (1 + b). Both weights are formed
    # directly: 1 - b / (1 + b) would lose the actor's weight to rounding at large b.
    infinite = jnp.isinf(beta)
    b = jnp.where(infinite, 0.0, beta)
    w_t = 1.0 / (1.0 + b)
    mean, std = _blend(actor, safe, w_t, b * w_t)
    std = std * jnp.sqrt(w_t)
    zero = beta == 0
    mean = jnp.where(infinite, safe.mean, _exact_at(actor.mean, mean, zero))
    std = jnp.where(infinite, 0.0, _exact_at(actor.std, std, zero))
    return _fallback(ok, DiagGaussian(mean, std), actor)


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
    # 1 / (1 + 1/b) for b >= 1 (inf gives 1): b / (1 + b)'s derivative cancelled there (-29% at b = 1e7)
    big = beta >= 1.0
    return jnp.where(big, 1.0 / (1.0 + 1.0 / jnp.where(big, beta, 1.0)), beta / (1.0 + jnp.where(big, 0.0, beta)))


# --------------------------------------------------------------------------- registry


class CriticInputs(NamedTuple):
    """What a critic-guided rule gets besides the actor and the prior, for one state.

    Attributes:
        q_fn: ``q_fn(action) -> scalar``, the actor's critic at this state.
        low, high: the action bounds.
        key: a PRNG key for the rule's own draws (or ``None``).
    """

    q_fn: Callable[[jax.Array], jax.Array]
    low: jax.Array | float
    high: jax.Array | float
    key: jax.Array | None = None


class RuleInputs(NamedTuple):
    """Everything a rule may use: the one signature the grid calls every rule with.

    Attributes:
        actor, prior: :class:`DiagGaussian` over ``[..., act_dim]``.
        param: the rule's coefficient (ignored by rules without one).
        critic: :class:`CriticInputs` for rules with ``needs_critic``; ``None`` otherwise.
    """

    actor: DiagGaussian
    prior: DiagGaussian
    param: jax.Array | float
    critic: CriticInputs | None = None


@dataclasses.dataclass(frozen=True)
class Rule:
    """A registered composition rule and its metadata (see :func:`register_rule`).

    Attributes:
        name: registry key.
        fn: ``fn(actor, prior, param) -> DiagGaussian``; rules with ``needs_critic`` take a
            fourth argument, :class:`CriticInputs`.
        param: the coefficient's name (``"alpha"``, ``"beta"``) or ``None``.
        lo, hi: the coefficient's valid range.
        alpha_equiv: the PoE-equivalent coefficient: a number (the rule's, whatever its
            coefficient), a function of the coefficient, or ``None`` (no fixed one: NaN).
        default: the coefficient recorded for a rule without one (``prior_only``: 1).
        needs_critic: the rule uses the actor's critic (:class:`CriticInputs`).
        uses_prior: whether the composed policy depends on the goal prior. A grid runs a
            rule that does not (``frozen``, the critic-only rules) once per (goal, shift,
            seed, episode) and serves its episodes to every prior quality.
        alpha_fn: for a rule whose alpha varies per state (``poe_adaptive``),
            ``alpha_fn(inputs) -> [...]`` the alpha it used; the grid records its episode mean.
        doc: one line.
        mean_of: the rule whose mean this rule's mean equals at the same ``alpha_equiv``
            (``kl_reg``: ``"poe"``). Executed deterministically (the mean), the two are one
            policy: the statistics test it once.
    """

    name: str
    fn: Callable[..., DiagGaussian]
    param: str | None
    lo: float = 0.0
    hi: float = 1.0
    alpha_equiv: float | Callable | None = None
    default: float = 0.0
    needs_critic: bool = False
    uses_prior: bool = True
    alpha_fn: Callable[[RuleInputs], jax.Array] | None = None
    doc: str = ""
    mean_of: str | None = None

    def __call__(self, actor, prior, param=None, critic: CriticInputs | None = None):
        return self.evaluate(RuleInputs(actor, prior, param, critic))

    def evaluate(self, x: RuleInputs) -> DiagGaussian:
        """The composed policy from the uniform :class:`RuleInputs`."""
        if self.needs_critic:
            if x.critic is None:
                raise ValueError(f"rule {self.name!r} needs the actor's critic (RuleInputs.critic); got None")
            return self.fn(x.actor, x.prior, x.param, x.critic)
        return self.fn(x.actor, x.prior, x.param)

    def equiv(self, param) -> float:
        """The PoE-equivalent coefficient of this rule at ``param`` (NaN when it has none)."""
        if self.alpha_equiv is None:
            return math.nan
        if callable(self.alpha_equiv):
            return float(self.alpha_equiv(param))
        return float(self.alpha_equiv)

    def twin(self, param) -> tuple[str, float] | None:
        """``(rule, coefficient)`` whose mean this rule executes at ``param`` (``Rule.mean_of`` at the same
        PoE-equivalent alpha, rounded to 6 decimals as grids record coefficients), or None. Executed as the
        mean, the two are one policy."""
        if self.mean_of is None:
            return None
        return self.mean_of, round(self.equiv(param), 6)

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
        big = np.isfinite(arr) & (np.abs(arr) > np.finfo(np.float32).max)  # the grid runs float32: it would be inf
        if big.any():
            raise ValueError(f"rule {self.name!r}: {self.param}={_fmt(arr[big])} is beyond float32 (the grid's "
                             f"dtype; max {np.finfo(np.float32).max:.3g}), where it would be inf; write inf for the limit")
        return arr


class _Registry(Mapping[str, Rule]):
    """Name -> :class:`Rule` (read-only to callers; :func:`register_rule` adds). A miss lists the known names."""

    def __init__(self):
        self._rules: dict[str, Rule] = {}

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

    def _add(self, rule: Rule, overwrite: bool = False) -> None:
        if rule.name in self._rules and not overwrite:
            raise ValueError(f"rule {rule.name!r} is already registered; pass overwrite=True to replace it (e.g. when "
                             "a notebook cell that registers it runs again)")
        self._rules[rule.name] = rule

    def _remove(self, name: str) -> None:
        self._rules.pop(name, None)


RULES = _Registry()


def register_rule(name: str, *, param: str | None = None, bounds: tuple[float, float] = (0.0, 1.0),
                  alpha_equiv: float | Callable | None = None, default: float = 0.0, needs_critic: bool = False,
                  uses_prior: bool = True, alpha_fn: Callable | None = None, mean_of: str | None = None,
                  overwrite: bool = False):
    """Decorator: register ``fn(actor, prior, param) -> DiagGaussian`` as rule ``name``.

    ``overwrite``: replace a rule of that name (re-running the cell that defines it); otherwise a second
    registration of one name is an error.

    With ``needs_critic=True`` the function takes a fourth argument, :class:`CriticInputs`.
    The rule is then usable everywhere a built-in one is: ``compose.RULES``, grids (TOML
    ``[rules]``, also from a ``--plugin`` module), the report. See :class:`Rule` for the
    metadata. Returns ``fn`` unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> @register_rule("doc_halfway", param="alpha", bounds=(0.0, 1.0), alpha_equiv=lambda a: a / 2)
        ... def halfway(actor, prior, alpha):
        ...     return poe(actor, prior, alpha / 2)
        >>> RULES["doc_halfway"].equiv(0.5)
        0.25
    """
    lo, hi = (float(b) for b in bounds)
    if not lo <= hi:
        raise ValueError(f"rule {name!r}: bounds must be (lo, hi) with lo <= hi; got {bounds!r}")

    def deco(fn):
        doc = (fn.__doc__ or "").strip().splitlines()
        RULES._add(Rule(name, fn, param, lo, hi, alpha_equiv, float(default), needs_critic, uses_prior, alpha_fn,
                        doc[0] if doc else "", mean_of), overwrite)
        return fn

    return deco


def unregister_rule(name: str) -> None:
    """Remove rule ``name`` from :data:`RULES` (a user's rule, e.g. in a test); unknown names are ignored."""
    RULES._remove(name)



def _identity(a):
    return a


register_rule("frozen", uses_prior=False, alpha_equiv=0.0, default=0.0)(frozen)
register_rule("prior_only", alpha_equiv=1.0, default=1.0)(prior_only)
register_rule("additive", param="alpha", bounds=(0.0, 1.0), alpha_equiv=_identity)(additive)
register_rule("poe", param="alpha", bounds=(0.0, 1.0), alpha_equiv=_identity)(poe)
register_rule("kl_reg", param="beta", bounds=(0.0, math.inf), alpha_equiv=lambda b: float(beta_to_alpha(b)),
              mean_of="poe")(kl_reg)


def alpha_equiv(rule: str, param):
    """The PoE-equivalent coefficient of ``rule(param)`` (same mean for ``kl_reg``).

    ``frozen`` is 0, ``prior_only`` is 1, ``kl_reg(beta)`` is ``beta/(1+beta)``;
    ``poe_adaptive`` has no fixed one (NaN: its alpha varies per state). Vectorised over ``param``.
    """
    r = get(rule)
    param = np.asarray(param, float)
    return jnp.asarray(np.vectorize(r.equiv, otypes=[float])(param) if param.ndim else r.equiv(float(param)))


def get(name: str | Rule) -> Rule:
    """Look a rule up by name (``KeyError`` lists the known rules)."""
    return name if isinstance(name, Rule) else RULES[name]


def names(*, needs_critic: bool | None = None) -> tuple[str, ...]:
    """Registered rule names (in registration order), optionally only those that do (not) need a critic."""
    return tuple(n for n, r in RULES.items() if needs_critic is None or r.needs_critic == needs_critic)

