"""The kernels: pure JAX functions a user embeds in their own code.

==========================  ======================================================
module                      owns
==========================  ======================================================
:mod:`.gaussian`            :class:`DiagGaussian`, KL, TV bounds
:mod:`.rules`               the closed-form rules (``frozen``, ``prior_only``, ``additive``,
                            ``poe``, ``kl_reg``), their validation, and the one rule registry
                            (:data:`~.rules.RULES`, :func:`~.rules.register_rule`)
:mod:`.selectors`           choosing the coefficient: :func:`~.selectors.kl_budget`, the per-state
                            :func:`~.selectors.adaptive_alpha` (one bisection) and ``poe_adaptive``
:mod:`.critic_rules`        the rules that use the actor's critic
:mod:`.dispatch`            :func:`~.dispatch.switch` (one rule per lane), :func:`~.dispatch.apply`,
                            :func:`~.dispatch.checked`
:mod:`.priors`              the prior qualities (``trained``, ``degraded``, ``random``, ``uniform``)
:mod:`.policy`              :func:`~.policy.steer`: actor -> prior quality -> rule -> action, the
                            one policy step of rollouts, grids and the off-policy scorer
==========================  ======================================================

Importing this package registers every built-in rule. :mod:`poe_jax.compose` re-exports the
rules, selectors and dispatch under one name.
"""

from poe_jax.kernels import rules, selectors, critic_rules, dispatch  # noqa: F401  (registration order)
