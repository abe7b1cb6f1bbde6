"""Offline IQL (Kostrikov et al. 2022) in JAX, with CORL's locomotion settings.

Defaults (:class:`IQLConfig`) are CORL's ``iql.py`` for MuJoCo locomotion:
expectile 0.7, temperature (beta) 3.0, discount 0.99, tau 0.005, learning rates
3e-4, batch 256, 256-256 networks, a cosine schedule on the actor's learning
rate, advantage weights clipped at 100, observations normalised with the
dataset's mean and std + 1e-3, and rewards scaled by ``1000 / (max return - min
return)`` of the dataset's trajectories.

Several datasets of one env train at once: :func:`train` ``vmap``s the update
over a leading dataset axis (datasets are padded to the largest and each samples
only its own rows), one compiled program for all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from poe_jax import nets
from poe_jax.kernels.gaussian import DiagGaussian
from poe_jax.train import offline
from poe_jax.train.offline import fingerprint as _fingerprint

__all__ = ["IQLConfig", "reward_scale", "train"]


@dataclasses.dataclass(frozen=True)
class IQLConfig:
    steps: int = 1_000_000
    batch: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    expectile: float = 0.7
    beta: float = 3.0
    exp_adv_max: float = 100.0
    hidden: tuple[int, ...] = (256, 256)
    normalize_reward: bool = True
    obs_eps: float = 1e-3
    chunk: int = 5_000
    seed: int = 0


def reward_scale(d: dict, max_steps: int = 1000) -> float:
    """CORL's locomotion reward scale: ``max_steps / (max return - min return)`` over trajectories."""
    rew, ends = d["rewards"], d["terminals"] > 0
    timeouts = d.get("timeouts")
    rets, cur, n = [], 0.0, 0
    for i, r in enumerate(rew):
        cur += float(r)
        n += 1
        if ends[i] or n == max_steps or (timeouts is not None and timeouts[i]):
            rets.append(cur)
            cur, n = 0.0, 0
    if len(rets) < 2 or max(rets) == min(rets):
        return 1.0
    return max_steps / (max(rets) - min(rets))


def train(datasets: Sequence[dict], obs_size: int, act_size: int, cfg: IQLConfig = IQLConfig(),
          max_action: float = 1.0, log: Callable = print, time_budget: float | None = None,
          checkpoint: str | Path | None = None) -> tuple[list[nets.Actor], dict]:
    """Train one IQL agent per dataset (``qlearning_dataset`` dicts, plus optional
    ``timeouts`` for the reward scale). Returns frozen actors (with critics and
    normalisation) and ``{"steps", "reward_scales", "seconds"}``. ``time_budget``
    stops early (after whole chunks)."""
    n_sets = len(datasets)
    scales = [reward_scale(d) if cfg.normalize_reward else 1.0 for d in datasets]
    arrays, norms = offline.stack_datasets(datasets, max_action, cfg.obs_eps, scales)
    aspec = nets.ActorSpec("iql", obs_size, act_size, cfg.hidden, max_action)
    cspec = nets.CriticSpec(obs_size, act_size, cfg.hidden)
    pi_mod, mlp = nets._module(aspec), nets.MLP((*cfg.hidden, 1))
    actor_opt = optax.adam(optax.cosine_decay_schedule(cfg.lr, cfg.steps))
    opt = optax.adam(cfg.lr)

    def init(key):
        ka, kc = jax.random.split(key)
        actor = nets.init_actor(aspec, ka).params
        critic = nets.init_critic(cspec, kc).params
        q = {"q1": critic["q1"], "q2": critic["q2"]}
        return {"actor": actor, "q": q, "q_target": q, "v": critic["v"], "opt_actor": actor_opt.init(actor),
                "opt_q": opt.init(q), "opt_v": opt.init(critic["v"]), "step": jnp.zeros((), jnp.int32)}

    def qf(q, s, a):
        sa = jnp.concatenate([s, a], -1)
        return mlp.apply({"params": q["q1"]}, sa)[..., 0], mlp.apply({"params": q["q2"]}, sa)[..., 0]

    def vf(v, s):
        return mlp.apply({"params": v}, s)[..., 0]

    def update(st, data, key):
        idx = jax.random.randint(key, (cfg.batch,), 0, data["n"])
        s, a, r, s2, d = (data[k][idx] for k in ("obs", "act", "rew", "nobs", "done"))
        next_v = vf(st["v"], s2)
        tq = jnp.minimum(*qf(st["q_target"], s, a))

        def v_loss(v):
            adv = tq - vf(v, s)
            w = jnp.abs(cfg.expectile - (adv < 0).astype(jnp.float32))
            return jnp.mean(w * adv**2), adv

        (lv, adv), g = jax.value_and_grad(v_loss, has_aux=True)(st["v"])
        upd, opt_v = opt.update(g, st["opt_v"], st["v"])
        v = optax.apply_updates(st["v"], upd)
        y = r + (1.0 - d) * cfg.gamma * next_v

        def q_loss(q):
            q1, q2 = qf(q, s, a)
            return (jnp.mean((q1 - y) ** 2) + jnp.mean((q2 - y) ** 2)) / 2

        lq, g = jax.value_and_grad(q_loss)(st["q"])
        upd, opt_q = opt.update(g, st["opt_q"], st["q"])
        q = optax.apply_updates(st["q"], upd)
        q_target = optax.incremental_update(q, st["q_target"], cfg.tau)
        w = jnp.minimum(jnp.exp(cfg.beta * jax.lax.stop_gradient(adv)), cfg.exp_adv_max)

        def pi_loss(p):
            mean, std = pi_mod.apply({"params": p}, s)
            return jnp.mean(w * -DiagGaussian(mean, std).log_prob(a / max_action))

        lp, g = jax.value_and_grad(pi_loss)(st["actor"])
        upd, opt_a = actor_opt.update(g, st["opt_actor"], st["actor"])
        actor = optax.apply_updates(st["actor"], upd)
        new = {"actor": actor, "q": q, "q_target": q_target, "v": v, "opt_actor": opt_a, "opt_q": opt_q,
               "opt_v": opt_v, "step": st["step"] + 1}
        return new, jnp.stack([lv, lq, lp])

    state, done_steps, seconds = offline.run("iql", init, update, arrays, n_sets, cfg.steps, cfg.chunk, cfg.seed,
                                             ("v", "q", "pi"), log, time_budget, checkpoint, _fingerprint(cfg, datasets))
    out = []
    for j in range(n_sets):
        critic = nets.Critic({"q1": offline.pick(state["q"]["q1"], j), "q2": offline.pick(state["q"]["q2"], j),
                              "v": offline.pick(state["v"], j)}, norms[j], cspec)
        out.append(nets.Actor(offline.pick(state["actor"], j), norms[j], aspec, critic))
    return out, {"steps": done_steps, "reward_scales": scales, "seconds": seconds}
