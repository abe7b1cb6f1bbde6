"""Closed-form composition of a frozen Gaussian actor with a Gaussian prior: the public facade.

The kernels live in :mod:`poe_jax.kernels` by concern; this module re-exports what a user
composes with, under the name the documentation uses (``from poe_jax import compose``):

* the rules and their registry (:mod:`poe_jax.kernels.rules`): :func:`poe`, :func:`kl_reg`,
  :func:`additive`, :func:`prior_only`, :func:`frozen`, :data:`RULES`, :func:`register_rule`;
* the per-state rule and its bisection (:mod:`poe_jax.kernels.selectors`): :func:`poe_adaptive`,
  :func:`adaptive_alpha`;
* dispatch (:mod:`poe_jax.kernels.dispatch`): :func:`switch`, :func:`apply`, :func:`checked`.
"""

from poe_jax.kernels.dispatch import Composed, apply, checked, switch
from poe_jax.kernels.rules import (RULES, STD_FLAT, STD_MIN, CriticInputs, Rule, RuleInputs, additive, alpha_equiv,
                                   alpha_to_beta, beta_to_alpha, check_coefficient, frozen, get, kl_reg, names, poe,
                                   prior_only, prior_valid, register_rule, unregister_rule)
from poe_jax.kernels.selectors import BISECTION_STEPS, adaptive_alpha, poe_adaptive

__all__ = ["BISECTION_STEPS", "RULES", "STD_FLAT", "STD_MIN", "Composed", "CriticInputs", "Rule", "RuleInputs",
           "adaptive_alpha", "additive", "alpha_equiv", "alpha_to_beta", "apply", "beta_to_alpha", "check_coefficient",
           "checked", "frozen", "get", "kl_reg", "names", "poe", "poe_adaptive", "prior_only", "prior_valid",
           "register_rule", "switch", "unregister_rule"]
