"""Port CORL (PyTorch) actors and IQL critics to poe_jax's Flax networks.

CORL's trainers save ``torch.save(trainer.state_dict(), "checkpoint_N.pt")``: a
dict with the actor's state dict under ``actor`` (and, for IQL, the twin-Q and
value critics under ``qf`` and ``vf``). A bare actor state dict is accepted too.

Files are always read with ``torch.load(..., weights_only=True)``: a file whose
pickle would build arbitrary objects or run code is refused before anything in
it runs. Every tensor is mapped to a Flax parameter (Linear weights transposed);
tensors that map nowhere, and parameters that no tensor provides, are listed in
the error. PyTorch is only needed here: ``pip install "poe_jax[port]"``.

Observation normalisation: CORL normalises observations with the dataset's
mean and std (+1e-3) but does not store them in its checkpoints. Pass them with
``obs_stats`` (an ``.npz`` with ``mean`` and ``std``, the std CORL divides by);
without them the actor is used on raw observations, and the card says so.

Module names per algo (``N`` are ``nn.Sequential`` indices of the Linear layers):

===========  =============================================================
``iql``      ``net.net.N.{weight,bias}``, ``log_std``; critics ``q1.net.N``, ``q2.net.N``, ``v.net.N``
``iql_det``  ``net.net.N``
``td3_bc``   ``net.N``
``bc``       ``net.N``
``awac``     ``_mlp.N``, ``_log_std``
``cql``      ``base_network.N``, ``log_std_multiplier.constant``, ``log_std_offset.constant``
``sac_n``    ``trunk.N``, ``mu``, ``log_sigma``
===========  =============================================================
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from poe_jax import nets

__all__ = ["ALGOS", "PortError", "from_corl", "load_obs_stats", "port_corl", "read_torch"]

ALGOS = nets.ALGOS

# algo -> (prefix of the Linear stack, flax name pattern for layer j, extra tensors -> flax names)
_LAYOUT: dict[str, tuple[str, str, dict[str, str]]] = {
    "iql": ("net.net", "net/layers_{j}", {"log_std": "log_std"}),
    "iql_det": ("net.net", "net/layers_{j}", {}),
    "td3_bc": ("net", "net/layers_{j}", {}),
    "bc": ("net", "net/layers_{j}", {}),
    "awac": ("_mlp", "net/layers_{j}", {"_log_std": "log_std"}),
    "cql": ("base_network", "net/layers_{j}",
            {"log_std_multiplier.constant": "log_std_multiplier", "log_std_offset.constant": "log_std_offset"}),
    "sac_n": ("trunk", "trunk_{j}", {}),
}


OBS_STD_MIN = 1e-6  # a smaller std (e.g. a denormal) turns observations into inf, and every action into NaN


class PortError(ValueError):
    """A PyTorch checkpoint cannot be ported; the message says why."""


# ---------------------------------------------------------------- reading
def read_torch(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on the CPU, with clear errors."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise PortError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):  # torch.save writes a zip (or, before 1.6, a pickle)
        raise PortError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip archive; this file starts "
                        f"with {head!r})")
    try:
        import torch
    except ImportError:
        raise PortError("porting PyTorch checkpoints needs PyTorch; on a CPU machine its CPU build: pip install torch "
                        "--index-url https://download.pytorch.org/whl/cpu (or pip install \"poe_jax[port]\", which "
                        "takes PyPI's CUDA build)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PortError(
            f"{path}: refused: the file holds pickled objects that are not plain tensors, so loading it could run "
            f"code (torch.load weights_only=True said: {first})"
        ) from None
    except Exception as e:  # truncated zip, not a torch file, ...
        raise PortError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise PortError(f"{path}: expected a dict (a CORL trainer state_dict or an actor state_dict); got {type(obj).__name__}")
    return obj


def _to_numpy(sd: dict, where: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in sd.items():
        if not hasattr(v, "detach"):
            raise PortError(f"{where}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v.detach().cpu().float().numpy()
        bad = int(np.size(out[k]) - np.count_nonzero(np.isfinite(out[k])))
        if bad:
            raise PortError(f"{where}: tensor {k!r} has {bad} non-finite values (NaN or inf); a network with them gives "
                            "NaN actions (export the checkpoint again from a healthy training run)")
    return out


def load_obs_stats(path: str | os.PathLike, obs_size: int | None = None) -> nets.ObsNorm:
    """``.npz`` with ``mean`` and ``std`` (the std divided by) -> :class:`~poe_jax.nets.ObsNorm`."""
    path = Path(path)
    try:
        with np.load(path) as z:
            if "mean" not in z or "std" not in z:
                raise PortError(f"{path}: obs stats need arrays 'mean' and 'std'; found {sorted(z.files)}")
            mean, std = np.asarray(z["mean"], np.float32), np.asarray(z["std"], np.float32)
    except PortError:
        raise
    except Exception as e:
        raise PortError(f"{path}: cannot read obs stats ({type(e).__name__}: {e})") from None
    if mean.ndim != 1 or mean.shape != std.shape:
        raise PortError(f"{path}: mean and std must be 1-d of equal size; got {mean.shape} and {std.shape}")
    if obs_size is not None and mean.shape[0] != obs_size:
        raise PortError(f"{path}: obs stats have size {mean.shape[0]} but the actor takes {obs_size} observations")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= OBS_STD_MIN)):
        raise PortError(f"{path}: obs stats must be finite with std >= {OBS_STD_MIN:g} (CORL divides by the data's std "
                        f"+ 1e-3); got std min {float(np.min(std)):g}")
    return nets.ObsNorm(jnp.asarray(mean), jnp.asarray(std), 0.0)


# ---------------------------------------------------------------- mapping
def _linear_stack(sd: dict[str, np.ndarray], prefix: str, used: set, where: str) -> list[tuple[np.ndarray, np.ndarray]]:
    pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(weight|bias)$")
    idx: dict[int, dict[str, np.ndarray]] = {}
    for k, v in sd.items():
        m = pat.match(k)
        if m:
            idx.setdefault(int(m.group(1)), {})[m.group(2)] = v
            used.add(k)
    layers = []
    for i in sorted(idx):
        if set(idx[i]) != {"weight", "bias"}:
            missing = {"weight", "bias"} - set(idx[i])
            raise PortError(f"{where}: missing keys {[f'{prefix}.{i}.{m}' for m in sorted(missing)]}")
        layers.append((idx[i]["weight"], idx[i]["bias"]))
    if not layers:
        raise PortError(f"{where}: missing keys: no Linear layers '{prefix}.N.weight' found; keys present: {sorted(sd)}")
    for (w0, _), (w1, _) in zip(layers, layers[1:]):
        if w0.shape[0] != w1.shape[1]:
            raise PortError(f"{where}: layers under {prefix!r} do not chain: {w0.shape} then {w1.shape}")
    return layers


def _dense(w: np.ndarray, b: np.ndarray) -> dict[str, jnp.ndarray]:
    return {"kernel": jnp.asarray(w.T), "bias": jnp.asarray(b)}


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for k, v in flat.items():
        *head, last = k.split("/")
        d = out
        for h in head:
            d = d.setdefault(h, {})
        d[last] = v
    return out


def _actor_params(sd: dict[str, np.ndarray], algo: str, where: str) -> tuple[dict, tuple[int, ...], int, int]:
    prefix, name, extras = _LAYOUT[algo]
    used: set[str] = set()
    layers = _linear_stack(sd, prefix, used, where)
    flat: dict[str, Any] = {}
    if algo == "sac_n":
        for j, (w, b) in enumerate(layers):
            flat[name.format(j=j)] = _dense(w, b)
        for head in ("mu", "log_sigma"):
            keys = (f"{head}.weight", f"{head}.bias")
            missing = [k for k in keys if k not in sd]
            if missing:
                raise PortError(f"{where}: missing keys {missing}")
            flat[head] = _dense(sd[keys[0]], sd[keys[1]])
            used.update(keys)
        hidden = tuple(w.shape[0] for w, _ in layers)
        obs_size, act_size = layers[0][0].shape[1], sd["mu.weight"].shape[0]
    else:
        for j, (w, b) in enumerate(layers):
            flat[name.format(j=j)] = _dense(w, b)
        hidden = tuple(w.shape[0] for w, _ in layers[:-1])
        obs_size, out = layers[0][0].shape[1], layers[-1][0].shape[0]
        if algo == "cql":
            if out % 2:
                raise PortError(f"{where}: CQL's last layer must output 2 x act_size values; got {out}")
            act_size = out // 2
        else:
            act_size = out
    missing = [k for k in extras if k not in sd]
    if missing:
        raise PortError(f"{where}: missing keys {missing}")
    for k, dst in extras.items():
        flat[dst] = jnp.asarray(sd[k].reshape(() if dst.startswith("log_std_") else sd[k].shape))
        used.add(k)
    unexpected = sorted(set(sd) - used)
    if unexpected:
        raise PortError(f"{where}: unexpected keys for algo {algo!r}: {unexpected}")
    return _nest(flat), hidden, int(obs_size), int(act_size)


def _iql_critics(qf: dict[str, np.ndarray], vf: dict[str, np.ndarray], where: str) -> tuple[dict, tuple[int, ...]]:
    params: dict[str, Any] = {}
    hidden = None
    for name, sd, prefix in (("q1", qf, "q1.net"), ("q2", qf, "q2.net"), ("v", vf, "v.net")):
        used: set[str] = set()
        layers = _linear_stack({k: v for k, v in sd.items() if k.startswith(prefix + ".")}, prefix, used, f"{where} ({name})")
        params[name] = {f"layers_{j}": _dense(w, b) for j, (w, b) in enumerate(layers)}
        h = tuple(w.shape[0] for w, _ in layers[:-1])
        if hidden not in (None, h):
            raise PortError(f"{where}: critics have different hidden sizes {hidden} and {h}")
        hidden = h
    for sd, prefixes, label in ((qf, ("q1.net.", "q2.net."), "qf"), (vf, ("v.net.",), "vf")):
        unexpected = sorted(k for k in sd if not k.startswith(prefixes))
        if unexpected:
            raise PortError(f"{where}: unexpected keys in {label!r}: {unexpected}")
    return params, hidden


# ---------------------------------------------------------------- public
def from_corl(
    path: str | os.PathLike,
    algo: str,
    env=None,
    obs_stats: str | os.PathLike | nets.ObsNorm | None = None,
    max_action: float | None = None,
    det_std: float = 0.1,
) -> nets.Actor:
    """Read a CORL checkpoint into a frozen :class:`~poe_jax.nets.Actor`.

    Args:
        path: the ``.pt`` file (trainer ``state_dict`` or a bare actor ``state_dict``).
        algo: one of :data:`ALGOS`.
        env: optional env name or Env: sizes are checked against it and
            ``max_action`` defaults to its actuator bound.
        obs_stats: ``.npz`` path or :class:`~poe_jax.nets.ObsNorm`; None = raw observations.
        max_action: action scale (default: the env's, else 1).
        det_std: std given to deterministic actors by ``distribution``.

    Returns:
        the actor (with IQL critics when the file has ``qf`` and ``vf``).
    """
    if algo not in ALGOS:
        raise PortError(f"unknown algo {algo!r}; known: {', '.join(ALGOS)}")
    if isinstance(det_std, bool) or not isinstance(det_std, (int, float)) or not (math.isfinite(det_std) and det_std > 0):
        raise PortError(f"det_std (--det-std): must be a finite number > 0 (x max_action); got {det_std!r}")
    if isinstance(env, str):
        from poe_jax import envs

        if env not in envs.names():
            raise PortError(f"env (--env): unknown env {env!r}; known envs: {', '.join(envs.names())}")
    obj = read_torch(path)
    where = str(path)
    if "actor" in obj:
        actor_sd = obj["actor"]
    elif all(hasattr(v, "detach") for v in obj.values()):
        actor_sd = obj
    else:
        raise PortError(f"{where}: no 'actor' entry; top-level keys: {sorted(obj)}")
    if not isinstance(actor_sd, dict):
        raise PortError(f"{where}: 'actor' is a {type(actor_sd).__name__}, not a state_dict")
    sd = _to_numpy(actor_sd, where)
    params, hidden, obs_size, act_size = _actor_params(sd, algo, f"{where} (actor)")
    if env is not None:
        from poe_jax.checkpoints import _env_sizes

        name, e_obs, e_act = _env_sizes(env)
        if (obs_size, act_size) != (e_obs, e_act):
            raise PortError(
                f"{where}: the actor takes {obs_size} observations and gives {act_size} actions; "
                f"env {name!r} has {e_obs} and {e_act}"
            )
        if max_action is None:
            from poe_jax import envs

            e = env if not isinstance(env, str) else envs.make(env, backend="native", nthread=1)
            max_action = float(np.asarray(e.action_high)[0])
    spec = nets.ActorSpec(algo, obs_size, act_size, hidden, 1.0 if max_action is None else float(max_action), det_std)
    if isinstance(obs_stats, nets.ObsNorm):
        norm = obs_stats
    elif obs_stats is not None:
        norm = load_obs_stats(obs_stats, obs_size)
    else:
        norm = nets.ObsNorm.identity(obs_size)
    critic = None
    if algo == "iql" or algo == "iql_det":
        if ("qf" in obj) != ("vf" in obj):
            raise PortError(f"{where}: IQL critics need both 'qf' and 'vf'; found only {'qf' if 'qf' in obj else 'vf'}")
        if "qf" in obj:
            cparams, chidden = _iql_critics(_to_numpy(obj["qf"], where), _to_numpy(obj["vf"], where), where)
            cspec = nets.CriticSpec(obs_size, act_size, chidden)
            want = nets.expected_shapes("critic", cspec)
            got = nets.param_shapes(cparams)
            if want != got:
                raise PortError(f"{where}: critic shapes {got} do not match obs/act sizes {obs_size}/{act_size}")
            critic = nets.Critic(cparams, norm, cspec)
    want, got = nets.expected_shapes("actor", spec), nets.param_shapes(params)
    if want != got:
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        raise PortError(f"{where}: ported parameters do not match the {algo} architecture: missing {missing}, unexpected {extra}")
    return nets.Actor(params, norm, spec, critic)


def port_corl(
    path: str | os.PathLike,
    algo: str,
    env: str,
    out: str | os.PathLike,
    obs_stats: str | os.PathLike | None = None,
    det_std: float = 0.1,
    dataset: str | None = None,
    overwrite: bool = False,
) -> Path:
    """:func:`from_corl` then :func:`poe_jax.checkpoints.save` with a card. ``out`` must not exist, or with
    ``overwrite`` be a checkpoint folder (with its card.json): nothing else is ever replaced."""
    from poe_jax import checkpoints

    try:
        checkpoints.check_replaceable(out, overwrite)  # before anything is read
    except checkpoints.CheckpointError as e:
        raise PortError(str(e)) from None

    actor = from_corl(path, algo, env=env, obs_stats=obs_stats, det_std=det_std)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    note = (
        f"from {Path(obs_stats).name}" if obs_stats is not None
        else "none: no --obs-stats given, so the actor sees raw observations (CORL checkpoints do not carry "
        "their normalisation statistics)"
    )
    return checkpoints.save(
        out, actor, env=env, dataset=dataset, overwrite=overwrite, normalization_note=note,
        provenance={"source": "CORL (PyTorch)", "file": Path(path).name, "file_sha256": digest, "algo": algo,
                    "critics": actor.critic is not None},
    )
