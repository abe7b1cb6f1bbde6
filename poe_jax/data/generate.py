"""``poe-jax data generate``: behaviour policies by online SAC, then D4RL-style datasets.

Phase 1 (``policies``): SAC (:mod:`poe_jax.train.sac`) on the native backend; every
``eval_every`` steps the deterministic policy is evaluated and saved as a
checkpoint ``DIR/policies/step-NNNNNNN`` (card with its eval return).

Picking the behaviour policies (:func:`pick_policies`) uses each snapshot's
**stochastic** return over 20 episodes (:func:`score_snapshots`), since the
datasets are collected with the stochastic policy, and SAC's deterministic and
stochastic returns can differ a lot early in training (hopper: 86 vs 62). The
**expert** is the snapshot with the best stochastic return; the **medium** policy
is the snapshot whose stochastic return is closest to half the expert's
(:data:`MEDIUM_FRACTION`, which says why half rather than D4RL's stated third),
from anywhere in training.

Phase 2 (``datasets``), in D4RL layout under ``DIR/ENV-KIND.hdf5``:

* ``random``: uniform random actions;
* ``medium`` / ``expert``: the medium / expert policy's *stochastic* actions;
* ``medium-replay``: D4RL stores SAC's replay buffer up to the medium point.
  poe_jax does not keep the buffer; it rolls out every saved snapshot up to the
  medium one (stochastic), in training order, the same number of steps each --
  the same policies a replay buffer would hold, sampled evenly rather than in
  proportion to training time. Documented deviation;
* ``medium-expert``: medium and expert concatenated.

Phase 3 (``probe``): ``DIR/probe-states/ENV-medium.npz``, 1,000 observations of the
medium behaviour policy (the medium dataset's state distribution), small enough
to ship beside the checkpoints for :mod:`poe_jax.analysis.offpolicy`.

Sizes default to 200,000 transitions each (D4RL: 1M; 2M for medium-expert), a
budget choice recorded in each file's metadata.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax import checkpoints, data, envs, nets
from poe_jax.envs import registry

__all__ = ["KINDS", "PRIOR_DATA_ACTORS", "calibration_rows", "PRIOR_DATA_STD", "tracking_speeds", "Tracking", "datasets", "prior_data", "pick_policies", "policies", "probe_states", "sac_config", "score_snapshots", "tracking_name", "tracking_policy"]

KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")


def sac_config(env_name: str, steps: int = 1_000_000, seed: int = 0):
    """The SAC settings ``policies`` uses for ``env_name``.

    The SAC paper's settings everywhere (:class:`~poe_jax.train.sac.SACConfig`), with two
    per-env changes: 10k random warm-up steps for halfcheetah and ant, and for ant the critics'
    and temperature's learning rate 1e-3 (CleanRL's ``q_lr``). With 3e-4, two ant runs (the
    230k-step first pass and a 425k-step run) settled on standing still (return ~950, forward
    speed 0.015 m/s), a known SAC outcome on Ant; CleanRL's SAC, whose critics learn at 1e-3,
    reaches 4,600-6,000 on Ant-v4 at 1M steps (its published models on Hugging Face). At 1e-3
    ours left the plateau between 125k and 225k steps and its best snapshot scored 126.5
    (checkpoints/README.md)."""
    from poe_jax.train import sac

    recipe = registry.recipe(env_name)  # each env declares its settings (envs.locomotion.RECIPES)
    return sac.SACConfig(steps=steps, seed=seed, warmup=recipe.get("sac_warmup", 5_000),
                         critic_lr=recipe.get("sac_critic_lr"))


def policies(env_name: str, out: str | Path, steps: int = 1_000_000, time_budget: float | None = None,
             seed: int = 0, eval_every: int = 20_000, log=print) -> list[dict]:
    """Phase 1: SAC snapshots under ``out/policies``; returns their records.

    The full training state is kept in ``out/sac-state.npz`` (replay buffer included), so
    running this again with the same arguments continues training (e.g. in several
    time-budgeted sessions); records from earlier sessions are kept in the index, each with
    ``seconds``, the wall time spent training to it over every sitting.
    """
    from poe_jax.train import file_log, sac

    out = Path(out)
    (out / "policies").mkdir(parents=True, exist_ok=True)
    env = envs.make(env_name, backend="native")
    cfg = sac_config(env_name, steps, seed)
    index = out / "policies" / "index.json"
    records = json.loads(index.read_text()) if index.exists() and (out / "sac-state.npz").exists() else []
    say = file_log(out / "sac.log", log)

    def save(snap):
        path = out / "policies" / f"step-{snap['step']:07d}"
        score = env.spec.normalized_score(snap["eval_return"])
        checkpoints.save(path, snap["actor"], env=env_name, overwrite=True, provenance={
            "algo": "SAC (poe_jax.train.sac)", "env_steps": snap["step"], "seed": seed, "config": str(cfg)},
            scores=[{"episodes": 10, "return_mean": snap["eval_return"], "return_std": snap["eval_std"],
                     "normalized_mean": score, "deterministic": True}])
        records.append({"path": path.name, "step": snap["step"], "eval_return": snap["eval_return"],
                        "normalized": score, "seconds": snap["seconds"]})
        (out / "policies" / "index.json").write_text(json.dumps(records, indent=2))

    t0 = time.time()
    sac.train(env, cfg, eval_every=eval_every, log=say, time_budget=time_budget, on_snapshot=save,
              checkpoint=out / "sac-state.npz")
    say(f"SAC done in {time.time() - t0:.0f} s"
        + (f" ({records[-1]['seconds']:.0f} s over every sitting)" if records and "seconds" in records[-1] else ""))
    return records


def score_snapshots(env_name: str, out: str | Path, episodes: int = 20, seed: int = 10_000,
                    log=print) -> list[dict]:
    """Add ``det_return`` / ``sto_return`` (mean return over ``episodes`` episodes of the
    deterministic / stochastic policy, native backend, the same episode seeds for every
    snapshot) and their D4RL-normalised ``det_normalized`` / ``sto_normalized`` to each
    record of ``out/policies/index.json`` that lacks them; returns the records."""
    from poe_jax.grid import rollout

    out = Path(out)
    index = out / "policies" / "index.json"
    if not index.is_file():
        raise data.DatasetError(f"{out / 'policies'}: no SAC snapshots; run --phase policies first")
    recs = json.loads(index.read_text())
    env = envs.make(env_name, backend="native")
    keys = jax.random.split(jax.random.key(seed), episodes)  # the episodes sac.evaluate runs
    # the actor is an argument, so each program compiles once for all snapshots
    run_det = jax.jit(lambda a, k: rollout.rollout(env, rollout.deterministic(a.act), k).return_task)
    run_sto = jax.jit(lambda a, k: rollout.rollout(env, lambda o, kk: (_stochastic(a)(o, kk), {}), k).return_task)
    for r in recs:
        if "sto_return" in r and r.get("score_episodes") == episodes:
            continue
        actor = checkpoints.load(out / "policies" / r["path"], env=env_name)
        for name, run in (("det", run_det), ("sto", run_sto)):
            ret = np.asarray(run(actor, keys))
            r[f"{name}_return"] = float(ret.mean())
            r[f"{name}_normalized"] = float(np.mean(env.spec.normalized_score(ret)))
        r["score_episodes"] = episodes
        log(f"{r['path']}: deterministic {r['det_normalized']:.1f}, stochastic {r['sto_normalized']:.1f} "
            f"(D4RL-normalised, {episodes} episodes)")
    index.write_text(json.dumps(recs, indent=2))
    return recs


MEDIUM_FRACTION = 0.5
"""The medium policy's return as a fraction of the expert's.

D4RL's paper describes its medium policies as reaching about a third of the expert, but the
medium datasets it released are stronger: behaviour cloning on them scores 42.6 (halfcheetah),
52.9 (hopper) and 75.3 (walker2d) D4RL-normalised (Kostrikov et al. 2021, IQL, table 1), i.e.
about half of an expert or more. Half matches the data offline-RL results are reported on; a
third of our hopper expert (27) gave IQL nothing to improve on (28.0, see checkpoints/README.md)."""


def _check_fraction(medium_fraction: float) -> None:
    if not 0.0 < medium_fraction < 1.0:
        raise ValueError(f"medium_fraction must lie in (0, 1), got {medium_fraction}")


def pick_policies(out: str | Path, medium_fraction: float = MEDIUM_FRACTION) -> tuple[dict, dict, list[dict]]:
    """(expert, medium, snapshots up to medium) from ``out/policies/index.json``.

    The expert is the best snapshot; the medium one is the snapshot whose return is closest to
    ``medium_fraction`` of the expert's, from anywhere in training. Uses the stochastic scores of
    :func:`score_snapshots` when every record has them, else the deterministic evaluation return
    logged during training."""
    _check_fraction(medium_fraction)
    recs = json.loads((Path(out) / "policies" / "index.json").read_text())
    if not recs:
        raise ValueError(f"{out}/policies/index.json lists no snapshots; run the 'policies' phase first")
    key = "sto_return" if all("sto_return" in r for r in recs) else "eval_return"
    expert = max(recs, key=lambda r: r[key])
    target = expert[key] * medium_fraction
    medium = min(recs, key=lambda r: abs(r[key] - target))
    return expert, medium, [r for r in recs if r["step"] <= medium["step"]]


def _stochastic(actor: nets.Actor):
    def act(obs, key):
        base = actor.base(obs)
        mu, std = base.mean, base.std
        return actor.spec.max_action * jnp.tanh(mu + std * jax.random.normal(key, mu.shape))

    return act


MIN_EXPERT_SCORE = 50.0
"""The least D4RL-normalised (stochastic) score an expert snapshot needs before datasets are built
from it. Every expert this package trained scores 80-120 (checkpoints/README.md); an expert below 50
is an interrupted or failed SAC run, whose "expert" and "medium" datasets would be mislabelled."""


def datasets(env_name: str, out: str | Path, size: int = 200_000, lanes: int = 64, seed: int = 0,
             medium_fraction: float = MEDIUM_FRACTION, log=print, allow_weak: bool = False) -> dict[str, Path]:
    """Phase 2: the five datasets as ``out/ENV-KIND.hdf5``; returns their paths.

    Refused (:class:`~poe_jax.data.DatasetError`) when the best snapshot scores below
    :data:`MIN_EXPERT_SCORE`, unless ``allow_weak``."""
    _check_fraction(medium_fraction)  # before the minutes of scoring
    out = Path(out)
    env = envs.make(env_name, backend="native")
    score_snapshots(env_name, out, log=log)
    expert, medium, replay = pick_policies(out, medium_fraction)
    if expert["sto_normalized"] < MIN_EXPERT_SCORE and not allow_weak:
        raise data.DatasetError(
            f"{out}/policies: the best SAC snapshot ({expert['path']}, step {expert['step']}) scores "
            f"{expert['sto_normalized']:.1f} (stochastic, D4RL-normalised), below {MIN_EXPERT_SCORE:g}: SAC did not "
            "finish (interrupted?). Run --phase policies again (it resumes), or pass --allow-weak to build the "
            "datasets from it anyway")
    log(f"expert {expert['path']} (stochastic {expert['sto_normalized']:.1f}, deterministic "
        f"{expert['det_normalized']:.1f}), medium {medium['path']} (stochastic {medium['sto_normalized']:.1f}), "
        f"medium-replay: {len(replay)} snapshots")
    load = lambda r: checkpoints.load(out / "policies" / r["path"], env=env_name)  # noqa: E731
    key = jax.random.key(seed + 1)
    meta = {"env": env_name, "size": size, "generator": "poe_jax.data.generate", "seed": seed,
            "expert": expert, "medium": medium, "medium_fraction": medium_fraction}
    paths = {}

    def put(kind, d):
        paths[kind] = data.write(out / f"{env_name}-{kind}.hdf5", d, {**meta, "kind": kind})
        r = d["rewards"]
        ends = np.flatnonzero(d["terminals"] | d["timeouts"])
        rets = np.add.reduceat(r, np.r_[0, ends[:-1] + 1]) if len(ends) else np.array([r.sum()])
        log(f"{env_name}-{kind}: {len(r)} transitions, {len(ends)} episodes, mean return {rets.mean():.1f}")

    act_size, hi = env.act_size, float(np.asarray(env.action_high)[0])
    k = jax.random.split(key, 4)
    put("random", data.collect(env, lambda o, kk: jax.random.uniform(kk, (act_size,), minval=-hi, maxval=hi),
                               size, lanes, k[0]))
    d_med = data.collect(env, _stochastic(load(medium)), size, lanes, k[1])
    put("medium", d_med)
    d_exp = data.collect(env, _stochastic(load(expert)), size, lanes, k[2])
    put("expert", d_exp)
    per = max(lanes, size // max(len(replay), 1))
    parts = [data.collect(env, _stochastic(load(r)), per, lanes, jax.random.fold_in(k[3], i)) for i, r in enumerate(replay)]
    put("medium-replay", {key_: np.concatenate([p[key_] for p in parts]) for key_ in parts[0]})
    put("medium-expert", {key_: np.concatenate([d_med[key_], d_exp[key_]]) for key_ in d_med})
    return paths


def probe_states(env_name: str, out: str | Path, n: int = 1000, lanes: int = 10, seed: int = 0,
                 medium_fraction: float = MEDIUM_FRACTION, log=print) -> Path:
    """Phase 3: ``out/probe-states/ENV-medium.npz`` -- ``n`` observations of the medium
    behaviour policy (stochastic, as in the medium dataset; chosen as in :func:`datasets`),
    evenly spaced over ``lanes`` trajectories of ``5 n / lanes`` steps."""
    out = Path(out)
    env = envs.make(env_name, backend="native")
    _, medium, _ = pick_policies(out, medium_fraction)
    actor = checkpoints.load(out / "policies" / medium["path"], env=env_name)
    d = data.collect(env, _stochastic(actor), 5 * n, lanes, jax.random.key(seed + 7))
    obs = d["observations"][:: max(1, len(d["observations"]) // n)][:n].astype(np.float32)
    path = out / "probe-states" / f"{env_name}-medium.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, observations=obs, policy=medium["path"], seed=seed)
    log(f"{path}: {len(obs)} states of the medium policy {medium['path']}")
    return path


def actor_probe_states(actor_ref: str, out: str | Path, n: int = 1000, lanes: int = 10, seed: int = 0,
                       log=print) -> Path:
    """``out/probe-states/NAME-own.npz``: ``n`` observations of the actor's own stochastic rollouts, evenly
    spaced over ``lanes`` trajectories of ``5 n / lanes`` steps: the probe states of an actor whose dataset is
    not kept (the env's own states under that actor, where :func:`probe_states` samples the dataset's
    behaviour policy)."""
    path_in = checkpoints.zoo_path(actor_ref) if actor_ref.startswith("zoo:") else Path(actor_ref)
    card = checkpoints.read_card(path_in)
    env_name = card["env"]
    env = envs.make(env_name, backend="native")
    actor = checkpoints.load(path_in, env=env_name)
    d = data.collect(env, _stochastic(actor), 5 * n, lanes, jax.random.key(seed + 7))
    obs = d["observations"][:: max(1, len(d["observations"]) // n)][:n].astype(np.float32)
    path = Path(out) / "probe-states" / f"{path_in.name}-own.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, observations=obs, policy=path_in.name, seed=seed,
                        source="the actor's own stochastic rollouts (its dataset is not kept)")
    log(f"{path}: {len(obs)} states of {path_in.name}'s own rollouts")
    return path


def calibration_rows(env_name: str, out: str | Path, n: int = 1000, log=print) -> Path:
    """``out/probe-states/ENV-prior-heldout.npz``: ``n`` rows (observations, actions) evenly spaced over the
    held-out last rows of ``out/ENV-prior-data.hdf5`` (``PriorConfig.holdout``: no prior trained on them, the
    small-data priors included), with ``inside``, which action entries lie inside the bounds (a clipped entry says
    only that the mean lies beyond it, so calibration leaves it out). A prior card names the file in
    ``calibration_rows`` (:mod:`poe_jax.analysis.calibration`)."""
    from poe_jax.train import prior as prior_training
    from poe_jax.train.zoo import check_env

    src = Path(out) / f"{env_name}-prior-data.hdf5"
    d = data.read(src)
    check_env(env_name, src, d)
    total = len(d["observations"])
    lo = prior_training.heldout_start(total, prior_training.PriorConfig().holdout)
    pick = lo + np.linspace(0, total - lo - 1, min(n, total - lo)).astype(int)
    obs, act = np.asarray(d["observations"][pick], np.float32), np.asarray(d["actions"][pick], np.float32)
    m = float(np.asarray(envs.make(env_name, backend="native").action_high)[0])
    inside = np.abs(act) < prior_training.CENSOR_AT * m
    path = Path(out) / "probe-states" / f"{env_name}-prior-heldout.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, observations=obs, actions=act, inside=inside, source=f"{src.name} rows {lo}..{total}")
    log(f"{path}: {len(pick)} held-out rows of {src.name} (rows {lo}..{total}; {inside.mean():.0%} of the action "
        "entries inside the bounds)")
    return path


PRIOR_DATA_ACTORS = ("medium-replay", "medium", "medium-expert")
PRIOR_DATA_STD = (1.0, 2.0, 4.0)
# The priors' data also hold SAC policies trained online to run at these speeds (m/s; shipped as
# ENV-track{v}-sac): a prior can only steer toward gaits its data contain, and the three IQL
# actors of an env run at one or two speeds (hopper: all three at 2.25-2.35 m/s). Per speed, the
# slope of the tracking reward's linear term (0: the kernel alone, enough where falling ends the
# episode; halfcheetah never terminates and needs a gradient far from the target).
def tracking_speeds(env_name: str) -> dict[float, float]:
    """``{speed: slope}`` of the speed-tracking policies made for ``env_name`` (its registered recipe)."""
    return dict(registry.recipe(env_name).get("tracking_speeds", {}))
TRACKING_WIDTH = 0.3  # m/s, width of the tracking reward's kernel
TRACKING_WEIGHT = 2.0  # its weight against the healthy reward (1 per live step)


def tracking_name(env_name: str, speed: float) -> str:
    return f"{env_name}-track{speed:g}-sac"


class Tracking:
    """``env`` with its reward replaced by ``healthy + TRACKING_WEIGHT * exp(-(v - speed)^2 /
    (2 TRACKING_WIDTH^2)) - slope |v - speed| - ctrl_cost``: SAC on it learns to run at ``speed``
    and stay up."""

    def __init__(self, env, speed: float, slope: float = 0.0):
        self._env, self.speed, self.slope = env, float(speed), float(slope)

    def __getattr__(self, name):
        return getattr(self._env, name)

    def step(self, state, action):
        n = self._env.step(state, action)
        v = n.metrics["x_velocity"]
        r = (n.reward - v + TRACKING_WEIGHT * jnp.exp(-((v - self.speed) ** 2) / (2 * TRACKING_WIDTH**2))
             - self.slope * jnp.abs(v - self.speed))
        return n.replace(reward=jnp.where(state.done, 0.0, r))


def _speed_and_length(env, actor, episodes: int = 10, seed: int = 10_000) -> tuple[float, float]:
    """Mean forward speed and mean length of ``actor``'s deterministic episodes."""
    d = data.collect(env, lambda o, k: actor.distribution(o).mean, episodes * env.max_steps, episodes,
                     jax.random.key(seed))
    ends = np.flatnonzero(d["terminals"] | d["timeouts"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    q = d["infos/qpos"][:, 0]
    speed = [(q[e] - q[s]) / (env.dt * max(e - s, 1)) for s, e in zip(starts, ends)]
    return float(np.mean(speed)), float(np.mean(ends - starts + 1))


def tracking_policy(env_name: str, speed: float, out: str | Path, steps: int = 300_000, seed: int = 0,
                    eval_every: int = 20_000, slope: float | None = None, log=print) -> Path:
    """``out/ENV-track{speed}-sac``: SAC (:mod:`poe_jax.train.sac`, one lane) on :class:`Tracking`
    (``slope`` default: :func:`tracking_speeds`, else 1); the snapshot with the best evaluation
    return, its speed and length recorded on its card."""
    if slope is None:
        slope = tracking_speeds(env_name).get(speed, 1.0)
    from poe_jax.train import sac
    from poe_jax.train.zoo import evaluate_scores

    out = Path(out)
    base = envs.make(env_name, backend="native")
    cfg = sac.SACConfig(steps=steps, seed=seed, warmup=5_000)
    snaps = []
    sac.train(Tracking(base, speed, slope), cfg, eval_every=eval_every, eval_episodes=5, log=log,
              on_snapshot=snaps.append)
    best = max(snaps, key=lambda s: s["eval_return"])
    v, length = _speed_and_length(base, best["actor"])
    path = checkpoints.save(out / tracking_name(env_name, speed), best["actor"], env=env_name, overwrite=True,
                            scores=[evaluate_scores(base, best["actor"])],
                            provenance={"algo": "SAC (poe_jax.train.sac) on poe_jax.data.generate.Tracking",
                                        "target_speed": speed, "width": TRACKING_WIDTH, "weight": TRACKING_WEIGHT,
                                        "slope": slope,
                                        "env_steps": best["step"], "config": str(cfg), "speed": round(v, 3),
                                        "length": round(length, 1)})
    log(f"{path}: step {best['step']}, {v:.2f} m/s, mean length {length:.0f}")
    return path


def prior_data(env_name: str, out: str | Path, zoo: str | Path | None = None, size: int = 200_000,
               lanes: int = 64, seed: int = 0, log=print) -> Path:
    """``out/ENV-prior-data.hdf5``: the goal prior's training data.

    The zoo's SAC snapshots and datasets are not shipped, so the priors are trained on fresh
    rollouts of the three shipped IQL actors (:data:`PRIOR_DATA_ACTORS`) and of the env's
    speed-tracking SAC policies (:func:`tracking_speeds`, ``ENV-trackV-sac``), each with its
    Gaussian's std scaled by 1, 2 and 4 (:data:`PRIOR_DATA_STD`; clipped at the action bounds), the
    same number of steps each (in an env that never terminates, the IQL actors only with std × 1:
    see the comment below). Checkpoints come from ``zoo`` when given, else by name from the
    zoo (``POE_JAX_ZOO`` first). Wider noise varies the states and actions, not the gait (its mean
    is the actor's): the speeds a G3 prior can steer toward are those of the policies."""
    out = Path(out)
    env = envs.make(env_name, backend="native")
    hi = float(np.asarray(env.action_high)[0])
    parts = []
    iql = [f"{env_name}-{k}-iql" for k in PRIOR_DATA_ACTORS]
    tracking = [tracking_name(env_name, v) for v in tracking_speeds(env_name)]
    names = iql + tracking
    # Where nothing terminates (halfcheetah), an IQL actor with widened noise runs slowly and lives,
    # so AWR credits its fast gait's mean action with a slow speed: measured, the G3 prior then ran
    # faster when asked for 3 m/s. Elsewhere such noise ends in falls, which a goal never pays for.
    terminates = env.spec.healthy_fn is not None
    combos = [(k, s) for k in names for s in (PRIOR_DATA_STD if terminates or k in tracking else (1.0,))]
    per = max(lanes, -(-size // len(combos)))
    for i, (name, mult) in enumerate(combos):
        actor = checkpoints.load(Path(zoo) / name if zoo is not None else checkpoints.zoo_path(name), env=env_name)

        def act(o, k, actor=actor, mult=mult):
            d = actor.distribution(o)
            return jnp.clip(d.mean + mult * d.std * jax.random.normal(k, d.mean.shape), -hi, hi)

        parts.append(data.collect(env, act, per, lanes, jax.random.fold_in(jax.random.key(seed + 3), i)))
        log(f"{name} x std {mult}: {per} transitions, mean reward {parts[-1]['rewards'].mean():.2f}")
    d = {k: np.concatenate([p[k] for p in parts])[:size] for k in parts[0]}
    d["timeouts"][-1] |= ~d["terminals"][-1]
    meta = {"env": env_name, "size": size, "generator": "poe_jax.data.generate.prior_data", "seed": seed,
            "actors": names, "std_multipliers": list(PRIOR_DATA_STD), "combos": [list(c) for c in combos],
            "kind": "prior-data"}
    path = data.write(out / f"{env_name}-prior-data.hdf5", d, meta)
    log(f"{path}: {len(d['rewards'])} transitions")
    return path
