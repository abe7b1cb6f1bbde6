"""Online SAC in JAX/optax on poe_jax's envs, to make D4RL-style behaviour policies.

Everything between two host checkpoints is one compiled ``lax.scan``: ``lanes``
envs step together (native or MJX physics), transitions go into a replay buffer
held in device arrays, and each env step is followed by ``updates_per_step``
gradient updates of the twin critics, the actor and the temperature (Haarnoja et
al. 2018, automatic entropy tuning with target entropy ``-act_dim``).

The actor is a tanh-squashed Gaussian with separate mean and log-std heads,
saved as :class:`~poe_jax.nets.ActorSpec` ``sac_n`` (hidden 256-256), so it loads
like any other frozen actor. Hyper-parameters (:class:`SACConfig`) follow the SAC
paper: lr 3e-4, batch 256, gamma 0.99, tau 0.005, 256-256 networks; ``critic_lr``
optionally gives the critics and the temperature their own rate (as CleanRL's ``q_lr``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poe_jax import nets
from poe_jax.train.resume import TrainInterrupted
from poe_jax.kernels.gaussian import DiagGaussian

__all__ = ["SACConfig", "SACState", "evaluate", "init", "load_state", "save_state", "train"]


@dataclasses.dataclass(frozen=True)
class SACConfig:
    steps: int = 300_000  # env steps (all lanes together)
    lanes: int = 1
    warmup: int = 5_000  # uniform random actions before this many env steps
    batch: int = 256
    lr: float = 3e-4
    critic_lr: float | None = None  # critics and temperature; None: ``lr``
    gamma: float = 0.99
    tau: float = 0.005
    hidden: tuple[int, ...] = (256, 256)
    updates_per_step: int = 1  # gradient updates per env step of one lane
    buffer: int = 1_000_000
    chunk: int = 1_000  # scan iterations per compiled call
    seed: int = 0


class Buffer(NamedTuple):
    obs: jax.Array
    act: jax.Array
    rew: jax.Array
    next_obs: jax.Array
    term: jax.Array
    ptr: jax.Array
    size: jax.Array


class SACState(NamedTuple):
    actor: Any
    critic: Any
    target: Any
    log_alpha: jax.Array
    opt_actor: Any
    opt_critic: Any
    opt_alpha: Any
    buffer: Buffer
    env_state: Any
    ep_return: jax.Array
    finished: jax.Array  # ring of the last 64 finished episode returns
    n_finished: jax.Array
    key: jax.Array
    step: jax.Array  # env steps so far (per lane count x lanes)


def _actor_spec(env, cfg: SACConfig) -> nets.ActorSpec:
    return nets.ActorSpec("sac_n", env.obs_size, env.act_size, cfg.hidden, float(np.asarray(env.action_high)[0]))


def _q(params, obs, act, hidden):
    mlp = nets.MLP((*hidden, 1))
    sa = jnp.concatenate([obs, act], -1)
    return mlp.apply({"params": params["q1"]}, sa)[..., 0], mlp.apply({"params": params["q2"]}, sa)[..., 0]


def _pi(params, spec, obs, key):
    """Sample a tanh-Gaussian action and its log-density (SAC appendix C)."""
    mu, std = nets._module(spec).apply({"params": params}, obs)
    u = mu + std * jax.random.normal(key, mu.shape)
    a = jnp.tanh(u)
    logp = DiagGaussian(mu, std).log_prob(u)
    logp -= jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), -1)
    return a * spec.max_action, logp - spec.act_size * jnp.log(spec.max_action)


def init(env, cfg: SACConfig) -> tuple[SACState, Callable]:
    spec = _actor_spec(env, cfg)
    key = jax.random.key(cfg.seed)
    k_actor, k_q1, k_q2, k_env, key = jax.random.split(key, 5)
    actor = nets.init_actor(spec, k_actor).params
    mlp = nets.MLP((*cfg.hidden, 1))
    sa = jnp.zeros((1, env.obs_size + env.act_size))
    critic = {"q1": mlp.init(k_q1, sa)["params"], "q2": mlp.init(k_q2, sa)["params"]}
    opt = optax.adam(cfg.lr)
    opt_q = optax.adam(cfg.lr if cfg.critic_lr is None else cfg.critic_lr)  # critics and temperature
    per_chunk = cfg.chunk * cfg.lanes
    n = max(per_chunk, min(cfg.buffer, cfg.steps) // per_chunk * per_chunk)  # whole chunks: no wrap within one
    o, a = env.obs_size, env.act_size
    buf = Buffer(jnp.zeros((n, o)), jnp.zeros((n, a)), jnp.zeros(n), jnp.zeros((n, o)), jnp.zeros(n, bool),
                 jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    env_state = jax.vmap(env.reset)(jax.random.split(k_env, cfg.lanes))
    log_alpha = jnp.zeros(())
    target = jax.tree_util.tree_map(jnp.copy, critic)  # its own buffers: chunk() donates the state
    state = SACState(actor, critic, target, log_alpha, opt.init(actor), opt_q.init(critic), opt_q.init(log_alpha), buf,
                     env_state, jnp.zeros(cfg.lanes), jnp.full(64, jnp.nan), jnp.zeros((), jnp.int32), key,
                     jnp.zeros((), jnp.int32))

    def sample(b: Buffer, recent: tuple, filled, idx):
        """Rows ``idx`` of the replay buffer as it stands: ``b`` (the buffer at the start of
        the chunk, read-only) overlaid with the ``filled`` rows written since, held in
        ``recent`` (obs, act, rew, next_obs, term) and due at ``b.ptr``. Writing into the big
        buffer inside the scan made XLA copy all of it every step (0.38x the speed at 1M rows,
        ``benchmarks/sac_throughput.py``); it is written once per chunk."""
        j = idx - b.ptr
        new = (j >= 0) & (j < filled)
        j = jnp.clip(j, 0, per_chunk - 1)
        pick = lambda big, small: jnp.where(new.reshape(-1, *([1] * (big.ndim - 1))), small[j], big[idx])  # noqa: E731
        return [pick(x, y) for x, y in zip(b[:5], recent)]

    def update(s: SACState, b: Buffer, recent: tuple, filled, key) -> SACState:
        k_idx, k_next, k_pi = jax.random.split(key, 3)
        size = jnp.minimum(b.size + filled, b.obs.shape[0])
        idx = jax.random.randint(k_idx, (cfg.batch,), 0, jnp.maximum(size, 1))
        obs, act, rew, nobs, term = sample(b, recent, filled, idx)
        alpha = jnp.exp(s.log_alpha)
        na, nlogp = _pi(s.actor, spec, nobs, k_next)
        tq = jnp.minimum(*_q(s.target, nobs, na, cfg.hidden)) - alpha * nlogp
        y = jax.lax.stop_gradient(rew + cfg.gamma * (1.0 - term) * tq)

        def critic_loss(p):
            q1, q2 = _q(p, obs, act, cfg.hidden)
            return jnp.mean((q1 - y) ** 2) + jnp.mean((q2 - y) ** 2)

        g = jax.grad(critic_loss)(s.critic)
        upd, opt_c = opt_q.update(g, s.opt_critic, s.critic)
        critic = optax.apply_updates(s.critic, upd)

        def actor_loss(p):
            a, logp = _pi(p, spec, obs, k_pi)
            q = jnp.minimum(*_q(critic, obs, a, cfg.hidden))
            return jnp.mean(alpha * logp - q), logp

        (_, logp), g = jax.value_and_grad(actor_loss, has_aux=True)(s.actor)
        upd, opt_a = opt.update(g, s.opt_actor, s.actor)
        actor = optax.apply_updates(s.actor, upd)
        target_entropy = -float(spec.act_size)
        g_alpha = jax.grad(lambda la: -jnp.mean(la * jax.lax.stop_gradient(logp + target_entropy)))(s.log_alpha)
        upd, opt_al = opt_q.update(g_alpha, s.opt_alpha, s.log_alpha)
        log_alpha = optax.apply_updates(s.log_alpha, upd)
        target = optax.incremental_update(critic, s.target, cfg.tau)
        return s._replace(actor=actor, critic=critic, target=target, log_alpha=log_alpha, opt_actor=opt_a,
                          opt_critic=opt_c, opt_alpha=opt_al)

    def iteration(carry, _):
        s, recent, filled = carry  # s.buffer: the buffer at the chunk's start (read-only in the scan)
        key, k_act, k_rand, k_reset, k_upd = jax.random.split(s.key, 5)
        obs = s.env_state.obs
        a_pi, _ = _pi(s.actor, spec, obs, k_act)
        a_rand = jax.random.uniform(k_rand, a_pi.shape, minval=-spec.max_action, maxval=spec.max_action)
        act = jnp.where(s.step < cfg.warmup, a_rand, a_pi)
        nxt = jax.vmap(env.step)(s.env_state, act)
        recent = tuple(jax.lax.dynamic_update_slice_in_dim(x, v.astype(x.dtype), filled, 0)
                       for x, v in zip(recent, (obs, act, nxt.reward, nxt.obs, nxt.terminated)))
        filled = filled + cfg.lanes
        ep_ret = s.ep_return + nxt.reward
        fresh = jax.vmap(env.reset)(jax.random.split(k_reset, cfg.lanes))
        env_state = jax.tree_util.tree_map(
            lambda f, x: jnp.where(nxt.done.reshape(-1, *([1] * (x.ndim - 1))), f, x), fresh, nxt)
        # record finished returns in the ring
        order = jnp.cumsum(nxt.done) - 1
        slots = jnp.where(nxt.done, (s.n_finished + order) % 64, 64)
        finished = s.finished.at[slots].set(ep_ret, mode="drop")
        s = s._replace(env_state=env_state, ep_return=jnp.where(nxt.done, 0.0, ep_ret),
                       finished=finished, n_finished=s.n_finished + jnp.sum(nxt.done), key=key,
                       step=s.step + cfg.lanes)
        keys = jax.random.split(k_upd, cfg.updates_per_step * cfg.lanes)
        s = jax.lax.fori_loop(0, keys.shape[0], lambda i, st: update(st, s.buffer, recent, filled, keys[i]), s)
        return (s, recent, filled), None

    @functools.partial(jax.jit, donate_argnums=0)  # the buffer is updated in place, not copied
    def chunk(s: SACState) -> SACState:
        b = s.buffer
        recent = tuple(jnp.zeros((per_chunk, *x.shape[1:]), x.dtype) for x in b[:5])
        (s, recent, _), _ = jax.lax.scan(iteration, (s, recent, jnp.zeros((), jnp.int32)), None, length=cfg.chunk)
        buf = Buffer(*(jax.lax.dynamic_update_slice_in_dim(x, v, b.ptr, 0) for x, v in zip(b[:5], recent)),
                     (b.ptr + per_chunk) % n, jnp.minimum(b.size + per_chunk, n))
        return s._replace(buffer=buf)

    return state, chunk


def evaluate(env, actor: nets.Actor, episodes: int, seed: int = 10_000) -> np.ndarray:
    """Deterministic returns of ``actor`` over ``episodes`` episodes (one batched rollout)."""
    from poe_jax.grid import rollout

    run = jax.jit(lambda k: rollout.rollout(env, rollout.deterministic(actor.act), k).return_task)
    return np.asarray(run(jax.random.split(jax.random.key(seed), episodes)))


def save_state(path, state: SACState, cfg: SACConfig, seconds: float = 0.0) -> None:
    """Write the whole training state (networks, optimisers, replay buffer, envs, PRNG) to ``path`` (.npz),
    with ``seconds``, the wall time spent training to this state over every sitting.

    Atomic (temporary file, then rename), so a run killed while saving keeps the last state.
    """
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"a{i}": np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
              for i, x in enumerate(leaves)}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez(tmp, config=np.asarray(repr(cfg)), seconds=np.asarray(float(seconds)), **arrays)
    os.replace(tmp, path)


def saved_seconds(path) -> float:
    """The training wall time recorded with the state at ``path`` (0 for a file written without it)."""
    with np.load(path) as z:
        return float(z["seconds"]) if "seconds" in z.files else 0.0


def load_state(path, template: SACState, cfg: SACConfig) -> SACState:
    """The state saved by :func:`save_state`, checked against ``cfg`` and ``template``'s structure."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    with np.load(path) as z:
        if str(z["config"]) != repr(cfg):
            raise ValueError(f"{path}: saved with another SAC config ({z['config']}); expected {cfg!r}")
        out = []
        for i, t in enumerate(leaves):
            a = z[f"a{i}"]
            if jnp.issubdtype(t.dtype, jax.dtypes.prng_key):
                out.append(jax.random.wrap_key_data(jnp.asarray(a)))
            else:
                if a.shape != t.shape:
                    raise ValueError(f"{path}: array {i} has shape {a.shape}; expected {t.shape}")
                out.append(jnp.asarray(a, t.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def train(env, cfg: SACConfig, eval_every: int = 20_000, eval_episodes: int = 10, log: Callable = print,
          time_budget: float | None = None, on_snapshot: Callable | None = None, checkpoint=None):
    """Train; returns ``(final_state, snapshots)`` where each snapshot is
    ``{"step", "eval_return", "actor": nets.Actor (host arrays), "buffer_size", "seconds"}``, ``seconds``
    being the wall time spent training to it, earlier sittings of a resumed run included.

    ``time_budget`` (seconds) stops training early, after a final evaluation.
    ``on_snapshot(snapshot)`` is called after each evaluation (e.g. to save it).
    ``checkpoint``: a ``.npz`` path; when it exists training resumes from it (same
    config), and the state is saved there after every evaluation, so a run cut
    short by a time budget or a kill continues where it stopped.
    """
    state, chunk = init(env, cfg)
    before = 0.0  # seconds spent in earlier sittings
    if checkpoint is not None and Path(checkpoint).exists():
        state, before = load_state(checkpoint, state, cfg), saved_seconds(checkpoint)
        log(f"resumed from {checkpoint} at step {int(state.step)}, after {before:.0f} s of training")
    spec = _actor_spec(env, cfg)
    snapshots = []
    t0 = time.time()
    total = lambda: before + time.time() - t0  # noqa: E731
    n_chunks = -(-cfg.steps // (cfg.chunk * cfg.lanes))
    start = int(state.step) // (cfg.chunk * cfg.lanes)
    holder = [state]  # the last finished chunk's state, also when Ctrl-C stops the loop
    try:
        _chunk_loop(env, cfg, chunk, holder, spec, start, n_chunks, t0, total, eval_every, eval_episodes, log,
                    time_budget, on_snapshot, checkpoint, snapshots)
    except KeyboardInterrupt:
        if checkpoint is not None:
            save_state(checkpoint, holder[0], cfg, total())
        where = f"state saved to {checkpoint}" if checkpoint is not None else "no checkpoint file, nothing saved"
        raise TrainInterrupted(f"interrupted at step {int(holder[0].step)} of {cfg.steps}; {where}; run the same "
                               "command again to resume") from None
    return holder[0], snapshots


def _chunk_loop(env, cfg, chunk, holder, spec, start, n_chunks, t0, total, eval_every, eval_episodes, log,
                time_budget, on_snapshot, checkpoint, snapshots):
    for i in range(start, n_chunks):
        state = holder[0] = chunk(holder[0])
        step = int(state.step)
        eta = (time.time() - t0) / (i + 1 - start) * (n_chunks - i - 1)
        if i == start:  # progress from the first seconds (the first eval is eval_every steps away)
            log(f"step {step:8d} of {cfg.steps}  {time.time() - t0:7.0f} s, eta {eta:6.0f} s")
        out_of_time = time_budget is not None and time.time() - t0 > time_budget
        if step % eval_every < cfg.chunk * cfg.lanes or i == n_chunks - 1 or out_of_time:
            actor = nets.Actor(jax.device_get(state.actor), nets.ObsNorm.identity(env.obs_size), spec)
            ret = evaluate(env, actor, eval_episodes)
            recent = np.asarray(state.finished)
            snapshots.append({"step": step, "eval_return": float(ret.mean()), "eval_std": float(ret.std()),
                              "actor": actor, "buffer_size": int(state.buffer.size), "seconds": round(total(), 1)})
            log(f"step {step:8d}  eval {ret.mean():9.1f} ± {ret.std():7.1f}  train(last 64) {np.nanmean(recent):9.1f}  "
                f"alpha {float(jnp.exp(state.log_alpha)):.3f}  {time.time() - t0:7.0f} s, eta {eta:6.0f} s")
            if on_snapshot is not None:
                on_snapshot(snapshots[-1])
            if checkpoint is not None:
                save_state(checkpoint, state, cfg, snapshots[-1]["seconds"])
        if out_of_time:
            log(f"time budget of {time_budget:.0f} s reached at step {step}")
            break
