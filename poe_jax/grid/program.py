"""The grid's compiled program: one episode per lane, every lane's rule, goal and prior as data.

:func:`build_program` returns ``program(actor, prior, lanes: Lanes) -> Totals``, jittable
and vmapped over the lane axis. What varies per lane (the rule's index, its coefficient,
the goal, the prior quality, the shift) is in :class:`Lanes`; what a grid fixes (its env,
its bound goals, **its own rules**, its prior qualities, the horizon) is static. Rules and
goals are ``lax.switch``-ed over the grid's own tuples only, so a poe-only grid costs
what ``poe`` costs (under ``vmap`` a switch evaluates every branch it has).

Per lane and step (``o`` the observation):

0. shift of the model: the lane's body-mass and friction scales (``State.scales``);
1.-3. the lane's steered policy, :func:`poe_jax.kernels.policy.steer` (the function a user's own loop
   calls): ``o += obs_noise * N(0, I)``; the actor's and the prior's distributions at ``o``,
   then the lane's prior quality (:mod:`poe_jax.kernels.priors`); the lane's rule; the executed action
   is the composed mean (``sample``: a sample), plus ``action_noise * N(0, I)``;
4. every declared signal (:mod:`poe_jax.grid.metrics`): the policy's (evaluated with it: the
   KL and TV to the actor, support violation, the per-state alpha of a rule that has one, ...)
   and the step's outcome's (evaluated after the env's step: the env's and the goal's rewards,
   the forward velocity), each accumulated over the live steps as declared (sum, mean,
   discounted, max, last, any).

Determinism. A lane's initial state comes from ``(seed, episode)`` only, so all cells
start from the same states (common random numbers); its action/prior noise comes from
``(seed, cell_key, episode)``.

Independence from the rest of the grid. The runner builds one program per
(rule, prior quality, noise switches) (:class:`poe_jax.grid.plan.ProgramKey`), calls it on
batches of at least :data:`poe_jax.grid.plan.MIN_BATCH` lanes and, on the native backend, evaluates
the policy that many lanes at a time (``block``), so a lane's episode is bit-equal
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

from poe_jax import nets
from poe_jax.kernels import dispatch, policy, rules as kernels
from poe_jax.grid import metrics
from poe_jax.kernels import priors
from poe_jax.grid import rollout as ro

__all__ = ["Lanes", "Totals", "build_program", "lane_policy", "step_keys", "untrained_params"]

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
        length: live steps. terminated: the env's termination rule fired.
        values: ``{column: accumulator}``, one per declared signal (:func:`poe_jax.grid.metrics.accumulators`);
            :func:`poe_jax.grid.metrics.finalize` turns them into the store's columns.
    """

    length: jax.Array
    terminated: jax.Array
    values: dict[str, jax.Array]


def _alpha_used(rules: tuple[kernels.Rule, ...], index, x: kernels.RuleInputs) -> jax.Array:
    """The per-state alpha of the lane's rule where it has ``alpha_fn`` (0 for the others)."""
    zero = jnp.zeros(x.actor.mean.shape[:-1], x.actor.mean.dtype)
    return dispatch.switch(rules, index, x, call=lambda r, x: zero if r.alpha_fn is None else r.alpha_fn(x))


def step_keys(lanes: Lanes) -> tuple[jax.Array, jax.Array]:
    """``(reset keys, step keys)`` of the lanes: the initial state from ``(seed, episode)`` only (common
    random numbers across cells), the policy's draws from ``(seed, cell_key, episode)``; step ``t`` of the
    rollout acts with ``fold_in(step key, t + 1)``."""
    base = jax.vmap(jax.random.key)(lanes.seed)
    reset = jax.vmap(lambda k, e: jax.random.fold_in(jax.random.fold_in(k, _RESET_TAG), e))(base, lanes.episode)
    step = jax.vmap(lambda k, c, e: jax.random.fold_in(jax.random.fold_in(k, c), e))(base, lanes.cell_key, lanes.episode)
    return reset, step


def untrained_params(prior, lanes: Lanes):
    """One untrained prior network's weights per lane, from its seed only (the ``random`` quality)."""
    return jax.vmap(lambda s: nets.init_prior(prior.spec, priors.random_prior_key(s)).params)(lanes.seed)


def lane_policy(actor, prior, rules, qualities, lane: Lanes, u_params, *, m: float, degraded_noise: float,
                sample: bool, obs_noise: bool, act_noise: bool):
    """One lane's policy (:func:`poe_jax.kernels.policy.lane_policy` at the lane's fields): what the rollout
    runs and the off-policy scorer evaluates."""
    return policy.lane_policy(actor, prior, rules, qualities, param=lane.param, goal=lane.prior_goal,
                              goal_param=lane.prior_param, rule_index=lane.rule, quality_index=lane.quality,
                              untrained=None if u_params is None else prior.replace(params=u_params),
                              degraded_noise=degraded_noise, sample=sample,
                              obs_noise=lane.obs_noise if obs_noise else None,
                              act_noise=lane.act_noise if act_noise else None, max_action=m)


def build_program(env, goals, rules, qualities: tuple[str, ...] = ("trained",), *, max_steps: int,
                  degraded_noise: float = 0.5, sample: bool = False, obs_noise: bool = True, act_noise: bool = True,
                  on_step=None, block: int | None = None):
    """``program(actor, prior, lanes: Lanes) -> Totals`` (jittable).

    Args:
        env: the environment (any backend). goals: bound goals (:func:`poe_jax.envs.goals.make_goal`),
            indexed by ``Lanes.goal``.
        rules: the grid's rules (names or :class:`~poe_jax.kernels.rules.Rule`), indexed by ``Lanes.rule``.
            If one needs a critic, ``actor.critic`` must be set.
        qualities: prior qualities, indexed by ``Lanes.quality``; the untrained networks of
            ``random`` are built (one per lane, from its seed) only when a quality needs them.
        obs_noise, act_noise: static switches; when no lane uses that kind of noise its draws
            are left out (the results are the same, the program cheaper).
        on_step: optional host function of the step index (:func:`poe_jax.grid.rollout.rollout`), for progress.
        block: the policy is evaluated this many lanes at a time (:func:`poe_jax.grid.rollout.lanes_in_blocks`),
            so a lane's actions do not depend on the number of lanes in the call; ``None``: one batch.
    """
    rules = tuple(kernels.get(r) for r in rules)
    if not rules:
        raise ValueError("build_program: rules is empty")
    m = float(np.asarray(env.action_high)[0])
    adaptive = any(r.alpha_fn is not None for r in rules)
    untrained = any(priors.get(q).needs_untrained for q in qualities)
    reductions = metrics.accumulators()

    def program(actor, prior, lanes: Lanes) -> Totals:
        nets_u = untrained_params(prior, lanes) if untrained else None

        def act(obs, key, data):
            lane, u_params = data
            # the lane's steered policy: the same function a user's own loop calls (poe_jax.kernels.policy.steer)
            pi = lane_policy(actor, prior, rules, qualities, lane, u_params, m=m, degraded_noise=degraded_noise,
                             sample=sample, obs_noise=obs_noise, act_noise=act_noise)
            action, info = pi(obs, key)
            alpha = (_alpha_used(rules, lane.rule, kernels.RuleInputs(info.actor, info.prior, lane.param, info.critic))
                     if adaptive else jnp.zeros((), action.dtype))
            # the policy's signals, evaluated with the policy (the outcome's are evaluated after the step)
            return action, metrics.evaluate(metrics.StepInputs(info.obs, info.actor, info.prior, info.composed, action,
                                                               info.actor.log_prob(action), alpha=alpha))

        def goal(state, action, nxt, data):
            lane, _ = data
            return jax.lax.switch(lane.goal, [lambda s, a, n, g=g: g(s, a, n) for g in goals], state, action, nxt)

        def signals(tr, data):
            outcome = metrics.StepInputs(None, None, None, None, tr.action, None, tr.next_state.reward, tr.goal_reward,
                                         tr.next_state)
            return {**tr.info, **metrics.evaluate(outcome, transition=True)}

        reset_keys, keys = step_keys(lanes)
        init = jax.vmap(env.reset)(reset_keys)
        init = init.replace(scales=jnp.stack([lanes.mass_scale, lanes.friction_scale], axis=-1))
        ep = ro.rollout(env, act, keys, max_steps=max_steps, goal=goal, init=init, lane=(lanes, nets_u),
                        gamma=metrics.GAMMA, on_step=on_step, signals=(signals, reductions), block=block)
        return Totals(ep.length, ep.terminated, ep.values)

    return program
