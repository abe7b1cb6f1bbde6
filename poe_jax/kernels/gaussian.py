"""Diagonal Gaussians over actions: the one distribution type poe_jax composes.

Every array here has shape ``[..., act_dim]``; reductions over the action axis
(``log_prob``, ``kl``, ``entropy``) return shape ``[...]``.

Precisions are computed in a clamped form (:func:`precision`) so that an
extremely small standard deviation gives a huge but finite precision instead of
``inf``, and an infinite one gives precision 0 (a flat expert that the
product-of-experts rules ignore).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "DiagGaussian",
    "bhattacharyya",
    "entropy",
    "from_natural",
    "kl",
    "log_prob",
    "precision",
    "sample",
    "to_natural",
    "total_variation",
    "tv_lower_bound",
    "tv_upper_bound",
]

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class DiagGaussian:
    """A diagonal Gaussian ``N(mean, diag(std**2))``; a JAX pytree.

    Attributes:
        mean: ``[..., act_dim]`` means.
        std: ``[..., act_dim]`` standard deviations (> 0; 0 denotes a point mass,
            produced only by the ``kl_reg(beta=inf)`` limit).

    Example:
        >>> import jax.numpy as jnp
        >>> g = DiagGaussian(jnp.zeros(2), jnp.ones(2))
        >>> float(g.log_prob(jnp.zeros(2)))  # -log(2*pi)
        -1.8378...
    """

    mean: jax.Array
    std: jax.Array

    def __post_init__(self):
        """Built eagerly from arrays, the fields must be numbers of broadcastable shapes, with an action axis.
        (Traced values, and the ints, Nones and shapes of pytree plumbing such as ``in_axes``, pass as they
        are.)"""
        m, s = self.mean, self.std
        if not (_concrete(m) and _concrete(s)):
            return
        for name, x in (("mean", m), ("std", s)):  # metadata only: nothing is copied from the device
            if not (jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(x.dtype, jnp.bool_)):
                raise TypeError(f"DiagGaussian: {name} must hold numbers; got dtype {x.dtype}")
        if not np.ndim(m) and not np.ndim(s):
            raise ValueError("DiagGaussian: mean and std need an action axis (shape [..., act_dim]); got scalars")
        try:
            np.broadcast_shapes(np.shape(m), np.shape(s))
        except ValueError:
            raise ValueError(f"DiagGaussian: mean and std shapes do not broadcast; got {np.shape(m)} and "
                             f"{np.shape(s)}") from None

    # ---- the distribution interface of distrax / TFP (names kept beside poe_jax's own)
    @property
    def batch_shape(self) -> tuple:
        """The shape of the states: ``mean.shape[:-1]`` (broadcast with the std's)."""
        return tuple(jnp.broadcast_shapes(jnp.shape(self.mean), jnp.shape(self.std))[:-1])

    @property
    def event_shape(self) -> tuple:
        """``(act_dim,)``: one draw is an action."""
        return tuple(jnp.broadcast_shapes(jnp.shape(self.mean), jnp.shape(self.std))[-1:])

    def stddev(self) -> jax.Array:
        return jnp.broadcast_to(self.std, jnp.broadcast_shapes(jnp.shape(self.mean), jnp.shape(self.std)))

    def variance(self) -> jax.Array:
        return self.stddev() ** 2

    def kl_divergence(self, other: "DiagGaussian") -> jax.Array:
        """``KL(self || other)`` over the action axis (:func:`kl`)."""
        return kl(self, other)

    def cross_entropy(self, other: "DiagGaussian") -> jax.Array:
        return kl(self, other) + entropy(self)

    @property
    def var(self) -> jax.Array:
        return self.std * self.std

    @property
    def precision(self) -> jax.Array:
        return precision(self.std)

    @property
    def act_dim(self) -> int:
        return self.mean.shape[-1]

    def log_prob(self, x: jax.Array) -> jax.Array:
        return log_prob(self, x)

    def entropy(self) -> jax.Array:
        return entropy(self)

    def sample(self, key: jax.Array | None = None, shape: tuple[int, ...] = (), *, seed: jax.Array | None = None,
               sample_shape: tuple[int, ...] | int | None = None) -> jax.Array:
        """Reparameterised draws of shape ``shape + mean.shape``: ``sample(key, shape)``, or distrax's
        ``sample(seed=key, sample_shape=shape)``."""
        if (key is None) == (seed is None):
            raise TypeError("DiagGaussian.sample: give the PRNG key once, as key or as seed=")
        shape = shape if sample_shape is None else ((sample_shape,) if isinstance(sample_shape, int) else sample_shape)
        return sample(self, key if key is not None else seed, tuple(shape))

    def mode(self) -> jax.Array:
        return self.mean


def _concrete(x) -> bool:
    """An array with values here (numpy or a committed jax array), not a tracer or pytree plumbing."""
    return isinstance(x, (np.ndarray, jax.Array)) and not isinstance(x, jax.core.Tracer)


def precision(std: jax.Array) -> jax.Array:
    """``1 / std**2``, clamped to stay finite for tiny ``std`` (0 for ``std = inf``)."""
    std = jnp.asarray(std)
    tiny = jnp.finfo(std.dtype).tiny if jnp.issubdtype(std.dtype, jnp.floating) else 1e-38
    return 1.0 / jnp.maximum(std * std, tiny)


def to_natural(d: DiagGaussian) -> tuple[jax.Array, jax.Array]:
    """Natural (precision) form: ``(lambda, lambda * mean)``."""
    lam = d.precision
    return lam, lam * d.mean


def from_natural(lam: jax.Array, eta: jax.Array) -> DiagGaussian:
    """Inverse of :func:`to_natural`: ``N(eta / lambda, 1 / lambda)``."""
    return DiagGaussian(eta / lam, jax.lax.rsqrt(lam))


def log_prob(d: DiagGaussian, x: jax.Array) -> jax.Array:
    """Log density of ``x`` (``[..., act_dim]``), summed over the action axis."""
    z = (x - d.mean) / d.std
    return jnp.sum(-0.5 * z * z - jnp.log(d.std) - 0.5 * _LOG_2PI, axis=-1)


def entropy(d: DiagGaussian) -> jax.Array:
    """Differential entropy, summed over the action axis."""
    return jnp.sum(0.5 * (1.0 + _LOG_2PI) + jnp.log(d.std), axis=-1)


def sample(d: DiagGaussian, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """Draw ``shape + mean.shape`` samples (reparameterised)."""
    eps = jax.random.normal(key, tuple(shape) + d.mean.shape, d.mean.dtype)
    return d.mean + d.std * eps


def kl(p: DiagGaussian, q: DiagGaussian) -> jax.Array:
    """``KL(p || q)``, summed over the action axis.

    Example:
        >>> import jax.numpy as jnp
        >>> p = DiagGaussian(jnp.zeros(3), jnp.ones(3))
        >>> float(kl(p, p))
        0.0
    """
    # Per dim 0.5 (r^2 - 1) - log r + 0.5 z^2 with r = s_p / s_q = exp(d): written as
    # 0.5 expm1(2d) - d, which keeps its precision in float32 as r -> 1 (the plain form loses
    # about half its digits at std perturbed by 1e-4; distrax uses the same form).
    d = jnp.log(p.std) - jnp.log(q.std)
    z = (p.mean - q.mean) / q.std
    per_dim = 0.5 * jnp.expm1(2.0 * d) - d + 0.5 * z * z
    return jnp.sum(per_dim, axis=-1)


def bhattacharyya(p: DiagGaussian, q: DiagGaussian) -> jax.Array:
    """Bhattacharyya coefficient ``BC = integral sqrt(p q)`` in ``[0, 1]`` (closed form, a product over dims).

    Per dimension ``sqrt(2 s_p s_q / (s_p^2 + s_q^2)) exp(-(m_p - m_q)^2 / (4 (s_p^2 + s_q^2)))``;
    a point mass (std 0) against a Gaussian gives 0.

    Example:
        >>> import jax.numpy as jnp
        >>> p = DiagGaussian(jnp.zeros(2), jnp.ones(2))
        >>> float(bhattacharyya(p, p))
        1.0
    """
    v = p.var + q.var
    log_bc = 0.5 * jnp.log(2.0 * p.std * q.std / v) - (p.mean - q.mean) ** 2 / (4.0 * v)
    return jnp.exp(jnp.sum(log_bc, axis=-1))


def tv_upper_bound(p: DiagGaussian, q: DiagGaussian) -> jax.Array:
    """Upper bound on total variation: ``min(sqrt(KL/2), sqrt(1 - exp(-KL)), sqrt(1 - BC^2))``.

    Pinsker's bound is tight for close distributions, Bretagnolle-Huber's for
    far ones, and the Hellinger one (``BC`` from :func:`bhattacharyya`) is
    symmetric and never looser than ``sqrt(2) H``; the minimum is a valid bound
    in ``[0, 1]``.
    """
    d = jnp.maximum(kl(p, q), 0.0)
    bc = bhattacharyya(p, q)
    hellinger = jnp.sqrt(jnp.maximum(1.0 - bc * bc, 0.0))
    return jnp.minimum(jnp.minimum(jnp.sqrt(0.5 * d), jnp.sqrt(-jnp.expm1(-d))), hellinger)


def tv_lower_bound(p: DiagGaussian, q: DiagGaussian) -> jax.Array:
    """Lower bound on total variation: ``1 - BC`` (the squared Hellinger distance), in ``[0, 1]``."""
    return jnp.clip(1.0 - bhattacharyya(p, q), 0.0, 1.0)


def total_variation(
    p: DiagGaussian, q: DiagGaussian, key: jax.Array, num_samples: int = 256
) -> jax.Array:
    """Monte-Carlo estimate of ``TV(p, q) = E_p[max(0, 1 - q(x)/p(x))]``.

    Unbiased for each state; no closed form exists for multivariate diagonal
    Gaussians. Standard error is at most ``0.5 / sqrt(num_samples)``.

    Args:
        p, q: distributions of matching shape ``[..., act_dim]``.
        key: PRNG key.
        num_samples: samples per state.

    Returns:
        ``[...]`` estimates in ``[0, 1]``.
    """
    x = sample(p, key, (num_samples,))
    log_ratio = log_prob(q, x) - log_prob(p, x)
    return jnp.mean(jnp.maximum(0.0, -jnp.expm1(jnp.minimum(log_ratio, 0.0))), axis=0)
