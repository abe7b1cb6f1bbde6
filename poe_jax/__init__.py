"""poe_jax: deployment-time steering of frozen offline-RL actors in JAX.

A frozen Gaussian actor is combined with a goal-conditioned Gaussian prior by a
closed-form rule (:mod:`poe_jax.compose`) and the result is evaluated over large
grids with batched MuJoCo physics.

Submodules load on first use (``poe_jax.compose``, ``from poe_jax import grid``, ...), so
``import poe_jax`` and the ``poe-jax`` command start without loading JAX.
"""

import importlib

__version__ = "0.1.0"

# Submodules by their public name. The package is laid out by the data flow (``kernels/``, ``grid/``,
# ``analysis/``); the short names the documentation uses (``from poe_jax import offpolicy``) keep working.
_SUBMODULES = {
    "checkpoints": "checkpoints", "compose": "compose", "nets": "nets", "envs": "envs", "data": "data",
    "kernels": "kernels", "grid": "grid", "analysis": "analysis",
    "gaussian": "kernels.gaussian", "policy": "kernels.policy", "select": "kernels.selectors",
    "selectors": "kernels.selectors", "critic_rules": "kernels.critic_rules", "priors": "kernels.priors",
    "rollout": "grid.rollout", "metrics": "grid.metrics", "spec": "grid.spec", "plan": "grid.plan",
    "program": "grid.program", "store": "grid.store", "runner": "grid.runner",
    "stats": "analysis.stats", "claims": "analysis.claims", "offpolicy": "analysis.offpolicy",
    "report": "analysis.report",
}
_NAMES = {"RULES": "compose", "alpha_to_beta": "compose", "beta_to_alpha": "compose", "DiagGaussian": "kernels.gaussian",
          "kl": "kernels.gaussian"}

__all__ = ["RULES", "DiagGaussian", "__version__", "alpha_to_beta", "beta_to_alpha", "kl", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"poe_jax.{_SUBMODULES[name]}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"poe_jax.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'poe_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
