"""Batched fixed-horizon episodes in one compiled loop.

:func:`rollout` runs one episode per lane: ``reset`` from the lane's key, then
``policy -> env.step`` until every lane is done or ``max_steps`` is reached.
The loop is a ``lax.while_loop`` (a ``lax.scan`` cannot stop early): once all
lanes are done it stops, and the native backend never simulates finished lanes
(``env.step`` freezes done lanes and passes them as inactive to the physics).

Per-lane totals stop accumulating after termination. The time limit is
truncation, not termination. PRNG: lane ``i`` resets from
``fold_in(keys[i], 0)`` and acts at step ``t`` with ``fold_in(keys[i], t + 1)``,
so a lane's episode depends only on its own key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from poe_jax.envs.base import Env, State
from poe_jax.metrics import GAMMA

# policy(obs [obs_size], key) -> (action [act_size], metrics {name: scalar})
Policy = Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# goal(state, action, next_state) -> scalar reward
GoalFn = Callable[[State, jax.Array, State], jax.Array]


class Episodes(NamedTuple):
    """Per-lane episode totals (each ``[batch]``).

    Attributes:
        return_task: sum of the env's rewards.
        return_goal: sum of the goal's rewards (0 without a goal).
        discounted_goal: ``sum_t gamma^t r_goal_t`` (the quantity performance-difference
            bounds speak about).
        max_abs_goal: ``max_t |r_goal_t|`` over the live steps.
        discounted_metrics: per-step policy metrics summed with weights ``gamma^t``
            (``(1 - gamma)`` times one is the metric's average under the discounted
            state visitation of the episode).
        length: control steps taken before done (or ``max_steps``).
        terminated: the env's termination rule fired (not truncation).
        metrics: per-step policy metrics summed over the episode.
        final: the lanes' final :class:`State`.
        sum_x_velocity: the env's forward velocity (``metrics["x_velocity"]``) summed over
            the live steps; divided by ``length`` it is the episode's mean speed.
    """

    return_task: jax.Array
    return_goal: jax.Array
    length: jax.Array
    terminated: jax.Array
    metrics: dict[str, jax.Array]
    final: State
    discounted_goal: jax.Array
    max_abs_goal: jax.Array
    discounted_metrics: dict[str, jax.Array]
    sum_x_velocity: jax.Array


class _Carry(NamedTuple):
    t: jax.Array
    state: State
    return_task: jax.Array
    return_goal: jax.Array
    length: jax.Array
    metrics: dict[str, jax.Array]
    discounted_goal: jax.Array
    max_abs_goal: jax.Array
    discounted_metrics: dict[str, jax.Array]
    sum_x_velocity: jax.Array


def rollout(
    env: Env,
    policy: Policy,
    keys: jax.Array,
    max_steps: int | None = None,
    goal: GoalFn | None = None,
    init: State | None = None,
    lane=None,
    gamma: float = GAMMA,
    on_step: Callable[[jax.Array], None] | None = None,
    every: int = 20,
) -> Episodes:
    """Run one episode per key (see module docstring). Jittable; ``env``,
    ``policy`` and ``goal`` are static (close over them or mark them static).

    Args:
        env: the environment (any backend).
        policy: ``policy(obs, key) -> (action, metrics)`` for one lane; it is
            vmapped here. Metrics are summed while the lane is alive.
        keys: ``[batch]`` PRNG keys, one per lane.
        max_steps: horizon (default ``env.max_steps``).
        goal: optional deployment reward ``goal(state, action, next_state)``.
        init: optional batched initial states (otherwise ``env.reset``).
        lane: optional pytree of per-lane data (leading axis ``[batch]``); when
            given, it is passed on as ``policy(obs, key, lane_i)`` and
            ``goal(state, action, next_state, lane_i)`` (e.g. each lane's rule,
            coefficient and goal in a grid).
        gamma: discount of :attr:`Episodes.discounted_goal`.
        on_step: optional host function ``on_step(t)``, called (``jax.debug.callback``) every
            ``every`` steps with the step index, e.g. to move a progress bar; it changes no number.

    Returns:
        :class:`Episodes`.
    """
    horizon = env.max_steps if max_steps is None else int(max_steps)
    reset_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    state = jax.vmap(env.reset)(reset_keys) if init is None else init
    batch = keys.shape[0]
    obs1 = jax.tree_util.tree_map(lambda x: x[0], state.obs)
    extra = () if lane is None else (lane,)
    lane1 = () if lane is None else (jax.tree_util.tree_map(lambda x: x[0], lane),)
    _, metric_shapes = jax.eval_shape(policy, obs1, keys[0], *lane1)
    zeros = jnp.zeros((batch,), jnp.float32)
    carry = _Carry(
        t=jnp.zeros((), jnp.int32),
        state=state,
        return_task=zeros,
        return_goal=zeros,
        length=jnp.zeros((batch,), jnp.int32),
        metrics={k: jnp.zeros((batch,), jnp.float32) for k in metric_shapes},
        discounted_goal=zeros,
        max_abs_goal=zeros,
        discounted_metrics={k: jnp.zeros((batch,), jnp.float32) for k in metric_shapes},
        sum_x_velocity=zeros,
    )

    def cond(c: _Carry):
        return (c.t < horizon) & ~jnp.all(c.state.done)

    def body(c: _Carry) -> _Carry:
        if on_step is not None:
            jax.lax.cond(c.t % every == 0, lambda: jax.debug.callback(on_step, c.t), lambda: None)
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, c.t + 1))(keys)
        action, metrics = jax.vmap(policy)(c.state.obs, step_keys, *extra)
        nxt = jax.vmap(env.step)(c.state, action)
        alive = ~c.state.done
        g = jax.vmap(goal)(c.state, action, nxt, *extra) if goal is not None else zeros
        live = lambda x: jnp.where(alive, x, 0.0)  # noqa: E731
        discount = jnp.asarray(gamma, jnp.float32) ** c.t.astype(jnp.float32)
        return _Carry(
            t=c.t + 1,
            state=nxt,
            return_task=c.return_task + live(nxt.reward),
            return_goal=c.return_goal + live(g),
            length=c.length + alive.astype(jnp.int32),
            metrics={k: c.metrics[k] + live(jnp.asarray(v, jnp.float32)) for k, v in metrics.items()},
            discounted_goal=c.discounted_goal + live(g) * discount,
            max_abs_goal=jnp.maximum(c.max_abs_goal, live(jnp.abs(g))),
            discounted_metrics={k: c.discounted_metrics[k] + live(jnp.asarray(v, jnp.float32)) * discount
                                for k, v in metrics.items()},
            sum_x_velocity=c.sum_x_velocity + live(nxt.metrics["x_velocity"]),
        )

    out = jax.lax.while_loop(cond, body, carry)
    return Episodes(out.return_task, out.return_goal, out.length, out.state.terminated, out.metrics, out.state,
                    out.discounted_goal, out.max_abs_goal, out.discounted_metrics, out.sum_x_velocity)


def deterministic(act_fn: Callable[[jax.Array], jax.Array]) -> Policy:
    """Wrap ``act_fn(obs) -> action`` as a :data:`Policy` with no metrics."""

    def policy(obs, key):
        return act_fn(obs), {}

    return policy


__all__ = ["Episodes", "GoalFn", "Policy", "deterministic", "rollout"]
