"""Offline BC and TD3+BC (Fujimoto & Gu 2021) in JAX, with CORL's settings.

Both train the deterministic ``td3_bc``/``bc`` actor (MLP 256-256, tanh, ×
``max_action``) on observations normalised with the dataset's mean and std +
1e-3.

* ``bc``: mean squared error to the dataset's actions (CORL ``any_percent_bc``
  with 100% of the data), lr 3e-4, batch 256.
* ``td3_bc``: twin critics (256-256) with target-policy smoothing (noise 0.2,
  clipped at 0.5, × ``max_action``), delayed actor updates (every 2 steps),
  actor loss ``-lambda Q(s, pi(s)) + (pi(s) - a)^2`` with ``lambda = alpha /
  mean|Q|``, alpha 2.5, discount 0.99, tau 0.005, lr 3e-4, batch 256.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from poe_jax import nets
from poe_jax.train import offline
from poe_jax.train.offline import fingerprint as _fingerprint

__all__ = ["BCConfig", "train"]


@dataclasses.dataclass(frozen=True)
class BCConfig:
    algo: str = "td3_bc"  # or "bc"
    steps: int = 1_000_000
    batch: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    alpha: float = 2.5
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_freq: int = 2
    hidden: tuple[int, ...] = (256, 256)
    obs_eps: float = 1e-3
    det_std: float = 0.1
    chunk: int = 5_000
    seed: int = 0


def train(datasets: Sequence[dict], obs_size: int, act_size: int, cfg: BCConfig = BCConfig(),
          max_action: float = 1.0, log: Callable = print, time_budget: float | None = None,
          checkpoint: str | Path | None = None) -> tuple[list[nets.Actor], dict]:
    """One agent per ``qlearning_dataset`` dict; returns frozen actors and ``{"steps", "seconds"}``."""
    if cfg.algo not in ("bc", "td3_bc"):
        raise ValueError(f"BCConfig.algo must be 'bc' or 'td3_bc'; got {cfg.algo!r}")
    arrays, norms = offline.stack_datasets(datasets, max_action, cfg.obs_eps)
    aspec = nets.ActorSpec(cfg.algo, obs_size, act_size, cfg.hidden, max_action, cfg.det_std)
    pi_mod, mlp = nets._module(aspec), nets.MLP((*cfg.hidden, 1))
    opt = optax.adam(cfg.lr)

    def pi(p, s):
        return max_action * pi_mod.apply({"params": p}, s)

    def qf(q, s, a):
        sa = jnp.concatenate([s, a], -1)
        return mlp.apply({"params": q["q1"]}, sa)[..., 0], mlp.apply({"params": q["q2"]}, sa)[..., 0]

    def init(key):
        ka, k1, k2 = jax.random.split(key, 3)
        actor = nets.init_actor(aspec, ka).params
        sa = jnp.zeros((1, obs_size + act_size))
        q = {"q1": mlp.init(k1, sa)["params"], "q2": mlp.init(k2, sa)["params"]}
        return {"actor": actor, "actor_target": actor, "q": q, "q_target": q, "opt_actor": opt.init(actor),
                "opt_q": opt.init(q), "step": jnp.zeros((), jnp.int32)}

    def update(st, data, key):
        k_idx, k_noise = jax.random.split(key)
        idx = jax.random.randint(k_idx, (cfg.batch,), 0, data["n"])
        s, a, r, s2, d = (data[k][idx] for k in ("obs", "act", "rew", "nobs", "done"))
        if cfg.algo == "bc":
            loss, g = jax.value_and_grad(lambda p: jnp.mean((pi(p, s) - a) ** 2))(st["actor"])
            upd, opt_a = opt.update(g, st["opt_actor"], st["actor"])
            return {**st, "actor": optax.apply_updates(st["actor"], upd), "opt_actor": opt_a,
                    "step": st["step"] + 1}, jnp.stack([loss, 0.0])
        noise = jnp.clip(cfg.policy_noise * jax.random.normal(k_noise, a.shape), -cfg.noise_clip, cfg.noise_clip)
        a2 = jnp.clip(pi(st["actor_target"], s2) + noise * max_action, -max_action, max_action)
        y = r + (1.0 - d) * cfg.gamma * jnp.minimum(*qf(st["q_target"], s2, a2))

        def q_loss(q):
            q1, q2 = qf(q, s, a)
            return jnp.mean((q1 - y) ** 2) + jnp.mean((q2 - y) ** 2)

        lq, g = jax.value_and_grad(q_loss)(st["q"])
        upd, opt_q = opt.update(g, st["opt_q"], st["q"])
        q = optax.apply_updates(st["q"], upd)

        def actor_loss(p):
            act = pi(p, s)
            q1 = qf(q, s, act)[0]
            lam = cfg.alpha / jax.lax.stop_gradient(jnp.mean(jnp.abs(q1)))
            return -lam * jnp.mean(q1) + jnp.mean((act - a) ** 2)

        la, g = jax.value_and_grad(actor_loss)(st["actor"])
        upd, opt_a = opt.update(g, st["opt_actor"], st["actor"])
        do = (st["step"] % cfg.policy_freq) == 0
        keep = lambda new, old: jax.tree_util.tree_map(lambda x, y_: jnp.where(do, x, y_), new, old)  # noqa: E731
        actor = keep(optax.apply_updates(st["actor"], upd), st["actor"])
        new = {"actor": actor, "opt_actor": keep(opt_a, st["opt_actor"]), "q": q, "opt_q": opt_q,
               "actor_target": keep(optax.incremental_update(actor, st["actor_target"], cfg.tau), st["actor_target"]),
               "q_target": keep(optax.incremental_update(q, st["q_target"], cfg.tau), st["q_target"]),
               "step": st["step"] + 1}
        return new, jnp.stack([la, lq])

    names = ("mse", "-") if cfg.algo == "bc" else ("pi", "q")
    state, done, seconds = offline.run(cfg.algo, init, update, arrays, len(datasets), cfg.steps, cfg.chunk, cfg.seed,
                                       names, log, time_budget, checkpoint, _fingerprint(cfg, datasets))
    actors = [nets.Actor(offline.pick(state["actor"], j), norms[j], aspec) for j in range(len(datasets))]
    return actors, {"steps": done, "seconds": seconds}
