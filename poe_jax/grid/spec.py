"""Grid specs: parse and check every field, before any env, checkpoint or file is touched.

A :class:`GridSpec` is the whole question a grid asks (rules × coefficients × goals ×
prior qualities × shifts × seeds × episodes, on one env, actor and prior). It comes from
Python, a TOML file or a shipped preset (:func:`load_spec`, :func:`load_specs`).
:func:`check` validates it against the registries (rules, goals, prior qualities, envs,
backends) and the fields' types and ranges; :mod:`poe_jax.grid.plan` then resolves the
checkpoints. ``plugins`` (a TOML list, or ``poe-jax run --plugin``) are imported first,
so names a user module registers are known when the spec is checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import math
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from poe_jax.envs.goals import DEFAULT_GOAL

__all__ = ["GRID_NAME_MAX", "GridSpec", "RESERVED_NAMES", "Shift", "SpecError", "check", "check_grid_name", "load_plugins",
           "load_spec", "load_specs", "plugin_key", "preset_names", "spec_from_dict"]

_PRESETS = Path(__file__).resolve().parents[1] / "presets"


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
        if not isinstance(text, str):
            raise SpecError(f"shifts: expected a string such as 'none' or 'mass=1.25'; got {text!r}")
        text = text.strip()
        if text == "none":
            return cls("none")
        if not text:
            raise SpecError("shifts: an empty shift ''; write 'none' for the nominal condition")
        vals = {"obs_noise": 0.0, "action_noise": 0.0, "mass": 1.0, "friction": 1.0}
        seen = set()
        for part in text.split(","):
            key, _, value = part.partition("=")
            key = key.strip()
            if key not in vals or not value:
                raise SpecError(f"shifts: cannot parse {text!r}; use 'none', 'obs_noise=S', 'action_noise=S', "
                                "'mass=K', 'friction=K' (joined by ',')")
            if key in seen:
                raise SpecError(f"shifts: {key} is given twice in {text!r}; give each key once")
            seen.add(key)
            try:
                v = float(value)
            except ValueError:
                raise SpecError(f"shifts: {key} in {text!r} is not a number") from None
            positive = key in ("mass", "friction")
            if not ((v > 0 if positive else v >= 0) and math.isfinite(v)):
                raise SpecError(f"shifts: {key} must be finite and {'> 0' if positive else '>= 0'}; got {v} in {text!r}")
            vals[key] = v
        return cls(text, **vals)

    def condition(self) -> tuple[float, float, float, float]:
        """What the shift does, whatever its label's spelling (``none`` and ``mass=1.0`` are one condition)."""
        return (self.obs_noise, self.action_noise, self.mass, self.friction)


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
        chunk_size: lanes per compiled call (memory/batch budget; results do not depend on it). Not given
            (None): 1024 on the native backend; on MJX, from the device's memory
            (:attr:`poe_jax.grid.plan.Plan.chunk_size`, printed by the run).
        name: label.
        family: the grid's family when its spec named a checkpoint set (``zoo:NAME@*`` or a list, see
            :func:`load_specs`): the source's name, shared by one grid per checkpoint; empty otherwise.
        mjx_options: the MJX backend's solver settings over the env's defaults
            (:class:`poe_jax.physics.mjx.MjxOptions`: ``impl``, ``iterations``, ``ls_iterations``,
            ``eulerdamp``); the native backend runs MuJoCo's own.
        plugins: Python modules (``package.module``) or ``.py`` files (relative to the TOML's
            folder) imported before the spec is checked, e.g. to register rules, goals, prior
            qualities or metrics.
    """

    env: str
    actor: str
    prior: str
    rules: dict[str, list[float]]
    goals: tuple[str, ...] = (DEFAULT_GOAL,)
    priors: tuple[str, ...] = ("trained",)
    shifts: tuple[str, ...] = ("none",)
    seeds: tuple[int, ...] = (0,)
    episodes: int = 1
    max_steps: int = 1000
    backend: str = "auto"
    degraded_noise: float = 0.5
    sample: bool = False
    chunk_size: int | None = None
    goal_params: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    env_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    mjx_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str = ""
    family: str = ""
    plugins: tuple[str, ...] = ()
    base_dir: str = "."  # where relative checkpoint paths are resolved (the TOML's folder)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("goals", "priors", "shifts", "seeds", "plugins"):
            d[k] = list(d[k])
        d["rules"] = {k: [float(x) for x in v] for k, v in self.rules.items()}
        return d

    def identity(self) -> dict:
        """What determines the results (chunking and paths' spelling do not), with numbers in one spelling
        (``2`` and ``2.0`` are one goal parameter)."""
        d = self.to_dict()
        for k in ("chunk_size", "name", "family", "base_dir", "actor", "prior", "plugins"):
            d.pop(k)
        d["goal_params"] = {g: {k: float(v) for k, v in p.items()} for g, p in d["goal_params"].items()}
        d["env_options"] = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                            for k, v in d["env_options"].items()}
        d["degraded_noise"] = float(d["degraded_noise"])
        if not d["mjx_options"]:  # MJX's solver settings: only where given (a run without them keeps its hash)
            d.pop("mjx_options")
        return d

    def replace(self, **kw) -> "GridSpec":
        return dataclasses.replace(self, **kw)


_ITEMS = {str: "strings", int: "integers", float: "numbers"}


def _as_tuple(name: str, value, kind=str) -> tuple:
    """``value`` (a list) as a tuple of ``kind``: a bare value is refused with the list it should be, a
    boolean is never a number and a number is never truncated (1.9 is not the integer 1)."""
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{name}: expected a list of {_ITEMS[kind]}; got the bare value {value!r} "
                        f"(write [{value!r}])" if isinstance(value, (str, int, float)) else
                        f"{name}: expected a list of {_ITEMS[kind]}; got {value!r}")
    ok = {str: lambda v: isinstance(v, str),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}[kind]
    bad = [v for v in value if not ok(v)]
    if bad:
        raise SpecError(f"{name}: expected a list of {_ITEMS[kind]}; got {bad[0]!r}")
    return tuple(float(v) if kind is float else v for v in value)


# A grid's name names its folder in a multi-grid run: one path component, never '.', '..' or a file of
# the run folder, and short enough for any filesystem's name limit with the files inside it.
GRID_NAME_MAX = 96
RESERVED_NAMES = ("figures", "corrupt")  # besides names of files: a grid's name has none of these endings
_FILE_ENDINGS = (".parquet", ".json", ".md", ".csv", ".png", ".txt", ".tmp")


def check_grid_name(field: str, name) -> str:
    """``name`` if it can name a grid's folder inside the run folder, else :class:`SpecError`."""
    ok = (isinstance(name, str) and 0 < len(name) <= GRID_NAME_MAX and not name.startswith(".")
          and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name) and name not in RESERVED_NAMES
          and not name.lower().endswith(_FILE_ENDINGS))
    if not ok:
        raise SpecError(f"{field}: {name!r} cannot name a grid's folder; use 1-{GRID_NAME_MAX} letters, digits, "
                        f"'-', '_' or '.', not starting with '.', not {' or '.join(RESERVED_NAMES)} and not ending in "
                        f"a file's extension ({', '.join(_FILE_ENDINGS)})")
    return name


# Scalar fields of GridSpec and what each must be (checked by validate, before anything is written).
_SCALARS = {"env": str, "actor": str, "prior": str, "episodes": int, "max_steps": int, "chunk_size": int,
            "backend": str, "degraded_noise": float, "sample": bool, "name": str, "family": str}
_KIND_TEXT = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _check_scalars(spec: "GridSpec") -> None:
    for name, kind in _SCALARS.items():
        v = getattr(spec, name)
        if name == "chunk_size" and v is None:  # not given: chosen by the plan
            continue
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
        if path.is_dir():
            raise SpecError(f"{path}: is a folder; give a grid TOML file (or --preset NAME)")
        if not path.exists():
            raise SpecError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")  # a BOM is not TOML
        if not text.strip():
            raise SpecError(f"{path}: empty; a grid config is TOML with env, actor, prior and [rules] (see "
                            "examples/grid.toml)")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file; a grid config is TOML (UTF-8)") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: invalid TOML ({e})") from None
    data.setdefault("name", path.stem)
    return data, str(path.parent.absolute())


def _from_dict(data: dict, base: str, overrides: dict, stored: bool = False) -> GridSpec:
    data = dict(data)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    # the loader's own field (the TOML's folder): a dict from Python (GridSpec.to_dict) may carry it, a file or --set not
    if "base_dir" in overrides or (not stored and "base_dir" in data):
        fields = {f.name for f in dataclasses.fields(GridSpec)} - {"base_dir"}
        raise SpecError(f"unknown spec field(s) ['base_dir']; fields: {', '.join(sorted(fields))}")
    if not isinstance(data.get("base_dir", base), str):
        raise SpecError(f"base_dir: expected a folder path (a string); got {data['base_dir']!r}")
    if "plugins" in overrides:  # added to the source's own
        extra = overrides.pop("plugins")
        data["plugins"] = [*_as_tuple("plugins", data.get("plugins", ())), *_as_tuple("plugins", extra)]
        data["plugins"] = list(dict.fromkeys(data["plugins"]))
    for k, v in overrides.items():  # a table (rules, goal_params, env_options) is merged key by key
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
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
    for k, kind in (("goals", str), ("priors", str), ("shifts", str), ("seeds", int), ("plugins", str)):
        if k in data:
            data[k] = _as_tuple(k, data[k], kind)
    return GridSpec(**data)


def spec_from_dict(data: dict) -> GridSpec:
    """The :class:`GridSpec` of a stored spec (a run folder's ``spec.json``), its fields checked like a
    file's; nothing it names is imported (its plugins are the caller's to load)."""
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a table of fields; got {type(data).__name__}")
    return _from_dict(data, ".", {}, stored=True)


def load_spec(source: str | os.PathLike | dict, **overrides) -> GridSpec:
    """A :class:`GridSpec` from a TOML file, a preset name (``preset:NAME``) or a dict.

    A multi-grid source (with ``[[grids]]``) is refused here; use :func:`load_specs`.
    """
    data, base = _read_source(source)
    load_plugins(data.get("plugins", ()), base)
    load_plugins(overrides.get("plugins") or (), ".")
    if "grids" in data:
        raise SpecError(f"{data.get('name', 'spec')}: has [[grids]] (several grids); load it with load_specs()")
    for field in ("actor", "prior"):
        ref = overrides.get(field) or data.get(field)
        if ref is not None and len(_checkpoints(field, ref)) > 1:
            raise SpecError(f"{field}: {ref!r} names a set of checkpoints (one grid each); load it with "
                            "load_specs() or poe-jax run")
    return _from_dict(data, base, overrides, stored=isinstance(source, dict))


def mjx_options(spec: "GridSpec"):
    """The MJX solver settings a grid runs with: the env's defaults (``register_env(mjx=...)``) under the spec's
    ``mjx_options``, checked (:class:`poe_jax.physics.mjx.MjxOptions`; a ValueError names the field)."""
    from poe_jax.envs.registry import mjx_defaults
    from poe_jax.physics.options import MjxOptions

    unknown = sorted(set(spec.mjx_options) - set(MjxOptions._fields))
    if unknown:
        raise ValueError(f"mjx_options: unknown option(s) {unknown}; known: {', '.join(MjxOptions._fields)}")
    return MjxOptions(**{**mjx_defaults(spec.env), **spec.mjx_options}).check()


def _checkpoints(field: str, ref) -> tuple[str, ...]:
    """The checkpoints ``ref`` names (:func:`poe_jax.checkpoints.expand`), a one-line :class:`SpecError` if none."""
    from poe_jax import checkpoints

    if isinstance(ref, str) and "@" not in ref:
        return (ref,)  # one checkpoint: checked where it is loaded
    try:
        return checkpoints.expand(field, ref)
    except checkpoints.CheckpointError as e:
        raise SpecError(str(e)) from None


def _families(merged: dict, name: str, where: str) -> list[dict]:
    """One table per checkpoint when ``actor`` or ``prior`` names a set: the product of the two sets, each
    grid named ``NAME.CHECKPOINT`` (the checkpoints that vary) and of ``family`` NAME; else ``[merged]``."""
    from poe_jax import checkpoints

    actors = _checkpoints(f"{where}actor", merged["actor"]) if "actor" in merged else (None,)
    priors_ = _checkpoints(f"{where}prior", merged["prior"]) if "prior" in merged else (None,)
    if len(actors) == 1 and len(priors_) == 1:
        return [{**merged, **({"actor": actors[0]} if actors[0] else {}), **({"prior": priors_[0]} if priors_[0] else {})}]
    out = []
    for a in actors:
        for p in priors_:
            tag = ".".join(checkpoints.short_name(c) for c, many in ((a, len(actors) > 1), (p, len(priors_) > 1)) if many)
            out.append({**merged, "actor": a, "prior": p, "family": name,
                        "name": check_grid_name(f"{where}name", f"{name}.{tag}")})
    return out


def load_specs(source: str | os.PathLike | dict, **overrides) -> list[GridSpec]:
    """One or several :class:`GridSpec` from a source (see :func:`load_spec`).

    A source with ``[[grids]]`` tables is several grids: each table (at least
    ``env``, ``actor``, ``prior``) is merged over the top-level fields, which hold
    what the grids share. A grid's ``name`` defaults to the actor's checkpoint
    name, prefixed with ``ENV-`` unless it starts with it; it names the grid's
    folder in the run directory.
    """
    data, base = _read_source(source)
    load_plugins(data.get("plugins", ()), base)
    load_plugins(overrides.get("plugins") or (), ".")
    for entry in data.get("grids", []) if isinstance(data.get("grids"), list) else []:
        if isinstance(entry, dict):
            load_plugins(entry.get("plugins", ()), base)
    stored = isinstance(source, dict)  # a dict from Python may carry base_dir (see _from_dict)
    if "grids" not in data:
        sets = {k: overrides.pop(k) for k in ("actor", "prior") if overrides.get(k) is not None}
        return [_from_dict(d, base, overrides, stored=stored)
                for d in _families({**data, **sets}, str(data.get("name", "grid")), "")]
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
        from poe_jax import checkpoints

        ref = merged["actor"]
        ref = ref[0] if isinstance(ref, (list, tuple)) and ref else ref  # a set: its first checkpoint
        actor_name = checkpoints.short_name(str(ref).removesuffix(checkpoints.SET_SUFFIX))
        default = actor_name if actor_name.startswith(str(merged["env"])) else f"{merged['env']}-{actor_name}"
        merged["name"] = check_grid_name(f"grids[{i}].name", entry.get("name", default))
        try:
            specs += [_from_dict(d, base, overrides, stored=stored)
                      for d in _families(merged, merged["name"], f"grids[{i}].")]
        except SpecError as e:
            raise SpecError(f"grids[{i}] ({merged['name']}): {e}") from None
    names = [sp.name for sp in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"grids: duplicate grid names {dup}; give each [[grids]] table a distinct name")
    return specs


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in _PRESETS.glob("*.toml")))



# ---------------------------------------------------------------- plugins
def plugin_key(ref: str, base_dir: str = ".") -> str:
    """A plugin's identity: its module name, or its ``.py`` file's absolute path."""
    if isinstance(ref, str) and ref.endswith(".py"):
        path = Path(ref) if Path(ref).is_absolute() else Path(base_dir) / ref
        return str(path.absolute())
    return str(ref)


def load_plugins(plugins, base_dir: str = ".") -> list:
    """Import each plugin once: a module name (``pkg.mod``) or a ``.py`` file (relative to ``base_dir``).

    A plugin registers names (``kernels.register_rule``, ``goals.register_goal``,
    ``priors.register_quality``, ``metrics.register_metric``) at import. Importing the same
    plugin again is a no-op. Returns the modules."""
    if isinstance(plugins, str):
        plugins = [plugins]
    if not isinstance(plugins, (list, tuple)):
        raise SpecError(f"plugins: expected a list of module names or .py files; got {plugins!r}")
    mods = []
    for ref in plugins:
        if not isinstance(ref, str) or not ref:
            raise SpecError(f"plugins: expected module names or .py files; got {ref!r}")
        if ref.endswith(".py"):
            path = Path(ref) if Path(ref).is_absolute() else Path(base_dir) / ref
            if not path.is_file():
                raise SpecError(f"plugins: no such file {path}")
            path = path.resolve()
            name = f"poe_jax_plugin_{path.stem}_{hashlib.blake2b(str(path).encode(), digest_size=4).hexdigest()}"
            if name not in sys.modules:
                loader = importlib.util.spec_from_file_location(name, path)
                mod = importlib.util.module_from_spec(loader)
                sys.modules[name] = mod
                try:
                    loader.loader.exec_module(mod)
                except BaseException:
                    del sys.modules[name]
                    raise
            mods.append(sys.modules[name])
        else:
            try:
                mods.append(importlib.import_module(ref))
            except ModuleNotFoundError as e:
                raise SpecError(f"plugins: cannot import {ref!r} ({e}); give an importable module or a .py file") from None
    return mods


# ---------------------------------------------------------------- checks (no I/O)


def check(spec: GridSpec) -> None:
    """Check every field of ``spec`` against its type, its range and the registries.

    Touches no env, checkpoint or file (besides importing ``spec.plugins``); raises
    :class:`SpecError` naming the field, the value and what is allowed."""
    from poe_jax import envs
    from poe_jax.kernels import rules as kernels
    from poe_jax.kernels import priors
    from poe_jax.envs.goals import make_goal
    from poe_jax.envs.registry import MAX_STEPS, check_options
    from poe_jax.physics import backend_names

    for name in ("goals", "priors", "shifts", "seeds", "plugins"):  # a Python caller's bare string
        value = getattr(spec, name)
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{name}: expected a list; got the bare value {value!r} (write [{value!r}])")
    if not isinstance(spec.rules, dict):
        raise SpecError(f"rules: expected a table {{rule = [coefficients]}}; got {spec.rules!r}")
    if not isinstance(spec.goal_params, dict) or not all(
            isinstance(g, str) and isinstance(p, dict) and all(isinstance(k, str) for k in p)
            for g, p in spec.goal_params.items()):
        raise SpecError(f"goal_params: expected tables [goal_params.GOAL] of parameter = value; got "
                        f"{spec.goal_params!r}")
    load_plugins(spec.plugins, spec.base_dir)
    _check_scalars(spec)
    if spec.env not in envs.names():
        raise SpecError(f"env: unknown env {spec.env!r}; known envs: {', '.join(envs.names())}")
    if not isinstance(spec.env_options, dict):
        raise SpecError(f"env_options: expected a table {{option = value}}; got {spec.env_options!r}")
    if "max_steps" in spec.env_options:
        raise SpecError("env_options.max_steps: a grid's horizon is its own max_steps field; set max_steps = N "
                        "there instead")
    try:
        check_options(spec.env, spec.env_options)
    except ValueError as e:
        raise SpecError(str(e)) from None
    if not isinstance(spec.mjx_options, dict):
        raise SpecError(f"mjx_options: expected a table {{option = value}}; got {spec.mjx_options!r}")
    try:
        mjx_options(spec)
    except ValueError as e:
        raise SpecError(str(e)) from None
    if spec.backend not in backend_names():
        raise SpecError(f"backend: unknown backend {spec.backend!r}; known: {', '.join(backend_names())}")
    if not spec.rules:
        raise SpecError("rules: empty; give at least one rule, e.g. rules = {frozen = [], poe = [0.5]}")
    for rule, params in spec.rules.items():
        try:
            r = kernels.RULES[rule]
        except KeyError as e:
            raise SpecError(f"rules: {e.args[0]}") from None
        params = _as_tuple(f"rules.{rule}", params, float)
        dup = sorted({p for p in params if params.count(p) > 1})
        if dup:
            raise SpecError(f"rules.{rule}: duplicate coefficients {dup}; each coefficient once (more episodes: "
                            "raise seeds or episodes)")
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
    for g in spec.goals:
        try:
            make_goal(g, spec.env, **spec.goal_params.get(g, {}))
        except (KeyError, ValueError) as e:
            text = e.args[0]
            raise SpecError(text if text.startswith("goal_params.") else f"goals: {text}") from None
    unknown_gp = sorted(set(spec.goal_params) - set(spec.goals))
    if unknown_gp:
        raise SpecError(f"goal_params: goals {unknown_gp} are not in goals {list(spec.goals)}")
    for q in spec.priors:
        if q not in priors.QUALITIES:
            raise SpecError(f"priors: unknown prior quality {q!r}; known: {', '.join(priors.names())}")
    conditions: dict = {}
    for s in spec.shifts:
        same = conditions.setdefault(Shift.parse(s).condition(), s)
        if same != s:
            raise SpecError(f"shifts: {same!r} and {s!r} are the same condition; list it once")
    for name in ("episodes", "max_steps", "chunk_size"):
        if getattr(spec, name) is not None and getattr(spec, name) < 1:
            raise SpecError(f"{name}: must be >= 1; got {getattr(spec, name)}")
    if spec.max_steps > MAX_STEPS:
        raise SpecError(f"max_steps: must be <= {MAX_STEPS:,}; got {spec.max_steps:,}")
    if not (spec.degraded_noise >= 0 and math.isfinite(spec.degraded_noise)):
        raise SpecError(f"degraded_noise: must be finite and >= 0; got {spec.degraded_noise}")
