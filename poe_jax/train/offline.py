"""Shared machinery of the offline trainers: stacked datasets and the vmapped chunk loop.

Several datasets of one env train at once: their arrays are padded to the largest
and stacked on a leading axis, each agent samples only its own rows, and one
compiled program (``vmap`` over agents, ``scan`` over updates) advances all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from poe_jax import nets

__all__ = ["run", "stack_datasets"]


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
        loss_names: Sequence[str], log: Callable = print, time_budget: float | None = None):
    """Train ``n_sets`` agents: ``init(key) -> state``, ``update(state, data, key) -> (state, losses)``.

    Returns ``(host state with a leading agent axis, steps done, seconds)``.
    """

    def chunk_one(st, data, key):
        st, losses = jax.lax.scan(lambda c, k: update(c, data, k), st, jax.random.split(key, chunk))
        return st, losses.mean(0)

    step_chunk = jax.jit(jax.vmap(chunk_one))
    keys = jax.random.split(jax.random.key(seed), n_sets)
    state = jax.jit(jax.vmap(init))(keys)
    t0 = time.time()
    n_chunks = -(-steps // chunk)
    done = 0
    for i in range(n_chunks):
        state, losses = step_chunk(state, arrays, jax.vmap(lambda k: jax.random.fold_in(k, i))(keys))
        done += chunk
        if (i + 1) % max(1, n_chunks // 20) == 0 or i == n_chunks - 1:
            losses = np.asarray(losses)
            log(f"{name} step {done:8d}  " + "  ".join(
                f"[{j}] " + " ".join(f"{n} {losses[j, k]:.3f}" for k, n in enumerate(loss_names)) for j in range(n_sets))
                + f"  {time.time() - t0:6.0f} s")
        if time_budget is not None and time.time() - t0 > time_budget:
            log(f"time budget reached after {done} steps")
            break
    return jax.device_get(state), done, round(time.time() - t0, 1)


def pick(tree, j: int):
    """Agent ``j``'s slice of a stacked state, as JAX arrays."""
    return jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x[j]), tree)
