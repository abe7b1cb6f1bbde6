"""A user plugin outside the package: one rule, one goal, one prior quality and one metric,
each a single registration (``poe-jax run --plugin tests/plugins/toy_plugin.py``)."""

import jax.numpy as jnp

from poe_jax import compose
from poe_jax.grid import metrics
from poe_jax.kernels import priors
from poe_jax.envs import goals


@compose.register_rule("toy_half_poe", param="alpha", bounds=(0.0, 1.0), alpha_equiv=lambda a: a / 2)
def toy_half_poe(actor, prior, alpha):
    """PoE at half the given alpha."""
    return compose.poe(actor, prior, alpha / 2)


@goals.register_goal("toy_slow", bounds=(0.0, 1.0), prior_goal="G3_target", speed=0.5)
def toy_slow(env, state, action, next_state, speed=0.5):
    """1 while moving forward slower than ``speed``, else 0."""
    v = next_state.metrics["x_velocity"]
    return ((v > 0) & (v < speed)).astype(jnp.float32)


@priors.register_quality("toy_sharp")
def toy_sharp(x):
    """The trained prior with half its std."""
    return x.trained.replace(std=0.5 * x.trained.std)


@metrics.register_metric("toy_abs_action")
def toy_abs_action(x):
    """Mean absolute executed action."""
    return jnp.mean(jnp.abs(x.action))
