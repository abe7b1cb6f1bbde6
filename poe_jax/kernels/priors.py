"""Prior qualities: what the grid does to the goal prior before a rule combines it.

Each quality is registered here with :func:`register_quality` (user code may add more,
e.g. from a ``--plugin`` module) and is deterministic from the lane's PRNG keys:

==============  ==================================================================================
quality         the prior a lane sees
==============  ==================================================================================
``trained``     the shipped (or given) goal prior, as is
``degraded``    the trained mean plus noise, ``clip(mu_g + degraded_noise * max_action * N(0, I))``,
                fresh each step; the trained std
``random``      the study's random prior: an **untrained** network of the prior's architecture and
                observation normalisation, its weights drawn from the lane's seed (one network per
                seed, the same for every cell and episode of that seed, fixed for the episode).
                Its std is whatever the untrained head gives (about 1)
``uniform``     uninformative: mean ``U(-max_action, max_action)`` fresh each step, std ``max_action``
``adversarial`` confidently wrong: mean ``U(-max_action, max_action)`` fresh each step, with the
                trained prior's std (so it is confident exactly where the trained prior is)
``vague``       accurate but imprecise: the trained mean with the trained std times
                :data:`VAGUE_STD_SCALE` (4): ``degraded`` spoils the mean (accuracy), ``vague`` the
                std (precision)
==============  ==================================================================================

Results recorded before ``random`` meant an untrained network (when it meant today's
``adversarial``) are refused by :mod:`poe_jax.analysis.report`, never silently reinterpreted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from poe_jax.kernels.gaussian import DiagGaussian

__all__ = ["PRIOR_BLIND", "QUALITIES", "VAGUE_STD_SCALE", "QualityInputs", "apply", "names", "random_prior_key", "register_quality"]

RANDOM_PRIOR_TAG = 0x7A4D  # folded into the seed's key for the random prior's weights


class QualityInputs(NamedTuple):
    """What a quality may use, for one lane and step.

    Attributes:
        trained: the trained prior's distribution ``[act_dim]``.
        untrained: the lane's untrained network's distribution (``random``; the trained
            prior where the grid has no ``random`` lane).
        key: this step's PRNG key for the lane.
        max_action: the action bound ``m``.
        degraded_noise: the spec's ``degraded_noise``.
    """

    trained: DiagGaussian
    untrained: DiagGaussian
    key: jax.Array
    max_action: float
    degraded_noise: float


class Quality(NamedTuple):
    name: str
    fn: Callable[[QualityInputs], DiagGaussian]
    needs_untrained: bool
    doc: str


QUALITIES: dict[str, Quality] = {}
PRIOR_BLIND = "any"  # recorded as the prior of rules that ignore it (compose.Rule.uses_prior false); not a quality


def register_quality(name: str, *, needs_untrained: bool = False):
    """Decorator: register ``fn(inputs: QualityInputs) -> DiagGaussian`` as prior quality ``name``."""

    def deco(fn):
        if name in QUALITIES or name == PRIOR_BLIND:
            raise ValueError(f"prior quality {name!r} is already registered" if name in QUALITIES else
                             f"prior quality {name!r}: reserved for rules that ignore the prior")
        QUALITIES[name] = Quality(name, fn, needs_untrained, (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return deco


def names() -> tuple[str, ...]:
    return tuple(QUALITIES)


def get(name: str) -> Quality:
    if name not in QUALITIES:
        raise KeyError(f"unknown prior quality {name!r}; known: {', '.join(QUALITIES)}")
    return QUALITIES[name]


@register_quality("trained")
def trained(x: QualityInputs) -> DiagGaussian:
    """The trained prior, as is."""
    return x.trained


@register_quality("degraded")
def degraded(x: QualityInputs) -> DiagGaussian:
    """Trained mean plus ``degraded_noise * max_action * N(0, I)``, clipped; trained std."""
    m = x.max_action
    noise = x.degraded_noise * m * jax.random.normal(x.key, x.trained.mean.shape)
    return x.trained.replace(mean=jnp.clip(x.trained.mean + noise, -m, m))


@register_quality("random", needs_untrained=True)
def random(x: QualityInputs) -> DiagGaussian:
    """An untrained prior network, weights from the lane's seed (the study's random prior)."""
    return x.untrained


@register_quality("uniform")
def uniform(x: QualityInputs) -> DiagGaussian:
    """Uninformative: mean U(-m, m) each step, std m."""
    m = x.max_action
    mean = jax.random.uniform(x.key, x.trained.mean.shape, minval=-m, maxval=m)
    return DiagGaussian(mean, jnp.full_like(mean, m))


@register_quality("adversarial")
def adversarial(x: QualityInputs) -> DiagGaussian:
    """Confidently wrong: mean U(-m, m) each step, with the trained std."""
    m = x.max_action
    mean = jax.random.uniform(x.key, x.trained.mean.shape, minval=-m, maxval=m)
    return x.trained.replace(mean=mean)


VAGUE_STD_SCALE = 4.0  # the vague prior's std, in units of the trained prior's


@register_quality("vague")
def vague(x: QualityInputs) -> DiagGaussian:
    """The trained mean with its std times VAGUE_STD_SCALE: accurate but imprecise."""
    return x.trained.replace(std=x.trained.std * VAGUE_STD_SCALE)


def random_prior_key(seed) -> jax.Array:
    """The key of seed ``seed``'s untrained prior network (the same for every cell and episode)."""
    return jax.random.fold_in(jax.random.key(seed), RANDOM_PRIOR_TAG)


def apply(index, qualities: tuple[str, ...], x: QualityInputs) -> DiagGaussian:
    """The prior at quality ``qualities[index]`` (``index`` may be traced)."""
    fns = [get(q).fn for q in qualities]
    if len(fns) == 1:
        return fns[0](x)
    return jax.lax.switch(index, fns, x)
