"""Goal-conditioned Gaussian priors by advantage-weighted regression (AWR).

For a D4RL-format dataset (with ``infos/qpos``, ``infos/qvel``):

1. every transition is replayed through the env from its stored state to get
   ``(state, action, next_state)``, and each goal's reward ``r_g`` is computed
   (:mod:`poe_jax.envs.goals`);
2. discounted returns-to-go ``G_g`` (gamma 0.99) are summed backwards within each
   trajectory (terminals and timeouts end one);
3. a goal-conditioned value ``V(s, g)`` is regressed on ``G_g``, and the prior
   ``pi(a | s, g)`` (:class:`~poe_jax.nets.GoalPrior`) maximises
   ``E[w log pi(a|s,g)]`` with ``w = min(exp(A / (beta * std(A_g))), w_max)``,
   ``A = G_g - V(s, g)``, per goal ``g`` (Peng et al. 2019).

Prior *qualities* used by the grid: ``trained`` is this prior; ``degraded`` and
``random`` are made from it inside the program (:mod:`poe_jax.grid`),
deterministically from each episode's key.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from poe_jax import nets
from poe_jax.gaussian import DiagGaussian

__all__ = ["PriorConfig", "goal_rewards", "returns_to_go", "train"]


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    steps: int = 100_000
    batch: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    beta: float = 1.0
    w_max: float = 20.0
    hidden: tuple[int, ...] = (256, 256)
    chunk: int = 2_000
    seed: int = 0


def goal_rewards(env, data: dict, goals: Sequence, batch: int = 20_000) -> np.ndarray:
    """``[N, len(goals)]`` goal rewards of the dataset's transitions (replayed from ``infos``)."""
    step = jax.jit(jax.vmap(env.step))
    fns = jax.jit(jax.vmap(lambda s, a, n: jnp.stack([g(s, a, n) for g in goals])))
    out = []
    n = len(data["observations"])
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        s0 = env.reset_to_batch(data["infos/qpos"][lo:hi], data["infos/qvel"][lo:hi])
        a = jnp.asarray(data["actions"][lo:hi], jnp.float32)
        out.append(np.asarray(fns(s0, a, step(s0, a))))
    return np.concatenate(out)


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


def train(env, data: dict, goal_names: Sequence[str], cfg: PriorConfig = PriorConfig(),
          log: Callable = print) -> tuple[nets.GoalPrior, dict]:
    """Fit a :class:`~poe_jax.nets.GoalPrior` on ``data`` for ``goal_names``."""
    from poe_jax.envs.goals import make_goal

    goals = [make_goal(g, env.name) for g in goal_names]
    t0 = time.time()
    r = goal_rewards(env, data, goals)
    ends = np.asarray(data["terminals"], bool) | np.asarray(data["timeouts"], bool)
    rtg = returns_to_go(r, ends, cfg.gamma)
    scale = np.maximum(rtg.std(0), 1e-6)
    rtg_n = rtg / scale  # per-goal scale: values of different goals are comparable
    norm = nets.ObsNorm.from_data(data["observations"])
    max_action = float(np.asarray(env.action_high)[0])
    spec = nets.PriorSpec(env.obs_size, env.act_size, tuple(goal_names), cfg.hidden, max_action=max_action)
    obs = jnp.asarray(norm(data["observations"]))
    act = jnp.asarray(np.clip(data["actions"], -0.999 * max_action, 0.999 * max_action), jnp.float32)
    y = jnp.asarray(rtg_n)
    n, n_goals = obs.shape[0], len(goals)
    k_p, k_v, key = jax.random.split(jax.random.key(cfg.seed), 3)
    prior = nets.init_prior(spec, k_p)
    vnet = nets.MLP((*cfg.hidden, 1))
    v_params = vnet.init(k_v, jnp.zeros((1, env.obs_size + n_goals)))["params"]
    net = nets._PriorNet(spec)
    opt = optax.adam(cfg.lr)
    params = {"prior": prior.params, "v": v_params}
    opt_state = opt.init(params)

    def loss(p, idx, g):
        s, a, target = obs[idx], act[idx], y[idx, g]
        v = vnet.apply({"params": p["v"]}, jnp.concatenate([s, jax.nn.one_hot(g, n_goals)], -1))[..., 0]
        adv = jax.lax.stop_gradient(target - v)
        w = jnp.minimum(jnp.exp(adv / cfg.beta), cfg.w_max)
        mean, std = net.apply({"params": p["prior"]}, s, g)
        logp = DiagGaussian(mean, std).log_prob(a)
        return jnp.mean((v - target) ** 2) - jnp.mean(w * logp), (jnp.mean((v - target) ** 2), jnp.mean(w))

    @jax.jit
    def chunk(p, o, key):
        def body(c, k):
            p, o = c
            k1, k2 = jax.random.split(k)
            idx = jax.random.randint(k1, (cfg.batch,), 0, n)
            g = jax.random.randint(k2, (cfg.batch,), 0, n_goals)
            (l, aux), grads = jax.value_and_grad(loss, has_aux=True)(p, idx, g)
            upd, o = opt.update(grads, o, p)
            return (optax.apply_updates(p, upd), o), jnp.stack([l, *aux])

        (p, o), m = jax.lax.scan(body, (p, o), jax.random.split(key, cfg.chunk))
        return p, o, m.mean(0)

    for i in range(-(-cfg.steps // cfg.chunk)):
        params, opt_state, m = chunk(params, opt_state, jax.random.fold_in(key, i))
        if i % 10 == 0:
            log(f"prior step {(i + 1) * cfg.chunk:7d}  loss {float(m[0]):8.3f}  v-mse {float(m[1]):.3f}  mean w {float(m[2]):.2f}")
    info = {"goal_reward_means": r.mean(0).tolist(), "rtg_scale": scale.tolist(), "seconds": round(time.time() - t0, 1)}
    return nets.GoalPrior(params["prior"], norm, spec), info
