"""D4RL-format datasets: HDF5 read/write, ``qlearning_dataset``, collection, replay checks.

Layout (D4RL's): ``observations [N, obs]``, ``actions [N, act]``, ``rewards [N]``,
``terminals [N]`` (the env's termination), ``timeouts [N]`` (the time limit),
``next_observations [N, obs]``, ``infos/qpos [N, nq]``, ``infos/qvel [N, nv]``
(the state *before* the step, float64), and ``metadata/*`` attributes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["FINITE_ARRAYS", "REQUIRED", "DatasetError", "check_finite", "check_layout", "collect", "obs_stats", "qlearning_dataset", "read", "replay_check", "write"]

REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or inconsistent."""


FINITE_ARRAYS = ("observations", "actions", "rewards", "next_observations")  # NaN or inf here poisons training


def check_finite(data: dict, where) -> dict:
    """``data`` if its observations, actions, rewards and next observations are finite; else a
    :class:`DatasetError` naming the array and its first bad row."""
    for k in FINITE_ARRAYS:
        if k not in data:
            continue
        x = np.asarray(data[k])
        if x.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.ndim else ~np.isfinite(x[None])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetError(f"{where}: {k} row {i} is not finite ({np.asarray(x[i]).ravel()[:4].tolist()}...; "
                               f"{int(bad.sum())} such rows); training on NaN or inf gives a NaN network: fix or drop "
                               "those rows")
    return data


def check_layout(data: dict, where, obs_size: int, act_size: int, need: tuple[str, ...] = ()) -> dict:
    """``data`` if it has D4RL's layout for an env of these sizes: ``observations [n, obs_size]`` and
    ``actions [n, act_size]`` of real numbers, ``rewards``, ``terminals``, ``timeouts`` of ``n`` entries,
    ``next_observations`` (when present) like the observations, and the ``need`` arrays with ``n`` rows;
    else a :class:`DatasetError` naming the array, what it is and what is allowed (a wrong shape gave a
    flax traceback mid-training, 150 action rows beside 200 observations an IndexError)."""
    def bad(key, what, allowed):
        raise DatasetError(f"{where}: {key} is {what}; expected {allowed}")

    for key in (*REQUIRED, *need):
        if key not in data:
            bad(key, "missing", "an array with one row per step")
        x = np.asarray(data[key])
        if x.dtype.kind not in "biuf":
            bad(key, f"of dtype {x.dtype}", "numbers")
        if x.ndim == 0:
            bad(key, "a scalar", "an array with one row per step")
    n = len(data["observations"])
    for key, size in (("observations", obs_size), ("actions", act_size), ("next_observations", obs_size)):
        if key in data:
            x = np.asarray(data[key])
            if x.ndim != 2 or x.shape[1] != size:
                bad(key, f"of shape {list(x.shape)}", f"[n, {size}] for this env")
    for key in ("actions", "rewards", "terminals", "timeouts", "next_observations", *need):
        if key in data and len(data[key]) != n:
            bad(key, f"{len(data[key])} rows", f"{n}, one per observation")
    for key in ("rewards", "terminals", "timeouts"):
        if np.asarray(data[key]).ndim != 1:
            bad(key, f"of shape {list(np.shape(data[key]))}", f"[{n}]")
    return data


def write(path: str | os.PathLike, data: dict, metadata: dict | None = None) -> Path:
    """Write a D4RL-layout HDF5 file atomically (``infos/qpos`` style keys allowed)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(data["observations"])
    for k, v in data.items():
        if len(v) != n:
            raise DatasetError(f"{path}: {k} has {len(v)} rows, observations has {n}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        for k, v in data.items():
            arr = np.asarray(v)
            f.create_dataset(k, data=arr, compression="gzip" if arr.size > 10_000 else None)
        for k, v in (metadata or {}).items():
            f.attrs[f"metadata/{k}"] = v if isinstance(v, (int, float, str)) else json.dumps(v)
    os.replace(tmp, path)
    return path


def read(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a D4RL HDF5 file (nested groups flattened with ``/``).

    A Minari dataset (``minari:ID`` or its folder) reads through :func:`poe_jax.data.minari_io.read`
    into the same layout."""
    import h5py

    from poe_jax.data import minari_io

    if minari_io.is_minari(path):
        return check_finite(minari_io.read(path), path)
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            def take(name, obj):
                if not isinstance(obj, h5py.Dataset):
                    return
                if obj.external or obj.is_virtual:  # its bytes live in other files, which a dataset may not name
                    raise DatasetError(f"{path}: {name} stores its data in other files (HDF5 external or virtual "
                                       "storage); a dataset must hold its own arrays")
                out[name] = obj[()]
            f.visititems(take)
            out.update({k: v for k, v in f.attrs.items()})
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from None
    missing = [k for k in REQUIRED if k not in out]
    if missing:
        raise DatasetError(f"{path}: not a D4RL dataset; missing {missing}")
    return check_finite(out, path)


def qlearning_dataset(data: dict, terminate_on_end: bool = False) -> dict[str, np.ndarray]:
    """D4RL's ``qlearning_dataset``: (s, a, r, s', done) transitions.

    Steps flagged ``timeouts`` are dropped unless ``terminate_on_end`` (their next
    observation belongs to a reset, in files that lack ``next_observations``).
    With ``next_observations`` present they are used directly.
    """
    obs, act = np.asarray(data["observations"]), np.asarray(data["actions"])
    rew, term = np.asarray(data["rewards"], np.float32), np.asarray(data["terminals"], bool)
    timeout = np.asarray(data["timeouts"], bool)
    n = len(obs)
    if "next_observations" in data:
        nobs = np.asarray(data["next_observations"])
        keep = np.ones(n, bool) if terminate_on_end else ~timeout
    else:
        nobs = np.concatenate([obs[1:], obs[-1:]])
        keep = np.ones(n, bool) if terminate_on_end else ~timeout
        keep[-1] = False
    return {"observations": obs[keep].astype(np.float32), "actions": act[keep].astype(np.float32),
            "next_observations": nobs[keep].astype(np.float32), "rewards": rew[keep],
            "terminals": term[keep].astype(np.float32)}


def obs_stats(observations, eps: float = 1e-3):
    """CORL's normalisation: mean and ``std + eps`` (an :class:`~poe_jax.nets.ObsNorm`)."""
    from poe_jax.nets import ObsNorm

    return ObsNorm.from_data(observations, eps)


def collect(env, act_fn, steps: int, lanes: int, key, max_steps: int | None = None,
            on_state: bool = False) -> dict[str, np.ndarray]:
    """Run ``act_fn(obs, key) -> action`` on ``lanes`` envs with resets; D4RL-layout arrays.

    ``on_state``: call ``act_fn(state, key)`` with the lane's whole :class:`~poe_jax.envs.State`
    instead (scripted controllers that read the step count or the goal).

    Rows are ordered episode by episode within each lane, lanes one after another,
    so each trajectory is contiguous (timeouts and terminals mark the ends).
    ``steps`` is the total number of transitions (rounded up to a multiple of ``lanes``).
    """
    import jax
    import jax.numpy as jnp

    from poe_jax.physics.base import join64

    per_lane = -(-steps // lanes)
    horizon = env.max_steps if max_steps is None else max_steps

    def body(carry, key):
        state, t = carry
        k_act, k_reset = jax.random.split(key)
        a = jax.vmap(act_fn)(state if on_state else state.obs, jax.random.split(k_act, lanes))
        nxt = jax.vmap(env.step)(state, a)
        timeout = (t + 1 >= horizon) & ~nxt.terminated
        done = nxt.terminated | timeout
        row = {"observations": state.obs, "actions": jnp.clip(a, env.action_low, env.action_high),
               "rewards": nxt.reward, "terminals": nxt.terminated, "timeouts": timeout,
               "next_observations": nxt.obs, "qpos": state.q.qpos, "qpos_lo": state.q.qpos_lo,
               "qvel": state.q.qvel, "qvel_lo": state.q.qvel_lo}
        if "goal" in state.metrics:  # AntMaze: the episode's goal, as D4RL's infos/goal
            row["goal"] = state.metrics["goal"]
        fresh = jax.vmap(env.reset)(jax.random.split(k_reset, lanes))
        sel = lambda f, x: jnp.where(done.reshape(-1, *([1] * (x.ndim - 1))), f, x)  # noqa: E731
        return (jax.tree_util.tree_map(sel, fresh, nxt), jnp.where(done, 0, t + 1)), row

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k0, lanes))
        return jax.lax.scan(body, (state, jnp.zeros(lanes, jnp.int32)), jax.random.split(k1, per_lane))[1]

    rows = jax.device_get(run(key))
    # [T, lanes, ...] -> lane-major [lanes * T, ...]
    flat = {k: np.swapaxes(np.asarray(v), 0, 1).reshape(lanes * per_lane, *np.shape(v)[2:]) for k, v in rows.items()}
    out = {k: flat[k] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    out["infos/qpos"] = join64(flat["qpos"], flat["qpos_lo"])
    out["infos/qvel"] = join64(flat["qvel"], flat["qvel_lo"])
    if "goal" in flat:
        out["infos/goal"] = flat["goal"]
    ends = np.arange(1, lanes + 1) * per_lane - 1  # each lane's last row: its trajectory is cut there
    out["timeouts"][ends] |= ~out["terminals"][ends]
    out = {k: v[:steps] for k, v in out.items()}
    out["timeouts"][-1] |= ~out["terminals"][-1]
    return out


def replay_check(env, data: dict, rows: int | None = None, atol: float = 1e-4) -> dict:
    """Re-simulate ``infos/qpos``, ``infos/qvel`` + actions through ``env`` and compare.

    For each checked row, the env is reset to the stored state, the stored action is
    applied, and the resulting observation and reward are compared with the
    stored ``next_observations`` (or the next row's observation) and ``rewards``.
    Returns the max errors and the fraction of rows within ``atol`` (relative to
    ``1 + |x|``). Works on real D4RL files (their ``infos`` hold the same states).
    """
    import jax

    n = len(data["observations"]) if rows is None else min(rows, len(data["observations"]))
    qpos, qvel = np.asarray(data["infos/qpos"][:n], np.float64), np.asarray(data["infos/qvel"][:n], np.float64)
    goal = {"goal": np.asarray(data["infos/goal"][:n])} if "infos/goal" in data else {}  # AntMaze
    s0 = env.reset_to_batch(qpos, qvel, **goal)
    obs_err = np.abs(np.asarray(s0.obs) - data["observations"][:n]) / (1 + np.abs(data["observations"][:n]))
    s1 = jax.jit(jax.vmap(env.step))(s0, np.asarray(data["actions"][:n], np.float32))
    nobs = data["next_observations"][:n] if "next_observations" in data else None
    rew_err = np.abs(np.asarray(s1.reward) - data["rewards"][:n]) / (1 + np.abs(data["rewards"][:n]))
    res = {"rows": n, "obs_max_err": float(obs_err.max()), "reward_max_err": float(rew_err.max()),
           "reward_within_tol": float(np.mean(rew_err <= atol))}
    if nobs is not None:
        nerr = np.abs(np.asarray(s1.obs) - nobs) / (1 + np.abs(nobs))
        res.update(next_obs_max_err=float(nerr.max()), next_obs_within_tol=float(np.mean(nerr.max(-1) <= atol)))
    return res
