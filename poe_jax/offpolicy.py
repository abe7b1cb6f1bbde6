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
shipped actors, ``poe_jax/zoo/probe-states/<dataset>.npz`` (1,000 states from the
dataset's behaviour policy, see ``poe_jax/zoo/README.md``).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from poe_jax import checkpoints, compose, nets, priors, store
from poe_jax.plan import resolve_checkpoint
from poe_jax.spec import SpecError
from poe_jax.envs.goals import bound_params, prior_head

__all__ = ["find_states", "load_states", "score", "score_run"]


def find_states(dataset: str | None) -> Path | None:
    """The shipped probe states of ``dataset`` (e.g. ``hopper-medium``), or None."""
    if not dataset:
        return None
    for d in checkpoints.zoo_dirs():
        path = d / "probe-states" / f"{dataset}.npz"
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
        try:
            with np.load(path) as z:
                obs = np.asarray(z["observations"])
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: not a states file (.npz with 'observations' or D4RL .hdf5): {e}") from None
    if obs.ndim != 2 or not len(obs):
        raise ValueError(f"{path}: observations must be a non-empty [n, obs] array; got shape {obs.shape}")
    if obs_size is not None and obs.shape[1] != obs_size:
        raise ValueError(f"{path}: observations have {obs.shape[1]} entries; the actor expects {obs_size}")
    if len(obs) > limit:
        obs = obs[np.linspace(0, len(obs) - 1, limit).astype(int)]
    return obs.astype(np.float32)


def score(actor, prior, states: np.ndarray, rules: dict[str, list[float]], goals: list[str],
          qualities: list[str] = ("trained",), degraded_noise: float = 0.5, seed: int = 0,
          goal_values: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per (goal, prior, rule, param): ``q`` (mean critic value), ``q_frozen``, ``delta_q``.

    ``actor`` must carry its critic (``actor.critic``). Degraded and random priors
    are drawn per state from ``seed``, the same draws for every rule (common random
    numbers). ``goal_values``: the value of each goal's continuous parameter (G3's target
    speed) given to a prior that takes one (default: the prior's default). Only the
    closed-form rules are scored: the critic rules choose their actions with this critic.
    """
    if actor.critic is None:
        raise ValueError("the actor has no critic; the off-policy scorer needs the critic that ships with it")
    goal_values = goal_values or {}
    rows = []
    for goal in goals:
        for q in qualities:
            for rule, params in rules.items():
                r = compose.RULES.get(rule)
                if r is None or r.needs_critic:
                    continue
                for p in (params if r.param is not None else [r.default]):
                    rows.append((goal, q, rule, float(np.float32(p))))  # as the grid records it
    scored = tuple(dict.fromkeys(["frozen", *(r[2] for r in rows)]))  # the rules the program switches over
    m = float(actor.spec.max_action)
    obs = jnp.asarray(states)
    key = jax.random.key(seed)
    qualities = tuple(dict.fromkeys(qualities))
    untrained = nets.init_prior(prior.spec, priors.random_prior_key(seed)).params

    @jax.jit
    def value(goal_idx, goal_value, quality, rule_idx, param):
        a = actor.distribution(obs)
        goal = jnp.full(obs.shape[:1], goal_idx)
        g = prior.distribution(obs, goal, goal_value)
        u = prior.replace(params=untrained).distribution(obs, goal, goal_value)
        keys = jax.random.split(jax.random.fold_in(key, quality), obs.shape[0])
        g = jax.vmap(lambda g, u, k: priors.apply(quality, qualities, priors.QualityInputs(g, u, k, m, degraded_noise)))(
            g, u, keys)
        c = jax.vmap(lambda a, g: compose.switch(scored, rule_idx, compose.RuleInputs(a, g, param)))(a, g)
        return jnp.mean(actor.critic.q(obs, jnp.clip(c.mean, -m, m)))

    # The frozen baselines go through the same mapped computation (bit-identical for frozen rows).
    pairs = list(dict.fromkeys((r[0], r[1]) for r in rows))
    batch = rows + [(goal, q, "frozen", 0.0) for goal, q in pairs]
    def goal_value(g):
        entry = prior.spec.param_of(g)
        return goal_values.get(g, entry[4]) if entry else 0.0

    cols = (jnp.asarray([prior.spec.goal_index(prior_head(r[0], prior.spec.goals) or r[0]) for r in batch], jnp.int32),
            jnp.asarray([goal_value(r[0]) for r in batch], jnp.float32),
            jnp.asarray([qualities.index(r[1]) for r in batch], jnp.int32),
            jnp.asarray([scored.index(r[2]) for r in batch], jnp.int32),
            jnp.asarray([r[3] for r in batch], jnp.float32))
    qs = np.asarray(jax.lax.map(lambda x: value(*x), cols), np.float64)
    base = dict(zip(pairs, qs[len(rows):]))
    out = pd.DataFrame(rows, columns=["goal", "prior", "rule", "param"])
    out["q"] = qs[: len(rows)]
    out["q_frozen"] = [base[(r[0], r[1])] for r in rows]
    out["delta_q"] = out["q"] - out["q_frozen"]
    out["states"] = len(states)
    return out


def _score_grid(d: Path, spec: dict, states):
    """One grid's off-policy scores ``(frame, None)``, or ``(None, why it was skipped)``."""
    try:
        actor_path = resolve_checkpoint(spec["actor"], spec.get("base_dir", "."))
        prior_path = resolve_checkpoint(spec["prior"], spec.get("base_dir", "."), "prior")
    except SpecError as e:
        return None, f"{d.name}: skipped ({e})"
    actor = checkpoints.load(actor_path, env=spec["env"])
    if actor.critic is None:
        return None, f"{d.name}: skipped (the actor {actor_path.name} has no critic)"
    card = checkpoints.read_card(actor_path)
    path = Path(states) if states is not None else find_states(card.get("dataset"))
    if path is None:
        return None, f"{d.name}: skipped (no dataset states for {card.get('dataset')!r}; pass --states)"
    try:
        obs = load_states(path, actor.spec.obs_size)
    except ValueError as e:
        return None, f"{d.name}: skipped ({e})"
    prior = checkpoints.load(prior_path, env=spec["env"])
    values = nets.param_values(prior.spec.goal_params, bound_params(spec["goals"], spec["env"], spec.get("goal_params")))
    df = score(actor, prior, obs, spec["rules"], spec["goals"], spec["priors"], spec.get("degraded_noise", 0.5),
               goal_values=values)
    df.insert(0, "actor", actor_path.name)
    df.insert(0, "env", spec["env"])
    df.insert(0, "grid", d.name)
    df["states_file"] = path.name
    return df, None


def score_run(out: str | Path, states: str | Path | None = None) -> tuple[pd.DataFrame | None, list[str]]:
    """Off-policy scores for every grid of the run in ``out``; plus notes on grids that were skipped."""
    from poe_jax.envs.goals import GOALS

    frames, notes = [], []
    for d in store.grid_dirs(out):
        spec = store.read_spec(d)
        try:  # spec.json is data: names the registries do not know (a plugin not loaded) skip the grid
            unknown = ([f"rule {r!r}" for r in spec["rules"] if r not in compose.RULES]
                       + [f"goal {g!r}" for g in spec["goals"] if g not in GOALS]
                       + [f"prior quality {q!r}" for q in spec["priors"] if q not in priors.QUALITIES])
        except (KeyError, TypeError) as e:
            notes.append(f"{d.name}: skipped (its spec.json lacks {e})")
            continue
        if unknown:
            notes.append(f"{d.name}: skipped (unknown {', '.join(unknown)}: a plugin the report was not given; pass "
                         "--plugin)")
            continue
        try:  # spec.json's fields are data: one that cannot be scored skips its grid with a note
            df, note = _score_grid(d, spec, states)
        except (ValueError, TypeError, KeyError, AttributeError, checkpoints.CheckpointError) as e:
            df, note = None, f"{d.name}: skipped (its spec cannot be scored: {type(e).__name__}: {e})"
        if note:
            notes.append(note)
        if df is not None:
            frames.append(df)
    return (pd.concat(frames, ignore_index=True) if frames else None), notes
