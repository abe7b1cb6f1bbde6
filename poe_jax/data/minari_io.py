"""Minari datasets (Farama's successor to D4RL): read them as D4RL-layout arrays, write ours as Minari.

A Minari dataset is a folder ``<root>/<namespace>/<name>-vN/data/`` holding

* ``main_data.hdf5``: one group ``episode_i`` per episode with ``observations [T+1, obs]`` (the
  reset observation first), ``actions [T, act]``, ``rewards [T]``, ``terminations [T]``,
  ``truncations [T]`` (and ``infos``);
* ``metadata.json``: ``env_spec`` (a JSON string with the Gymnasium id, e.g. ``Hopper-v5``),
  ``ref_min_score``/``ref_max_score`` when the author gave them, ``dataset_id``, spaces.

:func:`read` reads that layout directly with h5py (no ``minari`` needed; a test checks it
equals ``minari.load_dataset``), flattened to the D4RL arrays :func:`poe_jax.data.read` returns:
``observations``/``next_observations`` are ``obs[:-1]``/``obs[1:]`` of each episode, so no
transition crosses an episode boundary; ``terminals`` are the terminations (they end
bootstrapping) and ``timeouts`` the truncations (they do not). :func:`export` writes a
D4RL-layout dataset of poe_jax as a Minari dataset with the ``minari`` package
(``pip install "poe_jax[minari]"``). Nothing here touches the network.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from poe_jax.data import DatasetError
from poe_jax.envs import registry

PREFIX = "minari:"

# Gymnasium ids of the envs poe_jax models -> poe_jax env names (each env declares its id: register_env(gym_id=)).
GYM_TO_POE = {e.gym_id: name for name, e in registry.ENVS.items() if e.gym_id}
POE_TO_GYM = {v: k for k, v in GYM_TO_POE.items()}


def datasets_root() -> Path:
    """Where ``minari:ID`` is looked up: ``MINARI_DATASETS_PATH``, else Minari's ``~/.minari/datasets``."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def is_minari(ref: str | os.PathLike) -> bool:
    """``minari:ID``, or a folder holding a Minari dataset (``data/main_data.hdf5`` in it or at it)."""
    if str(ref).startswith(PREFIX):
        return True
    p = Path(ref)
    return p.is_dir() and ((p / "data" / "main_data.hdf5").is_file() or (p / "main_data.hdf5").is_file())


def data_dir(ref: str | os.PathLike) -> Path:
    """The ``data/`` folder of ``minari:ID`` or of a dataset folder; a clear error when it is absent."""
    s = str(ref)
    if s.startswith(PREFIX):
        dataset_id = s[len(PREFIX):]
        folder = datasets_root() / dataset_id
        if not (folder / "data" / "main_data.hdf5").is_file():
            raise DatasetError(f"dataset: no Minari dataset {dataset_id!r} in {datasets_root()} (looked for "
                         f"{folder / 'data' / 'main_data.hdf5'}; set MINARI_DATASETS_PATH, or give the dataset's "
                         "folder; poe_jax does not download)")
        return folder / "data"
    p = Path(ref)
    for d in (p / "data", p):
        if (d / "main_data.hdf5").is_file():
            return d
    raise DatasetError(f"dataset: {p} is not a Minari dataset folder (no data/main_data.hdf5)")


def metadata(ref: str | os.PathLike) -> dict:
    """The dataset's ``metadata.json``, with ``env_spec`` decoded to a dict."""
    path = data_dir(ref) / "metadata.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"dataset: {path}: unreadable Minari metadata ({e})") from None
    spec = meta.get("env_spec")
    meta["env_spec"] = json.loads(spec) if isinstance(spec, str) else (spec or {})
    return meta


def env_name(meta: dict) -> str:
    """The poe_jax env a dataset was collected on (from its ``env_spec``); a clear error if none models it."""
    gym_id = (meta.get("env_spec") or {}).get("id")
    if gym_id not in GYM_TO_POE:
        raise DatasetError(f"dataset {meta.get('dataset_id', '?')!r}: env {gym_id!r} is not modelled by poe_jax; "
                     f"known: {', '.join(GYM_TO_POE)}")
    return GYM_TO_POE[gym_id]


def read(ref: str | os.PathLike) -> dict[str, np.ndarray]:
    """A Minari dataset as D4RL-layout flat arrays (see the module docstring), plus ``metadata/*``:
    ``env`` (poe_jax's name), ``gym_id``, ``dataset_id``, ``ref_min_score``/``ref_max_score`` when
    present, and ``source = "minari"``."""
    import h5py

    d = data_dir(ref)
    meta = metadata(ref)
    parts: dict[str, list] = {k: [] for k in ("observations", "next_observations", "actions", "rewards",
                                             "terminals", "timeouts")}
    try:
        with h5py.File(d / "main_data.hdf5", "r") as f:
            names = sorted((k for k in f if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
            layout = None
            for k in names:
                g = f[k]
                obs, goal, layout = _flat_observations(d, k, g["observations"], layout)
                if goal is not None:
                    parts.setdefault("infos/goal", []).append(goal[:-1])
                parts["observations"].append(obs[:-1])
                parts["next_observations"].append(obs[1:])
                parts["actions"].append(g["actions"][()])
                parts["rewards"].append(g["rewards"][()])
                parts["terminals"].append(g["terminations"][()])
                parts["timeouts"].append(g["truncations"][()])
    except OSError as e:
        raise DatasetError(f"dataset: {d / 'main_data.hdf5'}: not a readable HDF5 file ({e})") from None
    if not names:
        raise DatasetError(f"dataset: {d}: no episodes")
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["terminals"], out["timeouts"] = out["terminals"].astype(bool), out["timeouts"].astype(bool)
    out["rewards"] = out["rewards"].astype(np.float64)
    out["metadata/source"] = "minari"
    out["metadata/gym_id"] = (meta.get("env_spec") or {}).get("id", "")
    out["metadata/dataset_id"] = meta.get("dataset_id", "")
    out["metadata/env"] = env_name(meta)
    if layout is not None:
        out["metadata/obs_layout"] = layout
    opts = env_options(meta)
    if opts:
        out["metadata/env_options"] = json.dumps(opts, sort_keys=True)
    for k in ("ref_min_score", "ref_max_score"):
        if meta.get(k) is not None:
            out[f"metadata/{k}"] = float(meta[k])
    return out


# D4RL's AntMaze observation is the ant's position first, then the rest of its state: a dict observation
# (Minari's AntMaze, Gymnasium-Robotics' goal-conditioned envs) is flattened in this order.
DICT_ORDER = ("achieved_goal", "observation")
GOAL_KEY = "desired_goal"  # kept apart, as D4RL's infos/goal


def _flat_observations(d: Path, episode: str, node, layout: str | None):
    """``([T+1, obs], [T+1, goal] or None, layout)``: an episode's observations, a dict of arrays flattened as
    D4RL's AntMaze (:data:`DICT_ORDER`, then any other key by name; :data:`GOAL_KEY` returned apart); the
    layout names each part with its width (``achieved_goal[2] observation[27]``) and must be the same in
    every episode."""
    import h5py

    if not isinstance(node, h5py.Group):
        obs = node[()]
        if not isinstance(obs, np.ndarray) or obs.ndim != 2:
            raise DatasetError(f"dataset: {d}: {episode}/observations is not a [T+1, obs] array or a dict of them "
                               "(image observations are not supported)")
        return obs, None, layout
    keys = [k for k in DICT_ORDER if k in node] + sorted(k for k in node if k not in DICT_ORDER and k != GOAL_KEY)
    arrays = []
    for k in keys:
        a = node[k][()] if isinstance(node[k], h5py.Dataset) else None
        if a is None or a.ndim not in (1, 2):
            raise DatasetError(f"dataset: {d}: {episode}/observations/{k} is not a [T+1] or [T+1, n] array "
                               "(nested dicts and images are not supported)")
        arrays.append(a.reshape(len(a), -1))
    if not arrays:
        raise DatasetError(f"dataset: {d}: {episode}/observations is a dict with no observation besides {GOAL_KEY}")
    mine = " ".join(f"{k}[{a.shape[1]}]" for k, a in zip(keys, arrays))
    if layout is not None and mine != layout:
        raise DatasetError(f"dataset: {d}: {episode}/observations holds {mine}, the episodes before it {layout}")
    goal = node[GOAL_KEY][()] if GOAL_KEY in node else None
    return np.concatenate(arrays, axis=1), goal, mine


# env_spec kwargs poe_jax models (the env option of the same name); any other kwarg must keep its Gymnasium
# default, else the data came from dynamics or rewards poe_jax does not model.
HONOURED = ("terminate_when_unhealthy", "forward_reward_weight")


def _gym_defaults(gym_id: str) -> dict:
    """The keyword defaults of the Gymnasium class behind ``gym_id`` (its ``__init__``), or {} if unknown."""
    import inspect

    try:
        import gymnasium

        spec = gymnasium.spec(gym_id)
        cls = gymnasium.envs.registration.load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) \
            else spec.entry_point
        params = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls).parameters
        return {**{k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty},
                **(spec.kwargs or {})}
    except Exception:  # noqa: BLE001 - an id Gymnasium does not know: every kwarg is checked by name alone
        return {}


def env_options(meta: dict) -> dict:
    """The poe_jax env options a dataset's ``env_spec`` asks for: its :data:`HONOURED` kwargs that differ from
    Gymnasium's defaults, and ``max_steps`` from ``max_episode_steps`` when it is not the env's 1000. Any other
    kwarg that differs from its default is refused by name (a one-line :class:`DatasetError`)."""
    spec = meta.get("env_spec") or {}
    gym_id = spec.get("id", "?")
    defaults = _gym_defaults(gym_id)
    opts = {}
    for k, v in sorted((spec.get("kwargs") or {}).items()):
        same = k in defaults and _same(v, defaults[k])
        if k in HONOURED:
            if not same:
                opts[k] = v
        elif not same:
            have = f"Gymnasium's default {defaults[k]!r}" if k in defaults else "no default poe_jax knows"
            raise DatasetError(f"dataset {meta.get('dataset_id', '?')!r}: env_spec kwarg {k}={v!r} ({gym_id}; "
                               f"{have}) is not modelled by poe_jax; it models {', '.join(HONOURED)} and "
                               "max_episode_steps")
    steps = spec.get("max_episode_steps")
    if steps not in (None, 1000):
        opts["max_steps"] = int(steps)
    return opts


def _same(a, b) -> bool:
    """Equal as values: numbers as floats (a stored kwarg is JSON, a default may hold ints, tuples or arrays)."""
    def norm(x):
        if isinstance(x, dict):
            return {str(k): norm(v) for k, v in x.items()}
        if isinstance(x, (list, tuple, np.ndarray)):
            return [norm(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
        if isinstance(x, (bool, np.bool_)):
            return bool(x)
        if isinstance(x, (int, float, np.integer, np.floating)):
            return float(x)
        return x
    return norm(a) == norm(b)


def episodes(data: dict) -> list[slice]:
    """Row ranges of the episodes of D4RL-layout ``data`` (an episode ends at a termination or a timeout)."""
    ends = np.flatnonzero(np.asarray(data["terminals"], bool) | np.asarray(data["timeouts"], bool)) + 1
    n = len(data["observations"])
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)  # a last, unfinished episode
    starts = np.concatenate([[0], ends[:-1]])
    return [slice(int(s), int(e)) for s, e in zip(starts, ends)]


def export(data: dict, dataset_id: str, env: str, root: str | os.PathLike | None = None,
           ref_min_score: float | None = None, ref_max_score: float | None = None,
           algorithm_name: str = "poe_jax") -> Path:
    """Write D4RL-layout ``data`` (it must have ``next_observations``) as Minari dataset ``dataset_id``
    under ``root`` (default :func:`datasets_root`), for poe_jax env ``env``. Returns its folder."""
    try:
        import minari
        from minari.data_collector import EpisodeBuffer
    except ImportError:
        raise DatasetError('data export --format minari needs the minari package: pip install "poe_jax[minari]"') from None
    if env not in POE_TO_GYM:
        raise DatasetError(f"env: {env!r} has no Gymnasium id; known: {', '.join(POE_TO_GYM)}")
    if "next_observations" not in data:
        raise DatasetError("dataset: exporting to Minari needs next_observations (each episode's last observation)")
    root = Path(root) if root is not None else datasets_root()
    folder = root / dataset_id
    if folder.exists():
        raise DatasetError(f"out: {folder} already exists; remove it or choose another --dataset-id")
    buffers = []
    for i, sl in enumerate(episodes(data)):
        obs = np.asarray(data["observations"][sl], np.float64)
        last = np.asarray(data["next_observations"][sl][-1:], np.float64)
        buffers.append(EpisodeBuffer(
            id=i, observations=np.concatenate([obs, last]), actions=np.asarray(data["actions"][sl], np.float32),
            rewards=np.asarray(data["rewards"][sl], np.float64),
            terminations=np.asarray(data["terminals"][sl], bool), truncations=np.asarray(data["timeouts"][sl], bool),
            infos={}))
    previous = os.environ.get("MINARI_DATASETS_PATH")
    # minari reads its root from the environment only; it is restored right after
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id, buffer=buffers, env=POE_TO_GYM[env], algorithm_name=algorithm_name,
                ref_min_score=ref_min_score, ref_max_score=ref_max_score)
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
    return folder
