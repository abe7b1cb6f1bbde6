"""A steered policy: the frozen actor, the goal prior and a rule, as one pure function.

:func:`steer` returns ``policy(obs, key) -> (action, info)``: jittable, vmappable over
lanes (observations, keys, coefficients, goals) and differentiable in the coefficient.
The grid's compiled program (:mod:`poe_jax.grid.program`) calls the same function per lane,
so a user's loop and a grid execute the same policy.

Per call (``o`` the observation the policy sees):

1. ``o = obs + obs_noise * N(0, I)`` when ``obs_noise`` is given;
2. ``a = actor.distribution(o)``, ``g = prior.distribution(o, goal, goal_param)``, then
   ``prior_quality(g, o, key)`` when given (the grid's prior qualities);
3. the rule: ``c = rule(a, g, param)`` (critic rules also get the actor's critic);
4. the action: ``c.mean`` (``sample=True``: a sample of ``c``), plus ``act_noise * N(0, I)``
   when given.

Example (a user's rollout with the shipped hopper actor and prior)::

    import jax
    from poe_jax import checkpoints, envs
    from poe_jax.kernels import policy

    env = envs.make("hopper", backend="native")
    actor, prior = checkpoints.load("zoo:hopper-medium-iql"), checkpoints.load("zoo:hopper-prior")
    act = policy.steer(actor, prior, "poe", 0.5, goal="G1_speed")

    def step(carry, key):
        state, ret = carry
        action, _ = act(state.obs, key)
        state = env.step(state, action)
        return (state, ret + state.reward), None

    (state, ret), _ = jax.lax.scan(step, (env.reset(jax.random.key(0)), 0.0), jax.random.split(jax.random.key(1), 100))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from poe_jax.kernels import dispatch, priors, rules as kernels
from poe_jax.kernels.gaussian import DiagGaussian

__all__ = ["CRITIC_TAG", "Info", "lane_policy", "steer", "untrained_prior"]

CRITIC_TAG = 11  # folded into a step's key for the critic rules' own draws


class Info(NamedTuple):
    """What one call saw and composed: the observation the policy saw (after ``obs_noise``), the
    actor's and the prior's distributions there, the composed one, and the critic the critic rules
    used (None for the others)."""

    obs: jax.Array
    actor: DiagGaussian
    prior: DiagGaussian
    composed: DiagGaussian
    critic: kernels.CriticInputs | None = None


def steer(actor, prior, rule: str | kernels.Rule | Sequence = "poe", param=0.0, *, goal: int | str = 0,
          goal_param=0.0, rule_index=0, sample: bool = False, obs_noise=None, act_noise=None,
          prior_quality: Callable | None = None, max_action: float | None = None) -> Callable:
    """``policy(obs, key) -> (action, Info)``: ``actor`` steered toward ``goal`` by ``prior`` with ``rule``.

    Args:
        actor: a frozen :class:`~poe_jax.nets.Actor` (with its critic for the critic rules).
        prior: a :class:`~poe_jax.nets.GoalPrior`.
        rule: a registered rule's name or :class:`~poe_jax.kernels.Rule`; or a sequence of them, of which
            ``rule_index`` (may be traced) picks one per call (:func:`poe_jax.dispatch.switch`).
        param: the rule's coefficient (may be traced, e.g. per lane or for ``jax.grad``).
        goal: the prior's goal head, by name or index (may be traced). goal_param: its continuous
            parameter for priors that take one (G3's target speed).
        sample: execute a sample of the composed policy instead of its mean.
        obs_noise, act_noise: std of Gaussian noise on the observation the policy sees and on the
            executed action; None draws nothing.
        prior_quality: ``f(g, obs, key) -> DiagGaussian`` applied to the prior's distribution (the grid's
            prior qualities, :mod:`poe_jax.kernels.priors`).
        max_action: the action bound the critic rules search within (default: the actor's).

    The key is split into 4 (observation noise, prior quality, action noise, sample), and critic rules
    draw from ``fold_in(key, CRITIC_TAG)``: the grid's episodes use these streams.
    """
    rules = tuple(kernels.get(r) for r in (rule if isinstance(rule, (list, tuple)) else (rule,)))
    if not rules:
        raise ValueError("steer: rule is empty")
    if isinstance(goal, str):
        goals = list(prior.spec.goals)
        if goal not in goals:
            raise ValueError(f"steer: the prior has no goal {goal!r}; its goals: {', '.join(goals)}")
        goal = goals.index(goal)
    critic = any(r.needs_critic for r in rules)
    if critic and getattr(actor, "critic", None) is None:
        raise ValueError(f"steer: rules {[r.name for r in rules if r.needs_critic]} need the actor's critic")
    m = float(actor.spec.max_action if max_action is None else max_action)

    def policy(obs: jax.Array, key: jax.Array) -> tuple[jax.Array, Info]:
        k_obs, k_prior, k_act, k_sample = jax.random.split(key, 4)
        o = obs if obs_noise is None else obs + obs_noise * jax.random.normal(k_obs, obs.shape)
        a = actor.distribution(o)
        g = prior.distribution(o, goal, goal_param)
        if prior_quality is not None:
            g = prior_quality(g, o, k_prior)
        crit = (kernels.CriticInputs(lambda act: actor.critic.q(o, act), -m, m, jax.random.fold_in(key, CRITIC_TAG))
                if critic else None)
        c = dispatch.switch(rules, rule_index, kernels.RuleInputs(a, g, param, crit))
        action = c.sample(k_sample) if sample else c.mean
        if act_noise is not None:
            action = action + act_noise * jax.random.normal(k_act, action.shape)
        return action, Info(o, a, g, c, crit)

    return policy


def untrained_prior(prior, seed):
    """The untrained prior network of seed ``seed`` (the ``random`` quality's): ``prior`` with fresh weights
    from :func:`poe_jax.kernels.priors.random_prior_key`, the same for every cell and episode of the seed."""
    from poe_jax import nets

    return prior.replace(params=nets.init_prior(prior.spec, priors.random_prior_key(seed)).params)


def lane_policy(actor, prior, rules, qualities: tuple[str, ...], *, param, goal, goal_param=0.0, rule_index=0,
                quality_index=0, untrained=None, degraded_noise: float = 0.5, sample: bool = False, obs_noise=None,
                act_noise=None, max_action: float | None = None) -> Callable:
    """The steered policy of one grid lane: actor -> prior quality -> rule -> action (:func:`steer`).

    The one policy step of the grid's rollouts and of the off-policy scorer: the lane's prior quality
    ``qualities[quality_index]`` (:mod:`poe_jax.kernels.priors`) applied to the prior's distribution,
    with ``untrained`` (:func:`untrained_prior` of the lane's seed) for the qualities that need an
    untrained network, then ``rules[rule_index]`` at ``param``. Returns ``policy(obs, key) -> (action, Info)``.
    """
    m = float(actor.spec.max_action if max_action is None else max_action)

    def quality(g, o, k_prior):
        u = untrained.distribution(o, goal, goal_param) if untrained is not None else g
        return priors.apply(quality_index, qualities, priors.QualityInputs(g, u, k_prior, m, degraded_noise))

    return steer(actor, prior, rules, param, goal=goal, goal_param=goal_param, rule_index=rule_index, sample=sample,
                 obs_noise=obs_noise, act_noise=act_noise,
                 prior_quality=quality if tuple(qualities) != ("trained",) else None, max_action=m)
