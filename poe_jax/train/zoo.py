"""Build an env's frozen-actor zoo: IQL actors (+critics) and the goal prior, with cards.

``build(env, work)`` expects ``work/ENV-KIND.hdf5`` from ``poe-jax data generate``
and writes ``out/ENV-KIND-iql`` for KIND in medium, medium-replay, medium-expert
(trained together, one vmapped program) and ``out/ENV-prior`` (AWR on
medium-replay, all three goals), each evaluated and carded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from poe_jax import checkpoints, data, envs
from poe_jax.data import minari_io
from poe_jax.envs import registry

__all__ = ["IQL_KINDS", "behaviour", "build", "evaluate_scores", "train_actors", "train_prior"]

IQL_KINDS = ("medium", "medium-replay", "medium-expert")


def evaluate_scores(env, actor, episodes: int = 20, seed: int = 10_000, raw: dict | None = None) -> dict:
    """Deterministic returns of ``actor`` and their normalised score. The reference scores are the
    dataset's own (Minari's ``ref_min_score``/``ref_max_score``) when ``raw`` carries them, else D4RL's;
    ``normalized_by`` says which."""
    from poe_jax.train.sac import evaluate

    ret = evaluate(env, actor, episodes, seed)
    lo, hi = (raw or {}).get("metadata/ref_min_score"), (raw or {}).get("metadata/ref_max_score")
    if lo is not None and hi is not None and float(hi) != float(lo):
        norm, by = 100 * (ret - float(lo)) / (float(hi) - float(lo)), f"dataset's ref scores [{lo:g}, {hi:g}]"
    else:
        spec = env.spec
        norm, by = spec.normalized_score(ret), f"D4RL ref scores [{spec.ref_min_score:g}, {spec.ref_max_score:g}]"
    return {"episodes": int(episodes), "deterministic": True, "backend": "native", "seed": seed,
            "return_mean": float(ret.mean()), "return_std": float(ret.std()),
            "normalized_mean": float(norm.mean()), "normalized_se": float(norm.std(ddof=1) / np.sqrt(episodes)),
            "normalized_by": by}


def dataset_name(ref) -> str:
    """A dataset's name for cards and folders: the file's stem, or a Minari id with '/' as '-'."""
    s = str(ref)
    if s.startswith(minari_io.PREFIX):
        return s[len(minari_io.PREFIX):].replace("/", "-")
    return Path(s).stem if not minari_io.is_minari(s) else Path(s).name


def check_env(env_name: str, ref, raw: dict) -> None:
    """A dataset collected on another env than ``--env`` is refused (Minari datasets record theirs)."""
    recorded = raw.get("metadata/env")
    if recorded is not None and recorded != env_name:
        raise data.DatasetError(f"dataset: {ref} was collected on {raw.get('metadata/gym_id')} (poe_jax env "
                                f"{recorded!r}); got env {env_name!r}: pass --env {recorded}")


def behaviour(raw: dict) -> dict:
    """The SAC behaviour policies a generated dataset came from (its ``metadata/expert`` and
    ``metadata/medium`` records: snapshot, step, deterministic and stochastic D4RL-normalised
    scores), for the cards of the actors trained on it; ``{}`` for other files (real D4RL)."""
    out = {}
    for k in ("expert", "medium"):
        v = raw.get(f"metadata/{k}")
        if v is not None:
            out[k] = json.loads(v) if isinstance(v, (str, bytes)) else v
    return out


def train_actors(env_name: str, files: list[Path], out: Path, steps: int, algo: str = "iql",
                 time_budget: float | None = None, seed: int = 0, log=print) -> list[Path]:
    """Train ``algo`` (iql, td3_bc or bc) on each file at once; write ``out/DATASET-ALGO`` with cards.

    The log also goes to ``out/ENV-ALGO.log`` (appended)."""
    from poe_jax.train import bc, file_log, iql

    raw = [data.read(f) for f in files]
    options = {str(d.get("metadata/env_options", "{}")) for d in raw}  # JSON, keys sorted (minari_io.read)
    if len(options) > 1:
        raise data.DatasetError(f"datasets {[str(f) for f in files]} ask for different env options {sorted(options)}; "
                                "train them apart")
    try:  # a Minari dataset's env_spec kwargs that poe_jax models; a file is data: checked like a grid's
        options = registry.check_options(env_name, json.loads(options.pop()))
    except (ValueError, TypeError, AttributeError) as e:
        raise data.DatasetError(f"{files[0]}: metadata/env_options: {e}") from None
    env = envs.make(env_name, backend="native", **options)
    for f, d in zip(files, raw):
        check_env(env_name, f, d)
        data.check_layout(d, f, env.obs_size, env.act_size)
    log = file_log(Path(out) / f"{env_name}-{algo}.log", log)  # after the data are checked: nothing written before
    log(f"train {algo} on {[str(f) for f in files]}: {steps} steps, seed {seed}, time budget {time_budget}")
    if options:
        log(f"env options from the data's env_spec: {options}")
    q = [data.qlearning_dataset(d) for d in raw]
    max_action = float(np.asarray(env.action_high)[0])
    scales = [1.0] * len(q)
    if algo == "iql":
        scales = [iql.reward_scale(d) for d in raw]  # CORL scales IQL's locomotion rewards
        for d, s in zip(q, scales):
            d["rewards"] = d["rewards"] * s
        cfg = iql.IQLConfig(steps=steps, seed=seed, normalize_reward=False)
        actors, info = iql.train(q, env.obs_size, env.act_size, cfg, max_action, log=log, time_budget=time_budget,
                                 checkpoint=Path(out) / f".{env_name}-{algo}-train.npz")
    elif algo in ("td3_bc", "bc"):
        cfg = bc.BCConfig(algo=algo, steps=steps, seed=seed)
        actors, info = bc.train(q, env.obs_size, env.act_size, cfg, max_action, log=log, time_budget=time_budget,
                                checkpoint=Path(out) / f".{env_name}-{algo}-train.npz")
    else:
        raise ValueError(f"unknown training algo {algo!r}; known: iql, td3_bc, bc")
    paths = []
    for f, actor, scale, d in zip(files, actors, scales, raw):
        dataset = dataset_name(f)
        score = evaluate_scores(env, actor, raw=d)
        log(f"{dataset}: {algo} normalized score {score['normalized_mean']:.1f} ± {score['normalized_se']:.1f} "
            f"(return {score['return_mean']:.0f}; {score['normalized_by']})")
        path = checkpoints.save(out / f"{dataset}-{algo}", actor, env=env_name, dataset=dataset, overwrite=True,
                                scores=[score], normalization_note="dataset mean, std + 1e-3 (CORL)",
                                provenance={"algo": f"{algo} (poe_jax.train)", "config": str(cfg),
                                            "steps": info["steps"], "reward_scale": scale, "seed": seed,
                                            "train_seconds": info["seconds"], "behaviour": behaviour(d)})
        paths.append(path)
    return paths


def train_prior(env_name: str, file: Path, out: Path, steps: int, seed: int = 0, log=print,
                goals: tuple[str, ...] | None = None, fraction: float = 1.0) -> Path:
    """AWR goal prior on ``file`` for ``goals`` (default: every goal that applies to the env), written to
    ``out/ENV-prior``; the log also goes to ``out/ENV-prior.log``."""
    from poe_jax.envs import goal_names
    from poe_jax.train import file_log, prior

    env = envs.make(env_name, backend="native")
    d = data.read(file)
    check_env(env_name, file, d)
    data.check_layout(d, file, env.obs_size, env.act_size, need=("infos/qpos", "infos/qvel"))
    log = file_log(Path(out) / f"{env_name}-prior.log", log)  # after the data are checked: nothing written before
    log(f"train prior on {file}: {steps} steps, seed {seed}")
    cfg = prior.PriorConfig(steps=steps, seed=seed, fraction=fraction)
    goals = tuple(goals or goal_names(env_name))
    p, info = prior.train(env, d, goals, cfg, log=log, checkpoint_dir=out)
    info["heldout_nll"] = {g: prior.heldout_nll(p, d, g, cfg.holdout) for g in goals}
    log(f"held-out NLL per action dim: {info['heldout_nll']}")
    return checkpoints.save(out / f"{env_name}-prior", p, env=env_name, dataset=dataset_name(file), overwrite=True,
                            normalization_note="dataset mean, std + 1e-3",
                            provenance={"algo": "AWR goal prior (poe_jax.train.prior)", "config": str(cfg), **info})


def build(env_name: str, work: str | Path, out: str | Path, iql_steps: int = 1_000_000, prior_steps: int = 100_000,
          iql_time_budget: float | None = None, seed: int = 0, log=print) -> dict:
    work, out = Path(work), Path(out)
    t0 = time.time()
    files = [work / f"{env_name}-{k}.hdf5" for k in IQL_KINDS]
    iql_paths = train_actors(env_name, files, out, iql_steps, "iql", iql_time_budget, seed, log)
    t1 = time.time()
    prior_path = train_prior(env_name, work / f"{env_name}-medium-replay.hdf5", out, prior_steps, seed, log)
    record = {"env": env_name, "iql": [str(p.name) for p in iql_paths], "prior": prior_path.name,
              "iql_seconds": round(t1 - t0, 1), "prior_seconds": round(time.time() - t1, 1)}
    (out / f"{env_name}-build.json").write_text(json.dumps(record, indent=2))
    return record
