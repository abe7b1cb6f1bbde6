"""The grid runner: rule × coefficient × goal × prior quality × shift × seed × episode.

A :class:`GridSpec` flattens into *lanes*, one episode each, in a fixed order
(cells in spec order, then seed, then episode). One compiled program evaluates a
chunk of lanes with ``vmap``: the rule, coefficient, goal, prior quality and
shift of each lane are data, not Python branches, so every chunk of every grid
for one (env, actor, prior, backend) runs the same executable. The lane axis of a
chunk is sharded over the local devices (``Mesh`` + ``NamedSharding``); with
``jax.distributed`` each process takes every ``process_count``-th chunk.

Results: ``DIR/episodes.parquet`` is a Parquet dataset (a directory; read it with
``pandas.read_parquet(DIR / "episodes.parquet")``) to which each finished chunk
adds one file, written to a temporary name and renamed, so a killed run loses at
most the chunks in flight. Running again on the same DIR resumes: lanes already
recorded are not recomputed, none is lost or duplicated. ``DIR/spec.json`` pins
the grid; another spec on the same DIR is refused unless ``force``.
``DIR/summary.json`` records the spec, package versions, backend, devices,
compile time, wall time and episodes/s.

Determinism. A lane's initial state comes from ``(seed, episode)`` only, so all
cells start from the same states (common random numbers, which makes paired
tests against ``frozen`` sharper); its action/prior noise comes from ``(seed,
cell, episode)`` where ``cell`` is a hash of the cell's content. Results therefore
do not depend on chunking, device count, process count, resumption or on which
other cells are in the grid.

Rules that ignore the goal prior (``frozen``, ``iql_guided``, ``critic_greedy``:
``Rule.uses_prior`` false) run once per (goal, shift, seed, episode), recorded with
``prior = "any"`` (:data:`PRIOR_BLIND`). :func:`read_episodes` serves those episodes
to every prior quality of the grid, so paired tests against ``frozen`` see the same
baseline episodes under every quality.

Inside the program, per lane and step (``o`` the observation):

0. shift of the model: the lane's body-mass and friction scales (``State.scales``);
1. shift: ``o += obs_noise * N(0, I)``;
2. ``actor.distribution(o)``, ``prior.distribution(o, goal, goal parameter)`` (priors
   that take a continuous goal parameter, e.g. G3's target speed, get the lane's), then
   the lane's prior quality (:mod:`poe_jax.priors`: trained, degraded, random = an
   untrained network per seed, uniform, adversarial);
3. the lane's rule; the executed action is the composed mean (``sample = true``:
   a sample), plus ``action_noise * N(0, I)``;
4. metrics: ``KL(composed || actor)``; bounds on ``TV(composed, actor)`` (upper:
   min of Pinsker, Bretagnolle-Huber and Hellinger; lower: squared Hellinger), whose
   episode mean is δπ; support violation: the actor's density at the executed
   action below ε ∈ {0.001, 0.01, 0.05}; prior fallbacks; for ``poe_adaptive`` the
   per-state α it used. The rollout also sums the γ = 0.99 discounted goal return,
   the largest |goal reward|, and the TV bounds weighted by ``(1 - γ) γ^t``: δπ,
   the expected TV under the episode's discounted state visitation (after
   termination both policies sit in the absorbing state, TV 0), which is what the
   performance-difference bound ``|ΔJ_γ| <= 2 R_max δπ / (1 - γ)^2`` uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import socket
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax import checkpoints, compose, critic_rules, gaussian, nets, priors

__all__ = ["PRIOR_QUALITIES", "GridSpec", "SpecError", "grid_dirs", "load_spec", "load_specs", "preset_names",
           "read_episodes", "resolve_checkpoint", "run", "run_many"]

PRIOR_QUALITIES = priors.QUALITIES  # the registry (poe_jax.priors); names in registration order
PRIOR_BLIND = priors.PRIOR_BLIND  # the ``prior`` recorded for rules that ignore the prior
LANE_LAYOUT = 2  # bumped when cells() changes the lane order; a DIR of another layout is refused
SUPPORT_EPS = (0.001, 0.01, 0.05)
GAMMA = 0.99  # discount of discounted_goal and delta_pi (performance-difference bounds)
_RESET_TAG = 0x5EED
_PRESETS = Path(__file__).parent / "presets"


class SpecError(ValueError):
    """A grid spec is invalid; the message names the field."""


# ---------------------------------------------------------------- spec
@dataclasses.dataclass(frozen=True)
class Shift:
    """A deployment shift: ``none``, or ``key=value`` terms joined by ``,``.

    ``obs_noise=S``: Gaussian noise of std S on every observation the policy sees;
    ``action_noise=S``: Gaussian noise of std S on every executed action;
    ``mass=K``: every body's mass and inertia × K; ``friction=K``: every geom's
    friction × K (``mass=1.0`` / ``friction=1.0`` are the nominal model, exactly).
    """

    name: str
    obs_noise: float = 0.0
    action_noise: float = 0.0
    mass: float = 1.0
    friction: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "Shift":
        text = text.strip()
        if text in ("none", ""):
            return cls("none")
        vals = {"obs_noise": 0.0, "action_noise": 0.0, "mass": 1.0, "friction": 1.0}
        for part in text.split(","):
            key, _, value = part.partition("=")
            key = key.strip()
            if key not in vals or not value:
                raise SpecError(f"shifts: cannot parse {text!r}; use 'none', 'obs_noise=S', 'action_noise=S', "
                                "'mass=K', 'friction=K' (joined by ',')")
            try:
                v = float(value)
            except ValueError:
                raise SpecError(f"shifts: {key} in {text!r} is not a number") from None
            positive = key in ("mass", "friction")
            if not ((v > 0 if positive else v >= 0) and math.isfinite(v)):
                raise SpecError(f"shifts: {key} must be finite and {'> 0' if positive else '>= 0'}; got {v} in {text!r}")
            vals[key] = v
        return cls(text, **vals)


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """A grid to evaluate. Construct in Python or load from TOML (:func:`load_spec`).

    Attributes:
        env: environment name.
        actor, prior: checkpoint paths, or ``zoo:NAME`` for a shipped checkpoint.
        rules: ``{rule: [coefficients]}``; ``frozen``/``prior_only`` take ``[]``.
        goals: deployment goals. goal_params: ``{goal: {param: value}}`` overrides.
        priors: prior qualities, from :data:`PRIOR_QUALITIES`.
        shifts: shift conditions (:class:`Shift` syntax).
        seeds: seeds. episodes: episodes per seed and cell.
        max_steps: horizon. backend: ``auto``, ``native`` or ``mjx``.
        degraded_noise: noise scale (× max_action) of the ``degraded`` prior.
        sample: execute a sample of the composed policy instead of its mean.
        chunk_size: lanes per compiled call (memory/batch budget; results do not depend on it).
        name: label.
    """

    env: str
    actor: str
    prior: str
    rules: dict[str, list[float]]
    goals: tuple[str, ...] = ("G1_speed",)
    priors: tuple[str, ...] = ("trained",)
    shifts: tuple[str, ...] = ("none",)
    seeds: tuple[int, ...] = (0,)
    episodes: int = 1
    max_steps: int = 1000
    backend: str = "auto"
    degraded_noise: float = 0.5
    sample: bool = False
    chunk_size: int = 1024
    goal_params: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    env_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str = ""
    base_dir: str = "."  # where relative checkpoint paths are resolved (the TOML's folder)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("goals", "priors", "shifts", "seeds"):
            d[k] = list(d[k])
        d["rules"] = {k: [float(x) for x in v] for k, v in self.rules.items()}
        return d

    def identity(self) -> dict:
        """What determines the results (chunking and paths' spelling do not)."""
        d = self.to_dict()
        for k in ("chunk_size", "name", "base_dir", "actor", "prior"):
            d.pop(k)
        return d

    def replace(self, **kw) -> "GridSpec":
        return dataclasses.replace(self, **kw)


def _as_tuple(name: str, value, kind=str) -> tuple:
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{name}: expected a list; got {value!r}")
    if kind is int:  # no silent truncation (1.9 -> 1) or booleans as numbers
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise SpecError(f"{name}: expected a list of integers; got {bad[0]!r}")
        return tuple(value)
    try:
        return tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise SpecError(f"{name}: expected a list of {kind.__name__}; got {value!r}") from None


# Scalar fields of GridSpec and what each must be (checked by validate, before anything is written).
_SCALARS = {"env": str, "actor": str, "prior": str, "episodes": int, "max_steps": int, "chunk_size": int,
            "backend": str, "degraded_noise": float, "sample": bool, "name": str}
_KIND_TEXT = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _check_scalars(spec: "GridSpec") -> None:
    for name, kind in _SCALARS.items():
        v = getattr(spec, name)
        ok = (isinstance(v, bool) if kind is bool else
              not isinstance(v, bool) and isinstance(v, (int, float) if kind is float else kind))
        if not ok:
            raise SpecError(f"{name}: expected {_KIND_TEXT[kind]}; got {v!r}")
    bad = [s for s in spec.seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**32]
    if bad:
        raise SpecError(f"seeds: each must be an integer in [0, 2**32); got {bad[0]!r}")


def _read_source(source: str | os.PathLike | dict) -> tuple[dict, str]:
    """The raw table of a TOML file, a preset (``preset:NAME``) or a dict, and its folder."""
    if isinstance(source, dict):
        return dict(source), "."
    text = str(source)
    if text.startswith("preset:"):
        name = text.split(":", 1)[1]
        path = _PRESETS / f"{name}.toml"
        if not path.is_file():
            raise SpecError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    else:
        path = Path(text)
        if not path.is_file():
            raise SpecError(f"{path}: no such config file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: invalid TOML ({e})") from None
    data.setdefault("name", path.stem)
    return data, str(path.parent.absolute())


def _from_dict(data: dict, base: str, overrides: dict) -> GridSpec:
    data = dict(data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    data.setdefault("base_dir", base)
    fields = {f.name for f in dataclasses.fields(GridSpec)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise SpecError(f"unknown spec field(s) {unknown}; fields: {', '.join(sorted(fields - {'base_dir'}))}")
    for required in ("env", "actor", "prior", "rules"):
        if required not in data:
            raise SpecError(f"spec field {required!r} is required")
    if not isinstance(data["rules"], dict):
        raise SpecError(f"rules: expected a table {{rule = [coefficients]}}; got {data['rules']!r}")
    data["rules"] = {str(k): list(_as_tuple(f"rules.{k}", v, float)) for k, v in data["rules"].items()}
    for k, kind in (("goals", str), ("priors", str), ("shifts", str), ("seeds", int)):
        if k in data:
            data[k] = _as_tuple(k, data[k], kind)
    return GridSpec(**data)


def load_spec(source: str | os.PathLike | dict, **overrides) -> GridSpec:
    """A :class:`GridSpec` from a TOML file, a preset name (``preset:NAME``) or a dict.

    A multi-grid source (with ``[[grids]]``) is refused here; use :func:`load_specs`.
    """
    data, base = _read_source(source)
    if "grids" in data:
        raise SpecError(f"{data.get('name', 'spec')}: has [[grids]] (several grids); load it with load_specs()")
    return _from_dict(data, base, overrides)


def load_specs(source: str | os.PathLike | dict, **overrides) -> list[GridSpec]:
    """One or several :class:`GridSpec` from a source (see :func:`load_spec`).

    A source with ``[[grids]]`` tables is several grids: each table (at least
    ``env``, ``actor``, ``prior``) is merged over the top-level fields, which hold
    what the grids share. A grid's ``name`` defaults to the actor's checkpoint
    name, prefixed with ``ENV-`` unless it starts with it; it names the grid's
    folder in the run directory.
    """
    data, base = _read_source(source)
    if "grids" not in data:
        return [_from_dict(data, base, overrides)]
    entries = data.pop("grids")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise SpecError("grids: expected one or more [[grids]] tables (each with env, actor, prior)")
    if any(overrides.get(k) is not None for k in ("actor", "prior")):
        raise SpecError("--actor/--prior override a single grid; this spec has several [[grids]]")
    data.pop("name", None)
    specs = []
    for i, entry in enumerate(entries):
        merged = {**data, **entry}
        if "env" not in merged or "actor" not in merged:
            raise SpecError(f"grids[{i}]: needs env and actor (and prior)")
        actor_name = str(merged["actor"]).removeprefix("zoo:").rstrip("/").split("/")[-1]
        default = actor_name if actor_name.startswith(str(merged["env"])) else f"{merged['env']}-{actor_name}"
        merged["name"] = str(entry.get("name", default))
        if not merged["name"] or not all(c.isalnum() or c in "-_." for c in merged["name"]):
            raise SpecError(f"grids[{i}].name: {merged['name']!r} must be a folder name (letters, digits, - _ .)")
        try:
            specs.append(_from_dict(merged, base, overrides))
        except SpecError as e:
            raise SpecError(f"grids[{i}] ({merged['name']}): {e}") from None
    names = [sp.name for sp in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"grids: duplicate grid names {dup}; give each [[grids]] table a distinct name")
    return specs


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in _PRESETS.glob("*.toml")))


zoo_dirs = checkpoints.zoo_dirs


def resolve_checkpoint(ref: str, base_dir: str = ".", field: str = "actor") -> Path:
    """``zoo:NAME`` -> a shipped checkpoint; a relative path -> relative to ``base_dir``."""
    if ref.startswith("zoo:"):
        try:
            return checkpoints.zoo_path(ref)
        except checkpoints.CheckpointError as e:
            raise SpecError(f"{field}: {e}") from None
    path = Path(ref)
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not (path / "card.json").is_file():
        raise SpecError(f"{field}: no checkpoint at {path} (a directory with card.json)")
    return path


# ---------------------------------------------------------------- validation and lanes
class Cell(NamedTuple):
    rule: str
    param: float
    goal: str
    prior: str
    shift: str

    def key(self) -> int:
        text = f"{self.rule}|{self.param!r}|{self.goal}|{self.prior}|{self.shift}"
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little") & 0x7FFFFFFF


def validate(spec: GridSpec) -> dict:
    """Check every field before anything is compiled; returns resolved pieces."""
    from poe_jax import envs
    from poe_jax.envs.goals import make_goal
    from poe_jax.physics.base import BACKENDS

    _check_scalars(spec)
    if spec.env not in envs.names():
        raise SpecError(f"env: unknown env {spec.env!r}; known envs: {', '.join(envs.names())}")
    allowed_options = {"terminate_when_unhealthy", "max_steps"}
    bad_options = sorted(set(spec.env_options) - allowed_options)
    if bad_options:
        raise SpecError(f"env_options: unknown option(s) {bad_options}; known: {', '.join(sorted(allowed_options))}")
    if spec.backend not in BACKENDS:
        raise SpecError(f"backend: unknown backend {spec.backend!r}; known: {', '.join(BACKENDS)}")
    if not spec.rules:
        raise SpecError("rules: empty; give at least one rule, e.g. rules = {frozen = [], poe = [0.5]}")
    for rule, params in spec.rules.items():
        try:
            r = critic_rules.get_rule(rule)
        except KeyError as e:
            raise SpecError(f"rules: {e.args[0]}") from None
        if r.param is None and params:
            raise SpecError(f"rules.{rule}: takes no coefficient; use {rule} = []")
        if r.param is not None:
            if not params:
                raise SpecError(f"rules.{rule}: empty coefficient grid; give its {r.param} values")
            try:
                r.validate(params)
            except ValueError as e:
                raise SpecError(f"rules.{rule}: {e}") from None
    for name, values in (("goals", spec.goals), ("priors", spec.priors), ("shifts", spec.shifts), ("seeds", spec.seeds)):
        if not values:
            raise SpecError(f"{name}: empty")
        if len(set(values)) != len(values):
            raise SpecError(f"{name}: duplicate entries in {list(values)}")
    goals = []
    for g in spec.goals:
        try:
            goals.append(make_goal(g, spec.env, **spec.goal_params.get(g, {})))
        except (KeyError, ValueError) as e:
            raise SpecError(f"goals: {e.args[0]}") from None
    unknown_gp = sorted(set(spec.goal_params) - set(spec.goals))
    if unknown_gp:
        raise SpecError(f"goal_params: goals {unknown_gp} are not in goals {list(spec.goals)}")
    for q in spec.priors:
        if q not in priors.QUALITIES:
            raise SpecError(f"priors: unknown prior quality {q!r}; known: {', '.join(priors.names())}")
    shifts = [Shift.parse(s) for s in spec.shifts]
    if spec.episodes < 1:
        raise SpecError(f"episodes: must be >= 1; got {spec.episodes}")
    if spec.max_steps < 1:
        raise SpecError(f"max_steps: must be >= 1; got {spec.max_steps}")
    if spec.chunk_size < 1:
        raise SpecError(f"chunk_size: must be >= 1; got {spec.chunk_size}")
    if not (spec.degraded_noise >= 0 and math.isfinite(spec.degraded_noise)):
        raise SpecError(f"degraded_noise: must be finite and >= 0; got {spec.degraded_noise}")
    actor_path = resolve_checkpoint(spec.actor, spec.base_dir, "actor")
    prior_path = resolve_checkpoint(spec.prior, spec.base_dir, "prior")
    try:
        actor_card, prior_card = checkpoints.read_card(actor_path), checkpoints.read_card(prior_path)
        if actor_card["kind"] != "actor":
            raise SpecError(f"actor: {actor_path} is a {actor_card['kind']} checkpoint, not an actor")
        if prior_card["kind"] != "prior":
            raise SpecError(f"prior: {prior_path} is a {prior_card['kind']} checkpoint, not a goal prior")
        checkpoints.check_env(actor_card, spec.env, actor_path)
        checkpoints.check_env(prior_card, spec.env, prior_path)
    except checkpoints.CheckpointError as e:
        raise SpecError(str(e)) from None
    needs_critic = sorted(r for r in spec.rules if critic_rules.is_critic_rule(r))
    if needs_critic and not actor_card.get("critic"):
        raise SpecError(f"rules: {needs_critic} need the actor's critic, and {actor_path} has none "
                        "(IQL actors from poe-jax train iql or port corl --algo iql carry theirs)")
    missing = [g for g in spec.goals if g not in prior_card["architecture"]["goals"]]
    if missing:
        raise SpecError(f"goals: the prior {prior_path} was not trained on {missing}; it knows {prior_card['architecture']['goals']}")
    return {"goals": goals, "shifts": shifts, "actor_path": actor_path, "prior_path": prior_path,
            "actor_card": actor_card, "prior_card": prior_card}


def cells(spec: GridSpec) -> list[Cell]:
    """The grid's cells in lane order: rule, coefficient, goal, prior quality, shift. A rule
    that ignores the prior gets one cell per (coefficient, goal, shift), with prior
    :data:`PRIOR_BLIND`."""
    out = []
    for rule, params in spec.rules.items():
        r = critic_rules.get_rule(rule)
        grid = params if r.param is not None else [1.0 if rule == "prior_only" else 0.0]
        for p in grid:
            for g in spec.goals:
                for q in (spec.priors if r.uses_prior else (PRIOR_BLIND,)):
                    for s in spec.shifts:
                        out.append(Cell(rule, float(p), g, q, s))
    return out


def lane_table(spec: GridSpec, prior_goals: Sequence[str], prior_params: Sequence = ()) -> dict[str, np.ndarray]:
    """Per-lane arrays, in lane order (cell-major, then seed, then episode).

    ``prior_params``: the prior's continuous goal parameters (:attr:`PriorSpec.goal_params`);
    each lane whose goal has one gets the goal's bound value as ``prior_param``."""
    from poe_jax.envs.goals import bound_params

    cs = cells(spec)
    bound = bound_params(spec.goals, spec.env, spec.goal_params)
    pvalue = nets.param_values(prior_params, bound)
    shifts = {s: Shift.parse(s) for s in spec.shifts}
    n_rep = len(spec.seeds) * spec.episodes
    cell_idx = np.repeat(np.arange(len(cs)), n_rep)
    seed = np.tile(np.repeat(np.asarray(spec.seeds, np.int64), spec.episodes), len(cs))
    episode = np.tile(np.arange(spec.episodes), len(cs) * len(spec.seeds))
    per_cell = {
        "rule_idx": [critic_rules.ALL_RULE_NAMES.index(c.rule) for c in cs],
        "param": [c.param for c in cs],
        "goal_idx": [spec.goals.index(c.goal) for c in cs],
        "prior_goal": [list(prior_goals).index(c.goal) for c in cs],
        "prior_param": [pvalue.get(c.goal, 0.0) for c in cs],
        "quality": [spec.priors.index(c.prior) if c.prior in spec.priors else 0 for c in cs],
        "obs_noise": [shifts[c.shift].obs_noise for c in cs],
        "act_noise": [shifts[c.shift].action_noise for c in cs],
        "mass_scale": [shifts[c.shift].mass for c in cs],
        "friction_scale": [shifts[c.shift].friction for c in cs],
        "cell_key": [c.key() for c in cs],
    }
    dtypes = {"param": np.float32, "prior_param": np.float32, "obs_noise": np.float32, "act_noise": np.float32, "mass_scale": np.float32,
              "friction_scale": np.float32}
    table = {k: np.asarray(v, dtypes.get(k, np.int32))[cell_idx] for k, v in per_cell.items()}
    table.update(cell=cell_idx.astype(np.int32), seed=seed.astype(np.uint32), episode=episode.astype(np.int32),
                 lane=np.arange(cell_idx.size, dtype=np.int64))
    return table


# ---------------------------------------------------------------- the program
_PROGRAM_KEYS = ("rule_idx", "param", "goal_idx", "prior_goal", "prior_param", "quality", "obs_noise", "act_noise", "mass_scale",
                 "friction_scale", "cell_key", "seed", "episode")


def build_program(env, goals, max_steps: int, degraded_noise: float, sample: bool,
                  obs_noise: bool = True, act_noise: bool = True, qualities: tuple[str, ...] = ("trained",),
                  adaptive: bool = True, critic: bool = False):
    """``program(actor, prior, lanes) -> per-lane totals`` (jittable; lanes is a dict of ``[n]`` arrays).

    ``obs_noise``, ``act_noise`` are static switches: when no lane of the grid uses
    that kind of noise, its random draws are left out of the program (the results are
    the same; the program is cheaper). ``qualities``: the grid's prior qualities, which
    ``lanes["quality"]`` indexes; the untrained networks of ``random`` are built (one per
    lane, from its seed) only when a quality needs them.
    """
    from poe_jax import rollout as ro

    m = float(np.asarray(env.action_high)[0])
    eps_logs = [math.log(e) for e in SUPPORT_EPS]

    untrained = any(priors.get(q).needs_untrained for q in qualities)

    def program(actor, prior, lanes):
        if untrained:  # one untrained prior network per lane, from the lane's seed only
            lanes = {**lanes, "untrained": jax.vmap(
                lambda s: nets.init_prior(prior.spec, priors.random_prior_key(s)).params)(lanes["seed"])}

        def policy(obs, key, lane):
            k_obs, k_prior, k_act, k_sample = jax.random.split(key, 4)
            o = obs + lane["obs_noise"] * jax.random.normal(k_obs, obs.shape) if obs_noise else obs
            a = actor.distribution(o)
            g = prior.distribution(o, lane["prior_goal"], lane["prior_param"])
            if qualities != ("trained",):
                u = prior.replace(params=lane["untrained"]).distribution(o, lane["prior_goal"], lane["prior_param"]) \
                    if untrained else g
                g = priors.apply(lane["quality"], qualities, priors.QualityInputs(g, u, k_prior, m, degraded_noise))
            if critic:
                q_fn = lambda act: actor.critic.q(o, act)  # noqa: E731
                c = critic_rules.by_index(lane["rule_idx"], a, g, lane["param"], q_fn, -m, m,
                                          jax.random.fold_in(key, 11))
            else:
                c = compose.by_index(lane["rule_idx"], a, g, lane["param"])
            action = c.sample(k_sample) if sample else c.mean
            if act_noise:
                action = action + lane["act_noise"] * jax.random.normal(k_act, action.shape)
            logp = a.log_prob(action)
            metrics = {"kl": gaussian.kl(c, a), "tv_upper": gaussian.tv_upper_bound(c, a),
                       "tv_lower": gaussian.tv_lower_bound(c, a),
                       "fallback": (~compose.prior_valid(g)).astype(jnp.float32)}
            if adaptive:
                metrics["alpha"] = compose.adaptive_alpha(a, g, jnp.maximum(lane["param"], 0.0))
            for eps, le in zip(SUPPORT_EPS, eps_logs):
                metrics[f"sv_{eps}"] = (logp < le).astype(jnp.float32)
            return action, metrics

        def goal(state, action, nxt, lane):
            return jax.lax.switch(lane["goal_idx"], [lambda s, a, n, g=g: g(s, a, n) for g in goals], state, action, nxt)

        base = jax.vmap(jax.random.key)(lanes["seed"])
        reset_keys = jax.vmap(lambda k, e: jax.random.fold_in(jax.random.fold_in(k, _RESET_TAG), e))(base, lanes["episode"])
        step_keys = jax.vmap(lambda k, c, e: jax.random.fold_in(jax.random.fold_in(k, c), e))(
            base, lanes["cell_key"], lanes["episode"])
        init = jax.vmap(env.reset)(reset_keys)
        init = init.replace(scales=jnp.stack([lanes["mass_scale"], lanes["friction_scale"]], axis=-1))
        ep = ro.rollout(env, policy, step_keys, max_steps=max_steps, goal=goal, init=init, lane=lanes, gamma=GAMMA)
        return {"return_task": ep.return_task, "return_goal": ep.return_goal, "length": ep.length,
                "sum_x_velocity": ep.sum_x_velocity,
                "terminated": ep.terminated, "discounted_goal": ep.discounted_goal, "max_abs_goal": ep.max_abs_goal,
                "dsum_tv_upper": ep.discounted_metrics["tv_upper"], "dsum_tv_lower": ep.discounted_metrics["tv_lower"],
                **{f"sum_{k}": v for k, v in ep.metrics.items()}}

    return program


def alpha_equiv(rule: str, param: float) -> float:
    """:func:`poe_jax.compose.alpha_equiv`; ``critic_prior``'s alpha, NaN for the other critic rules."""
    if critic_rules.is_critic_rule(rule):
        return float(param) if rule == "critic_prior" else math.nan
    return float(compose.alpha_equiv(rule, param))


# ---------------------------------------------------------------- storage
def _episodes_dir(out: Path) -> Path:
    return out / "episodes.parquet"


def done_lanes(out: Path) -> np.ndarray:
    """Lane indices already recorded in ``out`` (sorted)."""
    import pyarrow.parquet as pq

    d = _episodes_dir(out)
    if not d.is_dir():
        return np.zeros(0, np.int64)
    parts = [np.asarray(pq.read_table(p, columns=["lane"]).column("lane")) for p in sorted(d.glob("part-*.parquet"))]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _write_part(out: Path, df) -> Path:
    d = _episodes_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    lanes = df["lane"].to_numpy()
    final = d / f"part-{lanes.min():09d}-{lanes.max():09d}-{len(lanes)}.parquet"
    tmp = d / f".tmp-{os.getpid()}-{final.name}"
    df.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("poe_jax", "jax", "jaxlib", "flax", "numpy", "mujoco", "mujoco-mjx", "orbax-checkpoint", "pyarrow", "pandas"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------- run
class RunResult(NamedTuple):
    out: Path
    computed: int  # episodes computed by this call (this process)
    skipped: int  # episodes found already recorded
    summary: dict


def _records(spec: GridSpec, table: dict, idx: np.ndarray, res: dict, env, backend: str, actor_name: str):
    import pandas as pd

    from poe_jax.envs.goals import bound_params

    cs = cells(spec)
    target = {g: p.get("target_speed", np.nan) for g, p in bound_params(spec.goals, spec.env, spec.goal_params).items()}
    per_cell = {  # cell fields once per cell, then indexed per lane
        "rule": np.asarray([c.rule for c in cs], object),
        "target_speed": np.asarray([target[c.goal] for c in cs], np.float64),
        "alpha_equiv": np.asarray([alpha_equiv(c.rule, c.param) for c in cs]),
        "goal": np.asarray([c.goal for c in cs], object),
        "prior": np.asarray([c.prior for c in cs], object),
        "shift": np.asarray([c.shift for c in cs], object),
    }
    length = np.asarray(res["length"])
    safe_len = np.maximum(length, 1)
    cell_ids = table["cell"][idx]
    rec = {
        "env": spec.env,
        "actor": actor_name,
        "rule": per_cell["rule"][cell_ids],
        "param": table["param"][idx].astype(np.float64),
        "alpha_equiv": per_cell["alpha_equiv"][cell_ids],
        "goal": per_cell["goal"][cell_ids],
        "prior": per_cell["prior"][cell_ids],
        "shift": per_cell["shift"][cell_ids],
        "seed": table["seed"][idx].astype(np.int64),
        "episode": table["episode"][idx].astype(np.int64),
        "return_task": np.asarray(res["return_task"], np.float64),
        "return_goal": np.asarray(res["return_goal"], np.float64),
        "normalized_score": env.spec.normalized_score(np.asarray(res["return_task"], np.float64)),
        "length": length.astype(np.int64),
        "x_velocity": np.asarray(res["sum_x_velocity"], np.float64) / safe_len,
        "target_speed": per_cell["target_speed"][cell_ids],  # the goal's target (G3), NaN for goals without one
        "terminated": np.asarray(res["terminated"], bool),
        "kl_to_frozen": np.asarray(res["sum_kl"], np.float64) / safe_len,
        "tv_upper": np.asarray(res["sum_tv_upper"], np.float64) / safe_len,
        "tv_lower": np.asarray(res["sum_tv_lower"], np.float64) / safe_len,
        "discounted_goal": np.asarray(res["discounted_goal"], np.float64),
        "delta_pi_upper": (1 - GAMMA) * np.asarray(res["dsum_tv_upper"], np.float64),
        "delta_pi_lower": (1 - GAMMA) * np.asarray(res["dsum_tv_lower"], np.float64),
        "max_abs_goal_reward": np.asarray(res["max_abs_goal"], np.float64),
        "alpha_used": np.where(per_cell["rule"][cell_ids] == "poe_adaptive",
                               np.asarray(res.get("sum_alpha", np.full(len(idx), np.nan)), np.float64) / safe_len,
                               per_cell["alpha_equiv"][cell_ids]),
        "support_violation": np.asarray(res["sum_sv_0.01"], np.float64) / safe_len,
        **{f"support_violation_{e}": np.asarray(res[f"sum_sv_{e}"], np.float64) / safe_len for e in SUPPORT_EPS},
        "fallback_rate": np.asarray(res["sum_fallback"], np.float64) / safe_len,
        # AntMaze: reaching the goal is its termination; locomotion envs have no success notion.
        "success": (pd.array(np.asarray(res["terminated"], bool), dtype="boolean") if spec.env.startswith("antmaze")
                    else pd.array([pd.NA] * len(idx), dtype="boolean")),
        "backend": backend,
        "cell": cell_ids.astype(np.int64),
        "lane": table["lane"][idx],
    }
    return pd.DataFrame(rec)


def _progress(total: int, initial: int):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit="ep", desc="episodes", smoothing=0.1, dynamic_ncols=True)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None


@contextlib.contextmanager
def _exclusive(out: Path):
    """An exclusive lock on the run folder (one per process index) for as long as a run writes there."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / f".lock-{jax.process_index()}", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError(f"{out}: another poe-jax run is writing here; wait for it to finish or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run(spec: GridSpec, out: str | os.PathLike, force: bool = False, progress: bool = True,
        backend: str | None = None, chunk_size: int | None = None) -> RunResult:
    """Evaluate ``spec`` into ``out`` (see the module docstring). Resumable. While it runs it holds
    an exclusive lock on ``out``: a second run into the same folder is refused at once."""
    if backend is not None:
        spec = spec.replace(backend=backend)
    if chunk_size is not None:
        spec = spec.replace(chunk_size=int(chunk_size))
    resolved = validate(spec)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"out: {out} is a file; give a folder for the run")
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        return _run(spec, out, resolved, force, progress)


def _run(spec: GridSpec, out: Path, resolved: dict, force: bool, progress: bool) -> RunResult:
    from poe_jax import envs
    from poe_jax.physics import resolve_backend

    backend_name = resolve_backend(spec.backend)
    identity = {**spec.identity(), "lanes": LANE_LAYOUT, "backend": backend_name, "actor_sha256": resolved["actor_card"]["sha256"],
                "prior_sha256": resolved["prior_card"]["sha256"]}
    pid, nproc = jax.process_index(), jax.process_count()
    spec_path = out / "spec.json"
    if spec_path.exists():
        try:
            old = json.loads(spec_path.read_text())
        except json.JSONDecodeError:
            old = None
        if old is None or old.get("identity") != identity:
            if not force:
                raise SpecError(f"{out}: holds results of a different spec (see {spec_path}); use another --out, "
                                "or --force to discard them")
            if pid == 0:
                shutil.rmtree(_episodes_dir(out), ignore_errors=True)
                spec_path.unlink()
                (out / "summary.json").unlink(missing_ok=True)
        if pid == 0:
            for tmp in _episodes_dir(out).glob(".tmp-*"):  # parts a killed run left half-written
                tmp.unlink(missing_ok=True)
    _barrier("poe_jax_grid_spec")
    out.mkdir(parents=True, exist_ok=True)
    if pid == 0 and not spec_path.exists():
        _write_json(spec_path, {"identity": identity, "spec": spec.to_dict()})

    env = envs.make(spec.env, backend=backend_name, **spec.env_options)
    uses_critic = any(critic_rules.is_critic_rule(r) for r in spec.rules)
    actor = checkpoints.load(resolved["actor_path"], env=spec.env)
    if not uses_critic:
        actor = actor.replace(critic=None)
    prior = checkpoints.load(resolved["prior_path"], env=spec.env)
    table = lane_table(spec, prior.spec.goals, prior.spec.goal_params)
    n_lanes = table["lane"].size
    done = np.zeros(n_lanes, bool)
    done[done_lanes(out)] = True
    skipped = int(done.sum())

    devices = jax.local_devices()
    n_dev = len(devices)
    chunk = max(n_dev, -(-min(spec.chunk_size, n_lanes) // n_dev) * n_dev)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("lanes",))
    lane_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("lanes"))
    shifts = resolved["shifts"]
    program = jax.jit(build_program(
        env, resolved["goals"], spec.max_steps, spec.degraded_noise, spec.sample,
        obs_noise=any(s.obs_noise > 0 for s in shifts), act_noise=any(s.action_noise > 0 for s in shifts),
        qualities=tuple(spec.priors), adaptive="poe_adaptive" in spec.rules,
        critic=uses_critic))

    chunks = [np.arange(lo, min(lo + chunk, n_lanes)) for lo in range(0, n_lanes, chunk)]
    mine = [c[~done[c]] for i, c in enumerate(chunks) if i % nproc == pid]
    mine = [c for c in mine if c.size]
    bar = _progress(n_lanes, skipped) if (progress and pid == 0) else None
    t_start = time.perf_counter()
    compiled, compile_s, computed = None, 0.0, 0
    actor_name = Path(resolved["actor_path"]).name
    for idx in mine:
        padded = np.concatenate([idx, np.full(chunk - idx.size, idx[-1])])
        lanes = {k: jax.device_put(table[k][padded], lane_sharding) for k in _PROGRAM_KEYS}
        if compiled is None:
            t0 = time.perf_counter()
            compiled = program.lower(actor, prior, lanes).compile()
            compile_s = time.perf_counter() - t0
        res = jax.device_get(compiled(actor, prior, lanes))
        res = {k: np.asarray(v)[: idx.size] for k, v in res.items()}
        _write_part(out, _records(spec, table, idx, res, env, backend_name, actor_name))
        computed += idx.size
        if bar is not None:
            bar.update(idx.size)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t_start
    _barrier("poe_jax_grid_done")
    summary = {
        "spec": spec.to_dict(),
        "identity": identity,
        "versions": versions(),
        "backend": backend_name,
        "devices": [str(d) for d in jax.devices()],
        "processes": nproc,
        "host": socket.gethostname(),
        "lanes": n_lanes,
        "episodes_recorded": int(done_lanes(out).size),
        "episodes_computed_this_run": computed,
        "episodes_skipped_as_done": skipped,
        "compile_s": round(compile_s, 3),
        "wall_s": round(wall, 3),
        "episodes_per_s": round(computed / max(wall - compile_s, 1e-9), 3) if computed else None,
        "env_steps_per_s": None,
        "chunk_size": chunk,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if pid == 0:
        import pandas as pd

        df = pd.read_parquet(_episodes_dir(out))
        steps = int(df.loc[df["lane"].isin(np.concatenate(mine) if mine else []), "length"].sum())
        if computed:
            summary["env_steps_per_s"] = round(steps / max(wall - compile_s, 1e-9), 1)
        _write_json(out / "summary.json", summary)
    return RunResult(out, computed, skipped, summary)


def run_many(specs: Sequence[GridSpec], out: str | os.PathLike, name: str = "", force: bool = False,
             progress: bool = True, backend: str | None = None, chunk_size: int | None = None) -> list[RunResult]:
    """Run several grids (e.g. one per env, from :func:`load_specs`) into ``out/<grid name>/``.

    Every grid is validated before the first one runs. ``out/grids.json`` lists the
    grids (another list on the same ``out`` is refused unless ``force``), and
    ``out/summary.json`` holds each grid's summary and the total wall time.
    :func:`read_episodes` on ``out`` reads them all. Resumable like :func:`run`.
    """
    out = Path(out)
    specs = list(specs)
    if backend is not None:
        specs = [sp.replace(backend=backend) for sp in specs]
    for sp in specs:
        validate(sp)
    index = {"name": name or out.name, "grids": [sp.name for sp in specs]}
    index_path = out / "grids.json"
    if index_path.exists() and json.loads(index_path.read_text()) != index and not force:
        raise SpecError(f"{out}: holds a run of other grids (see {index_path}); use another --out, or --force")
    if (out / "episodes.parquet").exists():
        raise SpecError(f"{out}: holds a single-grid run; use another --out for several grids")
    out.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        _write_json(index_path, index)
    t0 = time.perf_counter()
    results = [run(sp, out / sp.name, force=force, progress=progress, chunk_size=chunk_size) for sp in specs]
    if jax.process_index() == 0:
        subs = {r.out.name: r.summary for r in results}
        first = results[0].summary
        _write_json(out / "summary.json", {
            "spec": {"name": index["name"], "grids": {k: v["spec"] for k, v in subs.items()}},
            "versions": first["versions"], "backend": first["backend"], "devices": first["devices"],
            "host": first["host"], "wall_s": round(time.perf_counter() - t0, 3),
            "episodes_recorded": sum(v["episodes_recorded"] for v in subs.values()),
            "grids": subs,
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })
    return results


def grid_dirs(out: str | os.PathLike) -> list[Path]:
    """The run folders under ``out``: ``[out]`` for one grid, ``out/<name>`` for each of several."""
    out = Path(out)
    index = out / "grids.json"
    if index.is_file():
        return [out / n for n in json.loads(index.read_text())["grids"]]
    return [out]


def _barrier(name: str) -> None:
    """Wait for every process (no-op with one); uses the coordination service, not device collectives."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    distributed.global_state.client.wait_at_barrier(name, 600_000)


def read_episodes(out: str | os.PathLike, serve_prior_blind: bool = True):
    """The recorded episodes of a run (one grid or several), sorted by grid then lane (a pandas DataFrame),
    with a ``grid`` column: the grid's folder name.

    ``serve_prior_blind``: the episodes of rules that ignore the prior (recorded once, with
    ``prior = "any"``) appear once per prior quality of their grid, so every quality has its
    ``frozen`` baseline; ``False`` gives the store as recorded (one row per lane)."""
    import pandas as pd

    frames, served = [], False
    for d in grid_dirs(out):
        if not _episodes_dir(d).is_dir():
            raise FileNotFoundError(f"{d}: no recorded episodes (episodes.parquet); run the grid first")
        df = pd.read_parquet(_episodes_dir(d)).sort_values("lane", kind="stable")
        df = df.drop(columns="grid", errors="ignore")
        df.insert(0, "grid", d.name)  # grids of one run may share env and actor (other prior, goal parameters)
        blind = df["prior"].eq(PRIOR_BLIND)
        served |= bool(blind.any())
        if serve_prior_blind and blind.any():
            qualities = json.loads((d / "spec.json").read_text())["spec"]["priors"]
            df = pd.concat([df[~blind], *(df[blind].assign(prior=q) for q in qualities)]).sort_values(
                "lane", kind="stable")
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs["prior_blind_recorded"] = served  # some rule ran once for every prior quality
    return out


def summary_table(df) -> str:
    """One screen: mean ± s.e. goal return and normalised score per (goal, prior, shift, rule, param)."""
    if df["env"].nunique() > 1 or df["actor"].nunique() > 1:
        return "\n\n".join(f"== {env} / {actor}\n" + summary_table(sub)
                            for (env, actor), sub in df.groupby(["env", "actor"], sort=False))
    g = df.groupby(["goal", "prior", "shift", "rule", "param"], sort=False)
    agg = g.agg(n=("return_goal", "size"), goal_mean=("return_goal", "mean"), goal_se=("return_goal", "sem"),
                score=("normalized_score", "mean"), kl=("kl_to_frozen", "mean"), sv=("support_violation", "mean"))
    lines = [f"{'goal':12s} {'prior':8s} {'shift':10s} {'rule':11s} {'param':>6s} {'n':>4s} "
             f"{'goal return':>18s} {'score':>7s} {'KL':>8s} {'viol':>5s}"]
    for (goal, prior, shift, rule, param), r in agg.iterrows():
        se = 0.0 if not np.isfinite(r.goal_se) else r.goal_se
        lines.append(f"{goal:12s} {prior:8s} {shift[:10]:10s} {rule:11s} {param:6.3g} {int(r.n):4d} "
                     f"{r.goal_mean:10.1f} ± {se:6.1f} {r.score:7.1f} {r.kl:8.3g} {r.sv:5.2f}")
    return "\n".join(lines)
