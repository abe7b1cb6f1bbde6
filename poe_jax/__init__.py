"""poe_jax: deployment-time steering of frozen offline-RL actors in JAX.

A frozen Gaussian actor is combined with a goal-conditioned Gaussian prior by a
closed-form rule (:mod:`poe_jax.compose`) and the result is evaluated over large
grids with batched MuJoCo physics.
"""

from poe_jax import checkpoints, compose, gaussian, nets, select
from poe_jax.compose import RULES, alpha_to_beta, beta_to_alpha
from poe_jax.gaussian import DiagGaussian, kl

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "DiagGaussian",
    "__version__",
    "alpha_to_beta",
    "beta_to_alpha",
    "checkpoints",
    "compose",
    "gaussian",
    "kl",
    "nets",
    "select",
]
