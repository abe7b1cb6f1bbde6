"""Goal-conditioned Gaussian priors by advantage-weighted regression (AWR).

For a D4RL-format dataset (with ``infos/qpos``, ``infos/qvel``):

1. every transition is replayed through the env from its stored state to get
   ``(state, action, next_state)``; each *task* -- a goal, and for a goal with a
   continuous parameter (G3's target speed) that goal at each of ``n_params`` values
   spread over the range the data contain -- gets its reward ``r_t``
   (:mod:`poe_jax.envs.goals`);
2. discounted returns-to-go ``G_t`` (gamma 0.99) are summed backwards within each
   trajectory (terminals and timeouts end one);
3. a task-conditioned value ``V(s, t)`` is regressed on ``G_t / std(G_t)``;
4. advantages ``A = G_t / std(G_t) - V(s, t)`` are **normalised per task**,
   ``Â = A / std_t(A)``, and weighted as in Peng et al. 2019 (AWR) and IQL's actor
   extraction: ``w = min(exp(Â / beta), w_max)``. Normalising per task makes the
   temperature mean the same for every goal: without it (the first zoo's priors) the
   advantages were a few hundredths of the return's std, the weights were all about
   1 and the prior was behaviour cloning whatever the goal;
5. the prior ``pi(a | s, g, param)`` (:class:`~poe_jax.nets.GoalPrior`) maximises
   ``E[w log pi(a | s, t)]`` over (transition, task) pairs drawn uniformly.

**Calibrated std.** The env clips actions at ``±max_action`` and the data hold the
clipped actions, so an action at the bound says only that the Gaussian's draw was at
or beyond it. The likelihood treats such actions as *censored* (Tobit):
``log P(u >= bound) = log Φ((μ - bound)/σ)``, and the ordinary density elsewhere. A
plain Gaussian density on clipped actions (the first zoo's priors) collapses σ to its
floor wherever the data saturate (hopper push-off: about 18% of states).

``beta`` (default 0.5) was chosen by a measurement (``checkpoints/README.md``): the
effective sample size of the weights per task and how far the priors' means for
different goals move apart on the probe states.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import log_ndtr

from poe_jax.envs.goals import GOALS

from poe_jax import nets
from poe_jax.train.offline import check_losses
from poe_jax.train.resume import Checkpointer

__all__ = ["PriorConfig", "Tasks", "subsample", "censored_log_prob", "goal_rewards", "returns_to_go", "tasks_for", "train",
           "awr_weights", "effective_sample_fraction", "heldout_nll"]

CENSOR_AT = 0.999  # actions at or beyond this fraction of max_action count as clipped (censored)


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    steps: int = 30_000  # prior updates
    v_steps: int = 10_000  # value updates
    batch: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    beta: float = 0.5  # AWR temperature on per-task normalised advantages
    w_max: float = 20.0  # Peng et al. 2019
    baseline: str = "value"  # "value": AWR, A = G - V(s, task); "none": return-weighted, A = G - mean_task(G)
    hidden: tuple[int, ...] = (256, 256)
    n_params: int = 8  # values of a continuous goal parameter trained on
    param_quantiles: tuple[float, float] = (0.05, 0.95)  # its range: quantiles of the data's speeds
    holdout: float = 0.05  # last fraction of rows held out for the NLL
    fraction: float = 1.0  # share of the training trajectories kept (whole trajectories, drawn with ``seed``)
    chunk: int = 1_000
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Tasks:
    """The tasks a prior is trained on: goal index and parameter value per task, the
    goal parameter entries of its :class:`~poe_jax.nets.PriorSpec`."""

    goal: np.ndarray  # [T] goal index
    value: np.ndarray  # [T] parameter value (0 for goals without one)
    goal_params: tuple


def subsample(data: dict, n_train: int, fraction: float, seed: int) -> tuple[dict, int]:
    """``data`` with only a ``fraction`` of the whole trajectories in its first ``n_train`` rows, drawn
    without replacement with ``seed``, and its held-out rows ``[n_train:]`` unchanged; returns the new data
    and its number of training rows. A prior trained on it sees less of the same distribution (the
    ``small-data`` prior of the zoo): its held-out NLL is measured on the same rows as the full prior's."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"PriorConfig.fraction: expected a share in (0, 1]; got {fraction!r}")
    if fraction == 1.0:
        return data, n_train
    ends = np.flatnonzero((np.asarray(data["terminals"], bool) | np.asarray(data["timeouts"], bool))[:n_train])
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends + 1, [n_train]])
    keep = stops > starts
    starts, stops = starts[keep], stops[keep]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(starts))
    lengths = (stops - starts)[order]
    n_keep = max(1, int(np.searchsorted(np.cumsum(lengths), fraction * n_train)) + 1)
    chosen = np.sort(order[:min(n_keep, len(order))])
    rows = np.concatenate([np.arange(starts[i], stops[i]) for i in chosen] + [np.arange(n_train, len(data["observations"]))])
    n = len(data["observations"])
    out = {k: (np.asarray(v)[rows] if np.ndim(v) and len(v) == n else v) for k, v in data.items()}
    n_small = int(sum(stops[i] - starts[i] for i in chosen))
    cut = np.cumsum([stops[i] - starts[i] for i in chosen]) - 1  # each kept trajectory ends where it did
    out["timeouts"] = np.asarray(out["timeouts"], bool).copy()
    out["timeouts"][cut] |= ~np.asarray(out["terminals"], bool)[cut]
    return out, n_small


def censored_log_prob(mean, std, action, bound):
    """Log-likelihood of clipped actions under N(mean, std): the density inside
    ``(-bound, bound)``, the tail mass ``Φ`` for actions at a bound; summed over the
    last axis. ``bound`` is the clipping level (e.g. ``0.999 * max_action``)."""
    z_hi = (mean - bound) / std
    z_lo = (-bound - mean) / std
    dens = -0.5 * ((action - mean) / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)
    lp = jnp.where(action >= bound, log_ndtr(z_hi), jnp.where(action <= -bound, log_ndtr(z_lo), dens))
    return lp.sum(-1)


def _replay(env, data: dict, fn: Callable, batch: int = 20_000) -> np.ndarray:
    """``fn(state, action, next_state)`` (vmapped) over the dataset's transitions, replayed
    from their stored ``infos`` states in batches; the results concatenated."""
    step = jax.jit(jax.vmap(env.step))
    fn = jax.jit(jax.vmap(fn))
    out = []
    n = len(data["observations"])
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        goal = {"goal": data["infos/goal"][lo:hi]} if "infos/goal" in data else {}  # AntMaze: the episode's goal
        s0 = env.reset_to_batch(data["infos/qpos"][lo:hi], data["infos/qvel"][lo:hi], **goal)
        a = jnp.asarray(data["actions"][lo:hi], jnp.float32)
        out.append(np.asarray(fn(s0, a, step(s0, a))))
    return np.concatenate(out)


def tasks_for(goals: Sequence, speeds: np.ndarray, cfg: PriorConfig) -> Tasks:
    """One task per goal without a continuous parameter; ``cfg.n_params`` tasks for a goal that tracks a
    target (``GoalDef.tracks``, e.g. G3's target speed), at targets spread evenly between the quantiles ``cfg.param_quantiles`` of ``speeds``."""
    goal, value, entries = [], [], []
    for i, g in enumerate(goals):
        tracks = GOALS[g.name].tracks  # (signal, param) of a goal that tracks a continuous target
        if tracks is not None:
            lo, hi = (float(np.quantile(speeds, q)) for q in cfg.param_quantiles)
            lo = max(lo, 0.0)
            grid = np.linspace(lo, hi, cfg.n_params)
            goal += [i] * len(grid)
            value += list(grid)
            entries.append((g.name, tracks[1], lo, hi, float(g.params[tracks[1]])))
        else:
            goal.append(i)
            value.append(0.0)
    return Tasks(np.asarray(goal, np.int32), np.asarray(value, np.float32), tuple(entries))


def goal_rewards(env, data: dict, goals: Sequence, tasks: Tasks | None = None, batch: int = 20_000) -> np.ndarray:
    """``[N, T]`` rewards of the dataset's transitions (replayed from ``infos``), one column
    per task (default: one per goal at its bound parameters)."""
    if tasks is None:
        tasks = Tasks(np.arange(len(goals), dtype=np.int32), np.zeros(len(goals), np.float32), ())
    cols = [(goals[g], float(v)) for g, v in zip(tasks.goal, tasks.value)]
    target = {g.name: GOALS[g.name].tracks[1] for g, _ in cols if GOALS[g.name].tracks}  # the goal's target param

    def one(s, a, n):
        return jnp.stack([g(s, a, n, **{target[g.name]: v}) if g.name in target else g(s, a, n) for g, v in cols])

    return _replay(env, data, one, batch)


def returns_to_go(rewards: np.ndarray, ends: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted sums backwards within trajectories (``ends[i]`` closes one at row ``i``)."""
    out = np.zeros_like(rewards, dtype=np.float64)
    acc = np.zeros(rewards.shape[1:])
    for i in range(len(rewards) - 1, -1, -1):
        if ends[i]:
            acc = np.zeros(rewards.shape[1:])
        acc = rewards[i] + gamma * acc
        out[i] = acc
    return out.astype(np.float32)


def awr_weights(adv: np.ndarray, beta: float, w_max: float) -> np.ndarray:
    """``min(exp(A / std_t(A) / beta), w_max)`` per task column of ``adv`` ``[N, T]``."""
    a = adv / np.maximum(adv.std(0), 1e-6)
    return np.exp(np.minimum(a / beta, np.log(w_max))).astype(np.float32)


def effective_sample_fraction(w: np.ndarray) -> np.ndarray:
    """Kish's effective sample size of weights ``[N, T]`` per column, as a fraction of N."""
    return (w.sum(0) ** 2 / (w * w).sum(0)) / len(w)


def train(env, data: dict, goal_names: Sequence[str], cfg: PriorConfig = PriorConfig(),
          log: Callable = print, checkpoint_dir: str | Path | None = None) -> tuple[nets.GoalPrior, dict]:
    """Fit a :class:`~poe_jax.nets.GoalPrior` on ``data`` for ``goal_names`` (module docstring).

    ``checkpoint_dir``: where the value and prior fits save their state every minute and on Ctrl-C
    (:mod:`poe_jax.train.resume`); a run that finds them resumes, bit for bit."""
    from poe_jax.envs.goals import make_goal

    goals = [make_goal(g, env.name) for g in goal_names]
    t0 = time.time()
    data, n_train = subsample(data, heldout_start(len(data["observations"]), cfg.holdout), cfg.fraction, cfg.seed)
    speeds = _replay(env, data, lambda s, a, n: n.metrics["x_velocity"])
    tasks = tasks_for(goals, speeds, cfg)
    r = goal_rewards(env, data, goals, tasks)
    ends = np.asarray(data["terminals"], bool) | np.asarray(data["timeouts"], bool)
    rtg = returns_to_go(r, ends, cfg.gamma)
    scale = np.maximum(rtg.std(0), 1e-6)
    y = jnp.asarray(rtg / scale)
    norm = nets.ObsNorm.from_data(data["observations"])
    max_action = float(np.asarray(env.action_high)[0])
    spec = nets.PriorSpec(env.obs_size, env.act_size, tuple(goal_names), cfg.hidden, max_action=max_action,
                          goal_params=tasks.goal_params, likelihood="censored", std_scale="max_action")
    n_all = len(data["observations"])
    obs_all = jnp.asarray(norm(data["observations"]))
    act_all = jnp.asarray(np.clip(data["actions"], -max_action, max_action), jnp.float32)
    bound = CENSOR_AT * max_action
    t_goal = jnp.asarray(tasks.goal)
    t_feat = spec.param_feature(t_goal, jnp.asarray(tasks.value))
    n_goals, n_tasks = len(goals), len(tasks.goal)
    k_p, k_v, k_1, k_2 = jax.random.split(jax.random.key(cfg.seed), 4)
    vnet = nets.MLP((*cfg.hidden, 1))

    def v_in(s, t):
        return jnp.concatenate([s, jax.nn.one_hot(t_goal[t], n_goals), t_feat[t][..., None]], -1)

    v_params = vnet.init(k_v, v_in(obs_all[:1], jnp.zeros(1, jnp.int32)))["params"]
    opt = optax.adam(cfg.lr)
    fits = []  # the fits' checkpoints, cleared once the prior is trained

    def fit(params, loss, steps, key, name):
        o = opt.init(params)

        @jax.jit
        def chunk(p, o, key):
            def body(c, k):
                p, o = c
                k1, k2 = jax.random.split(k)
                idx = jax.random.randint(k1, (cfg.batch,), 0, n_train)
                t = jax.random.randint(k2, (cfg.batch,), 0, n_tasks)
                l, grads = jax.value_and_grad(loss)(p, idx, t)
                upd, o = opt.update(grads, o, p)
                return (optax.apply_updates(p, upd), o), l

            (p, o), m = jax.lax.scan(body, (p, o), jax.random.split(key, cfg.chunk))
            return p, o, m.mean()

        n_chunks = -(-steps // cfg.chunk)
        ck = Checkpointer(None if checkpoint_dir is None else Path(checkpoint_dir) / f".{env.name}-prior-{name}.npz",
                          {"name": name, "steps": steps, "config": repr(cfg), "goals": list(goal_names),
                           "rows": n_all})
        (params, o), nxt = ck.restore((params, o))
        try:
            for i in range(nxt, n_chunks):
                (params, o, m), nxt = chunk(params, o, jax.random.fold_in(key, i)), i + 1
                check_losses(f"prior {name}", m, ("loss",), nxt * cfg.chunk)
                if i % 10 == 0:
                    log(f"{name} step {nxt * cfg.chunk:7d}  loss {float(m):8.4f}")
                ck.maybe_save((params, o), nxt)
        except KeyboardInterrupt:
            raise ck.interrupted((params, o), nxt, cfg.chunk, steps) from None
        ck.save((params, o), n_chunks)  # kept until the whole prior is trained: a later interrupt resumes after it
        fits.append(ck)
        return params

    def v_loss(p, idx, t):
        v = vnet.apply({"params": p}, v_in(obs_all[idx], t))[..., 0]
        return jnp.mean((v - y[idx, t]) ** 2)

    if cfg.baseline == "value":
        v_params = fit(v_params, v_loss, cfg.v_steps, k_1, "value")
        v_all = jax.jit(lambda s: jnp.stack([vnet.apply({"params": v_params}, v_in(s, jnp.full(s.shape[0], t)))[..., 0]
                                             for t in range(n_tasks)], -1))
        v_pred = np.concatenate([np.asarray(v_all(obs_all[lo:lo + 20_000])) for lo in range(0, n_all, 20_000)])
    elif cfg.baseline == "none":
        v_pred = np.asarray(y)[:n_train].mean(0, keepdims=True)
    else:
        raise ValueError(f"baseline: expected 'value' or 'none'; got {cfg.baseline!r}")
    adv = np.asarray(y) - v_pred
    w = jnp.asarray(awr_weights(adv[:n_train], cfg.beta, cfg.w_max))
    ess = effective_sample_fraction(np.asarray(w))
    log("AWR weights: effective sample fraction per task " + ", ".join(f"{e:.2f}" for e in ess))

    prior = nets.init_prior(spec, k_p)
    net = nets._PriorNet(spec)

    def p_loss(p, idx, t):
        mean, std = net.apply({"params": p}, obs_all[idx], t_goal[t], t_feat[t])
        return -jnp.mean(w[idx, t] * censored_log_prob(mean, std, act_all[idx], bound))

    params = fit(prior.params, p_loss, cfg.steps, k_2, "prior")
    for ck in fits:
        ck.clear()
    out = nets.GoalPrior(params, norm, spec)
    info = {"tasks": [{"goal": goal_names[g], "param": float(v)} for g, v in zip(tasks.goal, tasks.value)],
            "rtg_scale": scale.tolist(), "effective_sample_fraction": [round(float(e), 4) for e in ess],
            "speed_quantiles": {q: round(float(np.quantile(speeds, q)), 3) for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
            "train_rows": n_train, "holdout_rows": n_all - n_train, "seconds": round(time.time() - t0, 1)}
    return out, info


def heldout_start(n_rows: int, holdout: float) -> int:
    """The first held-out row of a dataset of ``n_rows``: its last ``holdout`` share, which training never reads
    (:func:`train`), the held-out NLL and the shipped calibration rows do."""
    return int(n_rows * (1.0 - holdout))


def heldout_nll(prior: nets.GoalPrior, data: dict, goal: str, holdout: float = 0.05) -> dict:
    """Mean negative log-likelihood per action dim of the last ``holdout`` rows of ``data`` under
    ``prior``'s ``goal`` head: plain Gaussian density, and censored at ``CENSOR_AT * max_action``."""
    lo = heldout_start(len(data["observations"]), holdout)
    obs = jnp.asarray(data["observations"][lo:], jnp.float32)
    m = prior.spec.max_action
    act = jnp.clip(jnp.asarray(data["actions"][lo:], jnp.float32), -m, m)
    d = prior.distribution(obs, prior.spec.goal_index(goal))
    a_dim = act.shape[-1]
    return {"gaussian": float(-jnp.mean(d.log_prob(act)) / a_dim),
            "censored": float(-jnp.mean(censored_log_prob(d.mean, d.std, act, CENSOR_AT * m)) / a_dim)}
