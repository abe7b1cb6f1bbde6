"""The grid's compiled program: one episode per lane, every lane's rule, goal and prior as data.

:func:`build_program` returns ``program(actor, prior, lanes: Lanes) -> Totals``, jittable
and vmapped over the lane axis. What varies per lane (the rule's index, its coefficient,
the goal, the prior quality, the shift) is in :class:`Lanes`; what a grid fixes (its env,
its bound goals, **its own rules**, its prior qualities, the horizon) is static. Rules and
goals are ``lax.switch``-ed over the grid's own tuples only, so a poe-only grid costs
what ``poe`` costs (under ``vmap`` a switch evaluates every branch it has).

Per lane and step (``o`` the observation):

0. shift of the model: the lane's body-mass and friction scales (``State.scales``);
1.-3. the lane's steered policy, :func:`poe_jax.policy.steer` (the function a user's own loop
   calls): ``o += obs_noise * N(0, I)``; the actor's and the prior's distributions at ``o``,
   then the lane's prior quality (:mod:`poe_jax.priors`); the lane's rule; the executed action
   is the composed mean (``sample``: a sample), plus ``action_noise * N(0, I)``;
4. every registered metric (:mod:`poe_jax.metrics`), and for rules whose alpha varies
   per state (``Rule.alpha_fn``) the alpha they used.

The rollout sums the goal reward, its ``GAMMA``-discounted sum and its largest absolute
value, the forward velocity, and each metric (plain and ``GAMMA``-discounted sums).

Determinism. A lane's initial state comes from ``(seed, episode)`` only, so all cells
start from the same states (common random numbers); its action/prior noise comes from
``(seed, cell_key, episode)``.

Independence from the rest of the grid. The runner builds one program per
(rule, prior quality, noise switches) (:class:`poe_jax.plan.ProgramKey`) and calls it on
batches of at least :data:`poe_jax.plan.MIN_BATCH` lanes, so a lane's episode is bit-equal
alone, inside any larger grid and at any chunk size (native backend, one machine and
jax/jaxlib version; ``tests/test_grid.py``). A program that switches over several rules is
still available here (``rules`` of any length) but is not used by grids: under ``vmap`` XLA
fuses the branches' arithmetic together and contracts ``a*b + c`` into FMAs differently
depending on which branches are present, so one rule's rounding, and through chaotic
contacts its episodes, changed with the others.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax import compose, metrics, nets, priors
from poe_jax import rollout as ro
from poe_jax.policy import steer

__all__ = ["Lanes", "Totals", "build_program"]

_RESET_TAG = 0x5EED  # folded into a seed's key for the initial states


class Lanes(NamedTuple):
    """Per-lane inputs of the program, each ``[n]``.

    Attributes:
        rule: index into the program's rules. param: the rule's coefficient.
        goal: index into the program's goals. prior_goal: the goal's index in the prior's goals.
        prior_param: the goal's continuous parameter for priors that take one (G3's target).
        quality: index into the program's prior qualities.
        obs_noise, act_noise, mass_scale, friction_scale: the lane's shift.
        cell_key: hash of the lane's cell (its noise stream). seed, episode.
    """

    rule: np.ndarray
    param: np.ndarray
    goal: np.ndarray
    prior_goal: np.ndarray
    prior_param: np.ndarray
    quality: np.ndarray
    obs_noise: np.ndarray
    act_noise: np.ndarray
    mass_scale: np.ndarray
    friction_scale: np.ndarray
    cell_key: np.ndarray
    seed: np.ndarray
    episode: np.ndarray

    def take(self, idx) -> "Lanes":
        return Lanes(*(np.asarray(x)[idx] for x in self))


class Totals(NamedTuple):
    """Per-lane episode totals returned by the program, each ``[n]``.

    Attributes:
        return_task, return_goal: summed rewards. length: live steps. terminated.
        discounted_goal: ``sum_t GAMMA^t r_goal``. max_abs_goal: ``max_t |r_goal|``.
        sum_x_velocity: forward velocity summed over live steps.
        metrics: ``{metric: sum over live steps}`` (:data:`poe_jax.metrics.METRICS`).
        discounted: ``{metric: sum_t GAMMA^t m_t}`` for metrics with a discounted column.
        sum_alpha: the per-state alpha summed over live steps (rules with ``alpha_fn``; else 0).
        nonfinite_actions: live steps whose executed action had a NaN or inf (MuJoCo resets its state on
            such a control, so the episode's returns would look plausible; the store records the count).
    """

    return_task: jax.Array
    return_goal: jax.Array
    length: jax.Array
    terminated: jax.Array
    discounted_goal: jax.Array
    max_abs_goal: jax.Array
    sum_x_velocity: jax.Array
    metrics: dict[str, jax.Array]
    discounted: dict[str, jax.Array]
    sum_alpha: jax.Array
    nonfinite_actions: jax.Array


def _alpha_used(rules: tuple[compose.Rule, ...], index, x: compose.RuleInputs) -> jax.Array:
    """The per-state alpha of the lane's rule where it has ``alpha_fn`` (0 for the others)."""
    zero = jnp.zeros(x.actor.mean.shape[:-1], x.actor.mean.dtype)
    return compose.switch(rules, index, x, call=lambda r, x: zero if r.alpha_fn is None else r.alpha_fn(x))


def build_program(env, goals, rules, qualities: tuple[str, ...] = ("trained",), *, max_steps: int,
                  degraded_noise: float = 0.5, sample: bool = False, obs_noise: bool = True, act_noise: bool = True,
                  on_step=None):
    """``program(actor, prior, lanes: Lanes) -> Totals`` (jittable).

    Args:
        env: the environment (any backend). goals: bound goals (:func:`poe_jax.envs.goals.make_goal`),
            indexed by ``Lanes.goal``.
        rules: the grid's rules (names or :class:`~poe_jax.compose.Rule`), indexed by ``Lanes.rule``.
            If one needs a critic, ``actor.critic`` must be set.
        qualities: prior qualities, indexed by ``Lanes.quality``; the untrained networks of
            ``random`` are built (one per lane, from its seed) only when a quality needs them.
        obs_noise, act_noise: static switches; when no lane uses that kind of noise its draws
            are left out (the results are the same, the program cheaper).
        on_step: optional host function of the step index (:func:`poe_jax.rollout.rollout`), for progress.
    """
    rules = tuple(compose.get(r) for r in rules)
    if not rules:
        raise ValueError("build_program: rules is empty")
    m = float(np.asarray(env.action_high)[0])
    adaptive = any(r.alpha_fn is not None for r in rules)
    untrained = any(priors.get(q).needs_untrained for q in qualities)
    metric_set = metrics.METRICS
    discounted = tuple(name for name, mt in metric_set.items() if mt.discounted)

    def program(actor, prior, lanes: Lanes) -> Totals:
        nets_u = (jax.vmap(lambda s: nets.init_prior(prior.spec, priors.random_prior_key(s)).params)(lanes.seed)
                  if untrained else None)  # one untrained prior network per lane, from its seed only

        def policy(obs, key, data):
            lane, u_params = data

            def quality(g, o, k_prior):  # the lane's prior quality (poe_jax.priors)
                u = prior.replace(params=u_params).distribution(o, lane.prior_goal, lane.prior_param) if untrained else g
                return priors.apply(lane.quality, qualities, priors.QualityInputs(g, u, k_prior, m, degraded_noise))

            # the lane's steered policy: the same function a user's own loop calls (poe_jax.policy.steer)
            act = steer(actor, prior, rules, lane.param, goal=lane.prior_goal, goal_param=lane.prior_param,
                        rule_index=lane.rule, sample=sample, obs_noise=lane.obs_noise if obs_noise else None,
                        act_noise=lane.act_noise if act_noise else None,
                        prior_quality=quality if qualities != ("trained",) else None, max_action=m)
            action, info = act(obs, key)
            o, a, g, c, crit = info
            step = metrics.evaluate(metrics.StepInputs(o, a, g, c, action, a.log_prob(action)))
            if adaptive:
                step["__alpha"] = _alpha_used(rules, lane.rule, compose.RuleInputs(a, g, lane.param, crit))
            step["__nonfinite"] = jnp.any(~jnp.isfinite(action)).astype(action.dtype)
            return action, step

        def goal(state, action, nxt, data):
            lane, _ = data
            return jax.lax.switch(lane.goal, [lambda s, a, n, g=g: g(s, a, n) for g in goals], state, action, nxt)

        base = jax.vmap(jax.random.key)(lanes.seed)
        reset_keys = jax.vmap(lambda k, e: jax.random.fold_in(jax.random.fold_in(k, _RESET_TAG), e))(base, lanes.episode)
        step_keys = jax.vmap(lambda k, c, e: jax.random.fold_in(jax.random.fold_in(k, c), e))(
            base, lanes.cell_key, lanes.episode)
        init = jax.vmap(env.reset)(reset_keys)
        init = init.replace(scales=jnp.stack([lanes.mass_scale, lanes.friction_scale], axis=-1))
        ep = ro.rollout(env, policy, step_keys, max_steps=max_steps, goal=goal, init=init, lane=(lanes, nets_u),
                        gamma=metrics.GAMMA, on_step=on_step)
        sums = dict(ep.metrics)
        sum_alpha = sums.pop("__alpha", jnp.zeros_like(ep.return_task))
        nonfinite = sums.pop("__nonfinite")
        return Totals(ep.return_task, ep.return_goal, ep.length, ep.terminated, ep.discounted_goal, ep.max_abs_goal,
                      ep.sum_x_velocity, sums, {k: ep.discounted_metrics[k] for k in discounted}, sum_alpha,
                      nonfinite)

    return program
