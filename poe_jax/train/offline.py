"""Shared machinery of the offline trainers: stacked datasets and the vmapped chunk loop.

Several datasets of one env train at once: their arrays are padded to the largest
and stacked on a leading axis, each agent samples only its own rows, and one
compiled program (``vmap`` over agents, ``scan`` over updates) advances all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from poe_jax import nets
from poe_jax.train.resume import Checkpointer

__all__ = ["TrainDiverged", "check_losses", "fingerprint", "pick", "run", "stack_datasets"]


class TrainDiverged(ValueError):
    """A loss became NaN or inf: training stops before anything is saved."""


def check_losses(name: str, losses, names: Sequence[str], step: int) -> None:
    """Raise :class:`TrainDiverged` if any of ``losses`` (``[agents, len(names)]`` or a scalar) is not finite."""
    losses = np.asarray(losses, np.float64).reshape(-1, max(1, len(names)))
    bad = np.argwhere(~np.isfinite(losses))
    if bad.size:
        j, k = bad[0]
        raise TrainDiverged(f"{name}: loss {names[k] if names else 'loss'!r} of agent {j} became {losses[j, k]} by step "
                            f"{step}; nothing was saved (check the data and the learning rate; the data were finite)")


def stack_datasets(datasets: Sequence[dict], max_action: float, obs_eps: float = 1e-3,
                   reward_scales: Sequence[float] | None = None) -> tuple[dict, list[nets.ObsNorm]]:
    """``qlearning_dataset`` dicts -> stacked, normalised, padded arrays (+ each one's ObsNorm)."""
    size = max(len(d["observations"]) for d in datasets)
    norms = [nets.ObsNorm.from_data(d["observations"], obs_eps) for d in datasets]
    scales = list(reward_scales) if reward_scales is not None else [1.0] * len(datasets)

    def pad(x):
        x = np.asarray(x)
        return np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])

    arrays = {
        "obs": np.stack([pad(norms[i](d["observations"])) for i, d in enumerate(datasets)]),
        "act": np.stack([pad(np.clip(d["actions"], -max_action, max_action)) for d in datasets]),
        "rew": np.stack([pad(d["rewards"] * scales[i]) for i, d in enumerate(datasets)]).astype(np.float32),
        "nobs": np.stack([pad(norms[i](d["next_observations"])) for i, d in enumerate(datasets)]),
        "done": np.stack([pad(np.asarray(d["terminals"], np.float32)) for d in datasets]),
        "n": np.asarray([len(d["observations"]) for d in datasets], np.int32),
    }
    return jax.tree_util.tree_map(jax.numpy.asarray, arrays), norms


def run(name: str, init: Callable, update: Callable, arrays: dict, n_sets: int, steps: int, chunk: int, seed: int,
        loss_names: Sequence[str], log: Callable = print, time_budget: float | None = None,
        checkpoint: str | Path | None = None, fingerprint: dict | None = None):
    """Train ``n_sets`` agents: ``init(key) -> state``, ``update(state, data, key) -> (state, losses)``.

    ``checkpoint``: a file the loop's state is saved to every minute and on Ctrl-C (which then raises
    :class:`~poe_jax.train.resume.TrainInterrupted`); a run that finds it resumes from it, bit for bit.
    ``fingerprint``: what else must match for a checkpoint to be resumed (the config, the data).
    Returns ``(host state with a leading agent axis, steps done, seconds)``; the seconds are the training
    time over every sitting (a resumed run counts the time saved with its checkpoint).
    """

    def chunk_one(st, data, key):
        st, losses = jax.lax.scan(lambda c, k: update(c, data, k), st, jax.random.split(key, chunk))
        return st, losses.mean(0)

    step_chunk = jax.jit(jax.vmap(chunk_one))
    keys = jax.random.split(jax.random.key(seed), n_sets)
    n_chunks = -(-steps // chunk)
    ck = Checkpointer(checkpoint, {"name": name, "steps": steps, "chunk": chunk, "seed": seed, "n_sets": n_sets,
                                   "losses": list(loss_names), **(fingerprint or {})})
    state, nxt = ck.restore(jax.jit(jax.vmap(init))(keys))
    start = nxt
    if nxt:
        log(f"{name}: resuming from {ck.path} at step {nxt * chunk}, after {ck.seconds():.0f} s of training")
    t0 = time.time()
    try:
        for i in range(nxt, n_chunks):
            (state, losses), nxt = step_chunk(state, arrays, jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)), i + 1
            check_losses(name, losses, loss_names, nxt * chunk)
            if nxt == start + 1 or nxt % max(1, n_chunks // 20) == 0 or nxt == n_chunks:
                losses = np.asarray(losses)
                spent = time.time() - t0
                eta = spent / (nxt - start) * (n_chunks - nxt)
                log(f"{name} step {nxt * chunk:8d} of {n_chunks * chunk}  " + "  ".join(
                    f"[{j}] " + " ".join(f"{n} {losses[j, k]:.3f}" for k, n in enumerate(loss_names))
                    for j in range(n_sets)) + f"  {spent:6.0f} s, eta {eta:5.0f} s")
            if time_budget is not None and time.time() - t0 > time_budget:
                log(f"time budget reached after {nxt * chunk} steps")
                break
            ck.maybe_save(state, nxt)
    except KeyboardInterrupt:
        raise ck.interrupted(state, nxt, chunk, steps) from None
    ck.clear()
    return jax.device_get(state), nxt * chunk, round(ck.seconds(), 1)


def fingerprint(cfg, datasets) -> dict:
    """What a training checkpoint must match besides the loop's shape: the config and the data's rows and sums."""
    return {"config": repr(cfg), "rows": [int(len(d["observations"])) for d in datasets],
            "sums": [round(float(np.sum(d["rewards"], dtype=np.float64)), 6) for d in datasets]}


def pick(tree, j: int):
    """Agent ``j``'s slice of a stacked state, as JAX arrays."""
    return jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x[j]), tree)
