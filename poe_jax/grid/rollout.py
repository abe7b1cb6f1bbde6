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
import numpy as np

from poe_jax.envs.base import Env, State
from poe_jax.grid.metrics import GAMMA

# policy(obs [obs_size], key) -> (action [act_size], info: {name: scalar} or what the signals read)
Policy = Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# goal(state, action, next_state) -> scalar reward
GoalFn = Callable[[State, jax.Array, State], jax.Array]


class Episodes(NamedTuple):
    """Per-lane episode totals (each ``[batch]``).

    Attributes:
        length: control steps taken before done (or ``max_steps``).
        terminated: the env's termination rule fired (not truncation).
        final: the lanes' final :class:`State`.
        values: ``{signal: accumulator}``, one per declared signal (``rollout(signals=...)``), reduced
            over the live steps as declared (``mean`` signals hold their sum: divide by ``length``).

    Without declared signals the rollout accumulates the transition's own: ``return_task`` (the env's
    rewards), ``return_goal`` (the goal's; 0 without one), ``discounted_goal`` (``sum_t gamma^t
    r_goal_t``, the quantity performance-difference bounds speak about), ``max_abs_goal``
    (``max_t |r_goal_t|``), ``sum_x_velocity`` (the forward velocity summed over the live steps;
    divided by ``length`` the episode's mean speed), and each per-step value the policy returns, summed
    (:attr:`metrics`) and ``gamma^t``-discounted (:attr:`discounted_metrics`). Each is also an attribute.
    """

    length: jax.Array
    terminated: jax.Array
    final: State
    values: dict[str, jax.Array]

    def __getattr__(self, name: str):
        values = tuple.__getitem__(self, 3)
        if name in values:
            return values[name]
        raise AttributeError(f"Episodes has no {name!r}; its signals: {', '.join(values)}")

    @property
    def metrics(self) -> dict[str, jax.Array]:
        """The policy's per-step values summed over the live steps (rollouts without declared signals)."""
        return {k.removeprefix("metric:"): v for k, v in self.values.items() if k.startswith("metric:")}

    @property
    def discounted_metrics(self) -> dict[str, jax.Array]:
        """The policy's per-step values summed with weights ``gamma^t``."""
        return {k.removeprefix("discounted:"): v for k, v in self.values.items() if k.startswith("discounted:")}


class Transition(NamedTuple):
    """One lane's step, what a signal reads: the state, the policy's action and what it returned with it
    (``info``), the next state, and the goal's reward (0 without a goal)."""

    state: State
    action: jax.Array
    info: object
    next_state: State
    goal_reward: jax.Array


# signals(transition) -> {name: scalar}, with reductions {name: "sum" | "mean" | ...} (poe_jax.grid.metrics)
Signals = tuple[Callable[[Transition], dict], dict]


def _transition_signals(transition: Transition) -> dict:
    """The default signals: the transition's rewards and speed, and each per-step value the policy returned."""
    g = transition.goal_reward
    out = {"return_task": transition.next_state.reward, "return_goal": g, "discounted_goal": g,
           "max_abs_goal": jnp.abs(g), "sum_x_velocity": transition.next_state.metrics["x_velocity"]}
    for k, v in transition.info.items():
        out[f"metric:{k}"] = out[f"discounted:{k}"] = v
    return out


def _default_reductions(info_keys) -> dict:
    red = {"return_task": "sum", "return_goal": "sum", "discounted_goal": "discounted", "max_abs_goal": "max",
           "sum_x_velocity": "sum"}
    for k in info_keys:
        red[f"metric:{k}"], red[f"discounted:{k}"] = "sum", "discounted"
    return red


_INIT = {"sum": 0.0, "mean": 0.0, "discounted": 0.0, "discounted_mean": 0.0, "max": -jnp.inf, "last": jnp.nan,
         "any": 0.0}


def _accumulate(reduce: str, acc: jax.Array, v: jax.Array, alive: jax.Array, discount: jax.Array) -> jax.Array:
    """One live step of a signal into its accumulator (dead lanes leave it as it is)."""
    if reduce in ("sum", "mean"):
        return acc + jnp.where(alive, v, 0.0)
    if reduce in ("discounted", "discounted_mean"):
        return acc + jnp.where(alive, v, 0.0) * discount
    if reduce == "max":
        return jnp.maximum(acc, jnp.where(alive, v, -jnp.inf))
    if reduce == "last":
        return jnp.where(alive, v, acc)
    if reduce == "any":
        return jnp.maximum(acc, jnp.where(alive & (v != 0), 1.0, 0.0))
    raise ValueError(f"unknown reduction {reduce!r}")


class _Carry(NamedTuple):
    t: jax.Array
    state: State
    length: jax.Array
    values: dict[str, jax.Array]


def lanes_in_blocks(fn: Callable, block: int | None) -> Callable:
    """``jax.vmap(fn)``, computed ``block`` lanes at a time (``lax.map`` over blocks; the last block padded with
    copies of the last lane, whose results are dropped), so every lane's arithmetic has the same shapes whatever
    the number of lanes. XLA's CPU matrix products can round a row differently with the number of rows (on an
    AVX2 CPU a 17-256-256-6 MLP's first row differs by 3e-7 between 8 and 64 rows), and through chaotic
    contacts that becomes another episode; within a block of 8 a row's result is the same at any position.
    ``block=None``: one batch of all lanes (plain ``vmap``)."""
    batched = jax.vmap(fn)
    if block is None:
        return batched

    def run(*args):
        n = jax.tree_util.tree_leaves(args)[0].shape[0]
        m = -(-n // block) * block
        take = np.minimum(np.arange(m), n - 1)  # pad by repeating the last lane (valid inputs, dropped after)
        pad = (lambda x: x[take]) if m > n else (lambda x: x)  # no gather on the hot path when nothing is padded
        blocks = jax.tree_util.tree_map(lambda x: pad(x).reshape(m // block, block, *x.shape[1:]), args)
        out = jax.lax.map(lambda b: batched(*b), blocks)
        return jax.tree_util.tree_map(lambda y: y.reshape(m, *y.shape[2:])[:n], out)

    return run


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
    signals: Signals | None = None,
    block: int | None = None,
) -> Episodes:
    """Run one episode per key (see module docstring). Jittable; ``env``,
    ``policy`` and ``goal`` are static (close over them or mark them static).

    Args:
        env: the environment (any backend).
        policy: ``policy(obs, key) -> (action, info)`` for one lane; it is
            vmapped here. Without ``signals``, ``info`` is a dict of per-step values, summed
            while the lane is alive.
        keys: ``[batch]`` PRNG keys, one per lane.
        max_steps: horizon (default ``env.max_steps``).
        goal: optional deployment reward ``goal(state, action, next_state)``.
        init: optional batched initial states (otherwise ``env.reset``).
        lane: optional pytree of per-lane data (leading axis ``[batch]``); when
            given, it is passed on as ``policy(obs, key, lane_i)`` and
            ``goal(state, action, next_state, lane_i)`` (e.g. each lane's rule,
            coefficient and goal in a grid).
        gamma: the discount of the ``discounted`` reductions.
        on_step: optional host function ``on_step(t)``, called (``jax.debug.callback``) every
            ``every`` steps with the step index, e.g. to move a progress bar; it changes no number.
        signals: ``(fn, reductions)``: ``fn(transition: Transition, lane_i) -> {name: scalar}`` (or
            ``fn(transition)`` without ``lane``) and ``{name: reduction}`` (:data:`poe_jax.grid.metrics.REDUCTIONS`):
            the declared per-step signals and how each reduces over the live steps. Default: the
            transition's rewards and speed and the policy's own values (:class:`Episodes`).
        block: evaluate the policy ``block`` lanes at a time (:func:`lanes_in_blocks`), so that a lane's actions
            do not depend on how many lanes run beside it; default: all lanes in one batch.

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
    if signals is None:
        _, info_shapes = jax.eval_shape(policy, obs1, keys[0], *lane1)
        evaluate = (lambda tr, *_: _transition_signals(tr))
        reductions = _default_reductions(info_shapes)
    else:
        evaluate, reductions = signals
    carry = _Carry(
        t=jnp.zeros((), jnp.int32),
        state=state,
        length=jnp.zeros((batch,), jnp.int32),
        values={k: jnp.full((batch,), _INIT[r], jnp.float32) for k, r in reductions.items()},
    )

    def cond(c: _Carry):
        return (c.t < horizon) & ~jnp.all(c.state.done)

    def body(c: _Carry) -> _Carry:
        if on_step is not None:
            jax.lax.cond(c.t % every == 0, lambda: jax.debug.callback(on_step, c.t), lambda: None)
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, c.t + 1))(keys)
        action, info = lanes_in_blocks(policy, block)(c.state.obs, step_keys, *extra)
        nxt = jax.vmap(env.step)(c.state, action)
        alive = ~c.state.done
        g = jax.vmap(goal)(c.state, action, nxt, *extra) if goal is not None else jnp.zeros((batch,), jnp.float32)
        values = jax.vmap(evaluate)(Transition(c.state, action, info, nxt, g), *extra)
        discount = jnp.asarray(gamma, jnp.float32) ** c.t.astype(jnp.float32)
        return _Carry(
            t=c.t + 1,
            state=nxt,
            length=c.length + alive.astype(jnp.int32),
            values={k: _accumulate(r, c.values[k], jnp.asarray(values[k], jnp.float32), alive, discount)
                    for k, r in reductions.items()},
        )

    out = jax.lax.while_loop(cond, body, carry)
    return Episodes(out.length, out.state.terminated, out.state, out.values)


def deterministic(act_fn: Callable[[jax.Array], jax.Array]) -> Policy:
    """Wrap ``act_fn(obs) -> action`` as a :data:`Policy` with no metrics."""

    def policy(obs, key):
        return act_fn(obs), {}

    return policy


__all__ = ["Episodes", "GoalFn", "Policy", "Signals", "Transition", "deterministic", "rollout"]
