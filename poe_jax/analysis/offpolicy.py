"""Off-policy scoring of composed policies with the frozen actor's own critic.

No rollouts: on a set of dataset states ``S`` (the actor's training distribution),
for each (goal, prior quality, rule, coefficient) the scorer evaluates

    Q_rule = mean_{s in S} Q(s, clip(mean of rule(actor(s), prior(s, goal))))

with ``Q = min(Q1, Q2)``, the IQL critic that ships with the actor, and reports
``delta_q = Q_rule - mean_s Q(s, actor action)``. The critic was trained on the
**task** reward of the actor's dataset, so ``delta_q`` predicts the change in task
return, not in goal return, and only where the composed actions stay near the
data (large deviations are extrapolation). Reports show it beside the rollouts.

Dataset states: any D4RL HDF5 file or an ``.npz`` with ``observations``; for the
shipped actors, ``checkpoints/probe-states/<dataset>.npz`` (1,000 states from the
dataset's behaviour policy, see ``checkpoints/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from poe_jax import checkpoints
from poe_jax.grid import store
from poe_jax.kernels import priors
from poe_jax.kernels import rules as kernels

__all__ = ["composed", "find_states", "lanes_at", "load_states", "read_scores", "score_grid", "score_plan", "score_run",
           "scored", "store_scores"]


def find_states(dataset: str | None) -> Path | None:
    """The shipped probe states of ``dataset`` (e.g. ``hopper-medium``; a card's ``probe_states`` file name
    works too), or None. A card is data: only a plain file name is looked up (a path, e.g. an absolute one,
    would have read a file outside the zoo)."""
    if not checkpoints.plain_file_name(dataset):
        return None
    name = dataset if dataset.endswith(".npz") else f"{dataset}.npz"
    for d in checkpoints.zoo_dirs():
        path = d / "probe-states" / name
        if path.is_file():
            return path
    return None


def load_states(path: str | Path, obs_size: int | None = None, limit: int = 5000) -> np.ndarray:
    """``[n, obs]`` float32 observations from a D4RL HDF5 file or an ``.npz`` (at most ``limit``, evenly spaced)."""
    path = Path(path)
    if path.suffix in (".hdf5", ".h5"):
        from poe_jax import data

        obs = np.asarray(data.read(path)["observations"])
    else:
        import zipfile

        try:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single array (.npy), not an .npz archive")
            with z:
                obs = np.asarray(z["observations"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not a states file (.npz with 'observations' or D4RL .hdf5): {e}") from None
    if not np.issubdtype(obs.dtype, np.number) or obs.dtype.kind == "c":
        raise ValueError(f"{path}: observations must be real numbers; got dtype {obs.dtype}")
    if obs.ndim != 2 or not len(obs):
        raise ValueError(f"{path}: observations must be a non-empty [n, obs] array; got shape {obs.shape}")
    if obs_size is not None and obs.shape[1] != obs_size:
        raise ValueError(f"{path}: observations have {obs.shape[1]} entries; the actor expects {obs_size}")
    bad = ~np.isfinite(obs).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: observations: {int(bad.sum())} of {len(obs)} states are not finite (first: row "
                         f"{int(np.argmax(bad))}); give finite states")
    if len(obs) > limit:
        obs = obs[np.linspace(0, len(obs) - 1, limit).astype(int)]
    return obs.astype(np.float32)


_LANES_PER_CALL = 64  # lanes per call of the scorer's program (each over every state)


def _nominal_cells(plan) -> list[int]:
    """The cells the scorer evaluates: one per (goal, prior quality, rule, coefficient) of the closed-form
    rules, at the grid's nominal shift (``none`` when it has one, else its first): the scorer's states are the
    dataset's, unshifted."""
    shifts = list(plan.spec.shifts)
    nominal = "none" if "none" in shifts else shifts[0]
    return [i for i, c in enumerate(plan.cells) if c.shift == nominal and not kernels.RULES[c.rule].needs_critic]


def lanes_at(plan, cell_ids: list[int]) -> np.ndarray:
    """The lanes the scorer evaluates for ``cell_ids``: each cell's first episode of every seed (the lanes whose
    prior quality draws, e.g. ``random``'s untrained network, are the rollouts')."""
    table = plan.lanes
    first = table.lanes.episode == 0
    return np.concatenate([np.flatnonzero((table.cell == c) & first) for c in cell_ids])


def composed(plan, actor, prior, obs, lane_ids, keys):
    """The composed distribution lane ``lane_ids[j]`` executes at observation ``obs[j]`` with key ``keys[j]``:
    the grid's own lane policy (:func:`poe_jax.grid.program.lane_policy`) in the program of the lane's rule and
    prior quality (:class:`~poe_jax.grid.plan.ProgramKey`), evaluated as the rollout evaluates it (vmapped
    over lanes, one observation each, at least :data:`~poe_jax.grid.plan.MIN_BATCH` lanes a call), so the
    two agree bit for bit. All of ``lane_ids`` must run one program."""
    lane_ids = np.asarray(lane_ids)
    key, lanes, n = _lanes(plan, lane_ids)
    obs, keys = _pad(jnp.asarray(obs, jnp.float32), lanes), _pad(keys, lanes)
    out = _scorer(plan, key).composed(actor, prior, lanes, obs, keys)
    return jax.tree_util.tree_map(lambda x: x[:n], out)


def _lanes(plan, lane_ids):
    """``(program key, lanes, count)``: the lanes of ``lane_ids`` as their program takes them (its one rule
    and one prior quality at index 0), padded by repeating the last to :data:`~poe_jax.grid.plan.MIN_BATCH`."""
    from poe_jax.grid.plan import MIN_BATCH

    keys = plan.program_keys()
    which = {keys[c] for c in plan.lanes.cell[lane_ids]}
    if len(which) != 1:
        raise ValueError(f"lanes of {len(which)} programs; give lanes of one (rule, prior quality)")
    padded = np.concatenate([lane_ids, np.full(max(0, MIN_BATCH - lane_ids.size), lane_ids[-1])])
    lanes = plan.lanes.lanes.take(padded)
    zero = np.zeros(padded.size, np.int32)
    return which.pop(), lanes._replace(rule=zero, quality=zero), lane_ids.size


def _pad(x, lanes):
    n = len(lanes.seed)
    return x if x.shape[0] == n else jnp.concatenate([x, jnp.repeat(x[-1:], n - x.shape[0], axis=0)])


class _Programs(NamedTuple):
    composed: Callable  # (actor, prior, lanes, obs [L, obs], keys [L]) -> DiagGaussian [L, act]
    values: Callable  # (actor, prior, lanes, states [n, obs], base keys [L]) -> Q [n, L]


_FNS: dict = {}  # the scorer's jitted programs of this process, by what they close over (see _scorer)
_FNS_MAX = 64


def _scorer(plan, key) -> _Programs:
    """The jitted scorer programs of ``key`` (one rule, one prior quality: the rollout's program). They close
    over the rule, the quality, the action bound and the degraded noise only (the networks, lanes and states
    are arguments), so grids that share those share the programs and their compiles."""
    rule, quality = kernels.RULES[key.rule], priors.get(key.quality)
    m = float(np.asarray(plan.env.action_high)[0])
    ident = (rule.name, id(rule.fn), quality.name, id(quality.fn), m, plan.spec.degraded_noise)
    if ident not in _FNS:
        if len(_FNS) >= _FNS_MAX:
            _FNS.pop(next(iter(_FNS)))
        _FNS[ident] = _build_scorer((rule,), (quality.name,), m, plan.spec.degraded_noise)
    return _FNS[ident]


def _build_scorer(rules, qualities, m: float, degraded_noise: float) -> _Programs:
    from poe_jax.grid.program import lane_policy, untrained_params

    untrained = any(priors.get(q).needs_untrained for q in qualities)

    def at(actor, prior, lanes, u, obs, keys):  # one observation per lane, as the rollout's step
        def one(lane, u_params, o, k):
            pi = lane_policy(actor, prior, rules, qualities, lane, u_params, m=m, degraded_noise=degraded_noise,
                             sample=False, obs_noise=False, act_noise=False)
            return pi(o, k)[1].composed

        return jax.vmap(one)(lanes, u, obs, keys)

    @jax.jit
    def composed(actor, prior, lanes, obs, keys):
        return at(actor, prior, lanes, untrained_params(prior, lanes) if untrained else None, obs, keys)

    @jax.jit
    def values(actor, prior, lanes, states, base):
        u = untrained_params(prior, lanes) if untrained else None  # one network per lane, from its seed

        def state(i):  # every lane at dataset state i, keyed like the lane's step i
            obs = jnp.broadcast_to(states[i], (base.shape[0], states.shape[1]))
            keys = jax.vmap(lambda k: jax.random.fold_in(k, i + 1))(base)
            c = at(actor, prior, lanes, u, obs, keys)
            return actor.critic.q(obs, jnp.clip(c.mean, -m, m))

        return jax.lax.map(state, jnp.arange(states.shape[0]))

    return _Programs(composed, values)


def score_plan(plan, states: np.ndarray) -> pd.DataFrame:
    """One row per (goal, prior, rule, param) of ``plan``'s closed-form rules: ``q`` (mean critic value of the
    composed mean action), ``q_frozen``, ``delta_q``, over the dataset ``states`` and the grid's seeds.

    Each (state ``i``, seed) is evaluated with the policy the grid's lane of that seed runs, in its rule's and
    prior quality's own program (its quality's draws included: the ``random`` prior is that seed's untrained
    network), keyed like the lane's step ``i``; ``frozen`` on the same states is the baseline. The critic
    rules are not scored: they choose their actions with this critic.
    """
    from poe_jax.grid.program import step_keys

    actor = plan.actor_full
    if actor.critic is None:
        raise ValueError("the actor has no critic; the off-policy scorer needs the critic that ships with it")
    cell_ids = _nominal_cells(plan)
    if not cell_ids:
        raise ValueError("the grid has no closed-form rule to score (the critic rules choose their actions with "
                         "this critic)")
    if not any(plan.cells[c].rule == "frozen" for c in cell_ids):
        raise ValueError("the grid has no frozen rule: the off-policy scores are differences from frozen")
    n = len(states)
    obs = jnp.asarray(states, jnp.float32)
    keys = plan.program_keys()
    q_of = {}  # cell -> mean Q over states and seeds
    for key in dict.fromkeys(keys[c] for c in cell_ids):  # one program per (rule, prior quality), as the runner
        mine = [c for c in cell_ids if keys[c] == key]
        lane_ids = lanes_at(plan, mine)
        per_call = next(k for k in (8, 16, 32, _LANES_PER_CALL) if k >= min(len(lane_ids), _LANES_PER_CALL))
        values = []
        for lo in range(0, len(lane_ids), per_call):  # a fixed count of lanes a call: one compile
            pos = np.minimum(np.arange(lo, lo + per_call), len(lane_ids) - 1)
            _, lanes, _ = _lanes(plan, lane_ids[pos])
            _, base = step_keys(lanes)
            qs = np.asarray(_scorer(plan, key).values(actor, plan.prior, lanes, obs, base), np.float64)  # [n, lanes]
            values += list(qs.mean(axis=0)[: min(per_call, len(lane_ids) - lo)])
        per_cell = np.asarray(values).reshape(len(mine), -1)  # cells x seeds (lanes_at's order)
        q_of.update({c: float(v.mean()) for c, v in zip(mine, per_cell)})
    rows = []
    for ci in cell_ids:  # cell order: rule, coefficient, goal, prior (the spec's)
        c = plan.cells[ci]
        blind = not kernels.RULES[c.rule].uses_prior  # its episodes serve every prior quality of its goal
        for prior in (plan.spec.priors if blind else (c.prior,)):
            rows.append({"goal": c.goal, "prior": prior, "rule": c.rule, "param": float(np.float32(c.param)),
                         "q": q_of[ci], "_cell": ci})
    out = pd.DataFrame(rows)
    goal_rank = {g: i for i, g in enumerate(plan.spec.goals)}
    prior_rank = {q: i for i, q in enumerate(plan.spec.priors)}
    out = out.assign(_g=out["goal"].map(goal_rank), _p=out["prior"].map(prior_rank))
    out = out.sort_values(["_g", "_p", "_cell"], kind="stable").drop(columns=["_g", "_p", "_cell"])
    frozen = {plan.cells[c].goal: q_of[c] for c in cell_ids if plan.cells[c].rule == "frozen"}
    out["q_frozen"] = out["goal"].map(frozen)
    out["delta_q"] = out["q"] - out["q_frozen"]
    out["states"] = n
    return out.reset_index(drop=True)


def score_run(out: str | Path, states: str | Path | None = None) -> tuple[pd.DataFrame | None, list[str]]:
    """Off-policy scores for every grid of the run in ``out``, written into each grid's folder
    (:func:`store_scores`); returns them (a ``grid`` column first) with the notes of the grids skipped.

    A run folder is data: each grid's stored spec is resolved with the registries this process has, and the
    plugins it names are not imported (a grid of unknown rules, goals or prior qualities is skipped with a
    note; load its plugins first). A grid that cannot be resolved keeps the scores it has."""
    from poe_jax.grid import plan as plans
    from poe_jax.grid.spec import SpecError, spec_from_dict

    dirs = [d for d in store.grid_dirs(out) if (d / "spec.json").is_file()]
    if not dirs:
        raise store.StoreError(f"{out}: not a run folder (no spec.json; poe-jax run --out DIR writes one)")
    frames, notes = [], []
    for d in dirs:
        try:  # spec.json's fields are data: a grid that cannot be resolved is skipped with a note
            plan = plans.resolve(spec_from_dict(store.read_spec(d)).replace(plugins=()))
        except (SpecError, ValueError, TypeError, KeyError, AttributeError, checkpoints.CheckpointError) as e:
            notes.append(f"{d.name}: skipped ({e}); its stored scores, if any, are kept")
            continue
        try:
            df, note = score_grid(plan, d, states)
        except ValueError as e:
            df, note = None, f"{d.name}: skipped ({e})"
        store_scores(d, df, note, Path(out), states)
        if note:
            notes.append(note)
        if df is not None:
            frames.append(df.assign(grid=d.name))
    if not frames:
        return None, notes
    df = pd.concat(frames, ignore_index=True)
    return df[["grid", *[c for c in df.columns if c != "grid"]]], notes


def score_grid(plan, d: Path, states=None) -> tuple[pd.DataFrame | None, str | None]:
    """One grid's off-policy scores ``(frame, None)``, or ``(None, why it was skipped)``."""
    if plan.actor_full.critic is None:
        return None, f"{d.name}: skipped (the actor {plan.actor_path.name} has no critic)"
    dataset = plan.actor_card.get("probe_states") or plan.actor_card.get("dataset")
    path = Path(states) if states is not None else find_states(dataset)
    if path is None:
        return None, f"{d.name}: skipped (no dataset states for {plan.actor_card.get('dataset')!r}; pass --states)"
    try:
        obs = load_states(path, plan.actor_full.spec.obs_size)
    except ValueError as e:
        return None, f"{d.name}: skipped ({e})"
    df = score_plan(plan, obs)
    df.insert(0, "actor", plan.actor_path.name)
    df.insert(0, "env", plan.spec.env)
    df["states_file"] = path.name
    return df, None


SCORES, SCORE_NOTES = "offpolicy-scores.csv", "offpolicy-scores.json"  # a grid folder's stored off-policy scores


def store_scores(d: Path, df: pd.DataFrame | None, note: str | None, root: Path, states=None) -> None:
    """Write a grid's scores (``d/offpolicy-scores.csv``) and what they were scored with or why the grid was
    skipped (``d/offpolicy-scores.json``), atomically; a grid without scores keeps no stale table."""
    import json

    if df is not None:
        store.write_file(d / SCORES, df.to_csv(index=False), root)
    elif (d / SCORES).exists():
        store.remove_file(d / SCORES, root)
    store.write_file(d / SCORE_NOTES, json.dumps({"note": note, "states": None if states is None else str(states)}),
                     root)


def scored(d: Path) -> bool:
    """Whether grid folder ``d`` holds the scoring step's result (scores, or the note of why there are none)."""
    return (Path(d) / SCORE_NOTES).is_file()


def read_scores(out: str | Path) -> tuple[pd.DataFrame | None, list[str]]:
    """The stored off-policy scores of every grid of the run in ``out`` (a ``grid`` column added) and their
    notes; a grid never scored gets a note saying so."""
    import json

    frames, notes = [], []
    for d in store.grid_dirs(out):
        if (d / SCORES).is_file():
            frames.append(pd.read_csv(d / SCORES).assign(grid=d.name))
        try:
            note = json.loads((d / SCORE_NOTES).read_text())["note"]
        except (OSError, ValueError, KeyError, TypeError):
            note = None if (d / SCORES).is_file() else f"{d.name}: not scored (run poe-jax score {out})"
        if note:
            notes.append(note)
    if not frames:
        return None, notes
    df = pd.concat(frames, ignore_index=True)
    return df[["grid", *[c for c in df.columns if c != "grid"]]], notes
