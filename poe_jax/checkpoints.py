"""Checkpoints: orbax-saved parameters plus a human-readable JSON card.

A checkpoint is a directory::

    DIR/card.json   what the checkpoint is (below); edit-safe to read
    DIR/params/     orbax-checkpoint tree: {"actor"|"prior": params, "critic": ..., "norm": {mean, std}}

The card records the kind (``actor`` or ``prior``), the architecture
(:class:`~poe_jax.nets.ActorSpec` / :class:`~poe_jax.nets.PriorSpec`, plus the
IQL critics' spec when they are saved), observation and action sizes, action
scale, the observation normalisation (mean, std, eps -- or ``applied: false``),
env, dataset, provenance, evaluated scores with their episode counts, every
parameter's shape, and a SHA-256 of all arrays.

:func:`load` refuses, with a :class:`CheckpointError` that names what is wrong:
a missing or unparsable card, a card from another format, parameter shapes
that differ from the card's architecture, arrays whose checksum differs from
the card (a corrupt or truncated file), and -- when ``env`` is given -- an env
or observation/action size that differs from the card's.

Saving is atomic: the checkpoint is written to a temporary sibling directory
and renamed into place, so an interrupted save leaves any previous checkpoint
at ``DIR`` intact; an existing ``DIR`` is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from poe_jax import nets

__all__ = ["FORMAT", "NEAR_EXPERT", "SET_SUFFIX", "CheckpointError", "check_env", "expand", "expert_level", "load",
           "plain_file_name", "published", "read_card", "replicas", "save", "score_ci", "short_name", "update_card"]

FORMAT = "poe_jax.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the path and the problem."""


# ---------------------------------------------------------------- helpers
def _flat(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in nets.flat_paths(tree).items()}


def checksum(tree) -> str:
    """SHA-256 over every array of ``tree`` (path, dtype, shape and bytes, in path order)."""
    h = hashlib.sha256()
    for name, arr in sorted(_flat(tree).items()):
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _env_sizes(env) -> tuple[str, int, int]:
    if isinstance(env, str):
        from poe_jax import envs

        e = envs.make(env, backend="native", nthread=1)
        return env, e.obs_size, e.act_size
    return env.name, env.obs_size, env.act_size


def check_env(card: dict, env, path: str | os.PathLike = "checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``card`` fits ``env`` (a name or an Env)."""
    name, obs_size, act_size = _env_sizes(env)
    problems = []
    # a v4 checkpoint also fits its v5 env (same model family, observation and action spaces; v5
    # changes the healthy reward on terminal steps and walker2d's left-foot friction)
    if card.get("env") not in (None, name, name.removesuffix("-v5")):
        problems.append(f"it was made for env {card['env']!r}, not {name!r}")
    if card["obs_size"] != obs_size:
        problems.append(f"observation size {card['obs_size']} != {name}'s {obs_size}")
    if card["act_size"] != act_size:
        problems.append(f"action size {card['act_size']} != {name}'s {act_size}")
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not fit env {name!r}: " + "; ".join(problems))


def read_card(path: str | os.PathLike) -> dict:
    """The card of the checkpoint at ``path`` (validated for format)."""
    path = Path(path)
    card_path = path / "card.json"
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not card_path.is_file():
        raise CheckpointError(f"{path}: not a poe_jax checkpoint (no card.json)")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{card_path}: corrupt card ({e})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CheckpointError(f"{card_path}: unknown card format {card.get('format') if isinstance(card, dict) else card!r}; expected {FORMAT!r}")
    for key in ("kind", "architecture", "obs_size", "act_size", "params", "sha256"):
        if key not in card:
            raise CheckpointError(f"{card_path}: card has no {key!r} entry")
    _check_card_types(card, card_path)
    return card


def plain_file_name(name) -> bool:
    """A card field naming a shipped file (``probe_states``, ``calibration_rows``) is data: only a plain file name,
    never a path (an absolute one read a file outside the zoo) or a hidden name."""
    return isinstance(name, str) and bool(name) and Path(name).name == name and not name.startswith(".")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def _check_card_types(card: dict, card_path: Path) -> None:
    """A card is data: every field the loader, ``zoo`` and the report read has the type they read it as, or
    the card is refused with the field, its value and what is allowed (a string architecture, a string
    published score or a number where a list belongs gave tracebacks)."""
    def bad(field, value, allowed):
        text = json.dumps(value)
        raise CheckpointError(f"{card_path}: card field {field} is {text[:60] + '...' if len(text) > 60 else text}; "
                              f"expected {allowed}")

    if card["kind"] not in ("actor", "prior"):
        bad("kind", card["kind"], "'actor' or 'prior'")
    for key in ("architecture", "params"):
        if not isinstance(card[key], dict):
            bad(key, card[key], "an object")
    for key in ("obs_size", "act_size"):
        if not _is_int(card[key]) or card[key] <= 0:
            bad(key, card[key], "a positive integer")
    for k, v in card["params"].items():
        if not isinstance(v, list) or not all(_is_int(n) and n >= 0 for n in v):
            bad(f"params[{k!r}]", v, "a list of non-negative integers (an array's shape)")
    if not isinstance(card["sha256"], str):
        bad("sha256", card["sha256"], "a hex string")
    if card.get("critic") is not None and not isinstance(card["critic"], dict):
        bad("critic", card["critic"], "an object or null")
    norm = card.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict):
            bad("normalization", norm, "an object or null")
        for key in ("mean", "std"):
            if key in norm and (not isinstance(norm[key], list) or not all(_is_num(x) for x in norm[key])):
                bad(f"normalization.{key}", norm[key], "a list of finite numbers")
        if norm.get("eps") is not None and not _is_num(norm["eps"]):
            bad("normalization.eps", norm["eps"], "a finite number")
    for key in ("env", "dataset", "algo", "data_source", "probe_states", "replica_of", "calibration_rows"):
        if card.get(key) is not None and not isinstance(card[key], str):
            bad(key, card[key], "a string")
    if card.get("seed") is not None and not _is_int(card["seed"]):
        bad("seed", card["seed"], "an integer")
    pub = card.get("published")
    if pub is not None:
        if not isinstance(pub, dict):
            bad("published", pub, "an object (algo, dataset, score) or null")
        for key in ("algo", "dataset"):
            if not isinstance(pub.get(key), str):
                bad(f"published.{key}", pub.get(key), "a string")
        if not _is_num(pub.get("score")):
            bad("published.score", pub.get("score"), "a finite number")


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _norm_card(norm: nets.ObsNorm, applied: bool | None) -> dict:
    mean, std = np.asarray(norm.mean, np.float32), np.asarray(norm.std, np.float32)
    if applied is None:
        applied = not (np.all(mean == 0) and np.all(std == 1))
    return {"applied": bool(applied), "eps": norm.eps, "mean": mean.tolist(), "std": std.tolist()}


# ---------------------------------------------------------------- save
def save(
    path: str | os.PathLike,
    obj: nets.Actor | nets.GoalPrior,
    *,
    env: str | None = None,
    dataset: str | None = None,
    provenance: dict | None = None,
    scores: list[dict] | None = None,
    normalization_note: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Save an actor (with its critics, when it has them) or a goal prior.

    Args:
        path: checkpoint directory (created; must not exist unless ``overwrite``).
        obj: :class:`~poe_jax.nets.Actor` or :class:`~poe_jax.nets.GoalPrior`.
        env, dataset: what it was trained for / on (recorded in the card).
        provenance: free-form dict (algorithm settings, source file, command, seed...).
        scores: evaluation records, each with at least ``episodes``.
        normalization_note: how the normalisation was obtained (or why there is none).
        overwrite: replace an existing checkpoint (atomically).

    Returns:
        the checkpoint path.
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    check_replaceable(path, overwrite)
    for s in scores or []:
        if "episodes" not in s:
            raise CheckpointError(f"{path}: every score needs its number of episodes; got {s}")
    kind = "actor" if isinstance(obj, nets.Actor) else "prior"
    if kind == "prior" and not isinstance(obj, nets.GoalPrior):
        raise TypeError(f"can only save an Actor or a GoalPrior; got {type(obj).__name__}")
    tree: dict[str, Any] = {kind: obj.params, "norm": {"mean": obj.norm.mean, "std": obj.norm.std}}
    critic = getattr(obj, "critic", None)
    if critic is not None:
        tree["critic"] = critic.params
    tree = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)
    bad = sorted(k for k, v in _flat(tree).items() if not np.all(np.isfinite(v)))
    if bad:
        raise CheckpointError(f"{path}: parameters {bad[:4]} have NaN or inf values; a network with them gives NaN "
                              "actions, so it is not saved")
    spec = obj.spec
    card = {
        "format": FORMAT,
        "kind": kind,
        "algo": getattr(spec, "algo", "awr_prior"),
        "architecture": spec.to_dict(),
        "critic": critic.spec.to_dict() if critic is not None else None,
        "obs_size": spec.obs_size,
        "act_size": spec.act_size,
        "max_action": spec.max_action,
        "normalization": {**_norm_card(obj.norm, None), "note": normalization_note},
        "env": env,
        "dataset": dataset,
        "provenance": provenance or {},
        "scores": scores or [],
        "params": {k: list(v.shape) for k, v in sorted(_flat(tree).items())},
        "sha256": checksum(tree),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "poe_jax_version": _version(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / "params", tree)
            ckptr.wait_until_finished()
        # orbax's marker records the absolute temporary path it wrote to (a path of this
        # machine); loading does not need it, and this function's rename is the commit.
        (tmp / "params" / "commit_success.txt").unlink(missing_ok=True)
        _write_json_atomic(tmp / "card.json", card)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


_CHECKPOINT_FILES = ("card.json", "params")  # what a checkpoint folder holds


def check_replaceable(path: str | os.PathLike, overwrite: bool) -> None:
    """``path`` may receive a checkpoint: it does not exist, or ``overwrite`` is set and it is a checkpoint
    folder (a folder with card.json). A file, or a folder of anything else (a grid's run), is never replaced."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise CheckpointError(f"{path}: exists and is not a checkpoint folder; give a new --out (a file is never "
                              "replaced)")
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path}: already exists; pass overwrite=True (on the command line: --overwrite) to "
                              "replace it")
    if path.exists() and not (path / "card.json").is_file():
        raise CheckpointError(f"{path}: is a folder but not a checkpoint (no card.json); --overwrite replaces only a "
                              "checkpoint: give a new --out")
    other = sorted(p.name for p in path.iterdir() if p.name not in _CHECKPOINT_FILES) if path.is_dir() else []
    if other:
        raise CheckpointError(f"{path}: holds more than a checkpoint ({', '.join(other[:4])}); --overwrite replaces "
                              "only a checkpoint folder: give a new --out")


def update_card(path: str | os.PathLike, **fields) -> dict:
    """Set top-level card fields (e.g. ``scores=[...]``) atomically; returns the card.

    The architecture, parameter shapes and checksum cannot be changed this way.
    """
    frozen = {"format", "kind", "architecture", "critic", "params", "sha256", "obs_size", "act_size"}
    bad = frozen & fields.keys()
    if bad:
        raise CheckpointError(f"{path}: card fields {sorted(bad)} describe the arrays and cannot be edited")
    card = read_card(path)
    card.update(fields)
    _write_json_atomic(Path(path) / "card.json", card)
    return card


# ---------------------------------------------------------------- load
def _specs(card: dict, path) -> tuple[Any, nets.CriticSpec | None]:
    arch = dict(card["architecture"])
    try:
        if card["kind"] == "actor":
            spec = nets.ActorSpec(**{**arch, "hidden": tuple(arch.get("hidden", ()))})
        elif card["kind"] == "prior":
            spec = nets.PriorSpec(**{**arch, "hidden": tuple(arch["hidden"]), "goals": tuple(arch["goals"])})
        else:
            raise CheckpointError(f"{path}: unknown checkpoint kind {card['kind']!r}; expected 'actor' or 'prior'")
        crit = card.get("critic")
        cspec = nets.CriticSpec(crit["obs_size"], crit["act_size"], tuple(crit["hidden"])) if crit else None
    except (TypeError, KeyError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: card architecture is invalid ({e})") from None
    if (spec.obs_size, spec.act_size) != (card["obs_size"], card["act_size"]):
        raise CheckpointError(
            f"{path}: card says obs/act sizes {card['obs_size']}/{card['act_size']} but its architecture has "
            f"{spec.obs_size}/{spec.act_size}"
        )
    return spec, cspec


def _expected(card: dict, spec, cspec) -> dict[str, list[int]]:
    kind = card["kind"]
    out = {f"{kind}/{k}": v for k, v in nets.expected_shapes(kind, spec).items()}
    if cspec is not None:
        out.update({f"critic/{k}": v for k, v in nets.expected_shapes("critic", cspec).items()})
    out["norm/mean"] = out["norm/std"] = [spec.obs_size]
    return out


def _compare_shapes(what: str, got: dict, want: dict, path) -> None:
    missing = sorted(want.keys() - got.keys())
    extra = sorted(got.keys() - want.keys())
    wrong = [f"{k}: {got[k]} (expected {want[k]})" for k in sorted(want.keys() & got.keys()) if list(got[k]) != list(want[k])]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        if wrong:
            parts.append(f"wrong shapes {wrong}")
        raise CheckpointError(f"{path}: {what} do not match the card's architecture: " + "; ".join(parts))




def _shipped_zoo() -> Path:
    """The shipped checkpoints and probe states: ``poe_jax/zoo/`` in an installed wheel (``checkpoints/``
    mapped there as package data by ``pyproject.toml``), else ``checkpoints/`` at the root of a source checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "zoo"
    return installed if installed.is_dir() else here.parent / "checkpoints"


ZOO = _shipped_zoo()


def zoo_dirs() -> list[Path]:
    """Folders searched for ``zoo:NAME``: those in ``POE_JAX_ZOO`` (``os.pathsep``-separated),
    then the shipped zoo (:data:`ZOO`: ``checkpoints/`` of a source checkout, which a wheel or a plain
    ``pip install .`` carries as ``poe_jax/zoo/``)."""
    dirs = [Path(p) for p in os.environ.get("POE_JAX_ZOO", "").split(os.pathsep) if p]
    return dirs + [ZOO]


def zoo_path(name: str) -> Path:
    """The folder of shipped checkpoint ``name`` (``zoo:`` prefix optional)."""
    name = name.removeprefix("zoo:")
    for d in zoo_dirs():
        if (d / name / "card.json").is_file():
            return d / name
    raise CheckpointError(f"no shipped checkpoint {name!r} in {', '.join(str(d) for d in zoo_dirs())} "
                          "(set POE_JAX_ZOO to add a folder)")


NEAR_EXPERT = 90.0
"""D4RL-normalised score an expert behaviour policy needs to count as near-expert: within 10% of D4RL's
expert, which scores 100 by the normalisation's definition."""


def expert_level(card: dict) -> str | None:
    """What the expert half of a medium-expert actor's data was, from its card's ``provenance.behaviour``:
    ``"near-expert (expert policy 92.3)"`` or ``"sub-expert (expert policy 82.1 < 90)"``, the behaviour expert's
    deterministic D4RL-normalised score against :data:`NEAR_EXPERT`; ``None`` for other checkpoints."""
    expert = card.get("provenance")
    for key in ("behaviour", "expert"):  # a card is data: any level may be missing or of another type
        expert = expert.get(key) if isinstance(expert, dict) else None
    if "medium-expert" not in str(card.get("dataset", "")) or not isinstance(expert, dict):
        return None
    score = expert.get("det_normalized", expert.get("normalized"))
    if not _is_num(score):
        return None
    return (f"near-expert (expert policy {score:.1f})" if score >= NEAR_EXPERT
            else f"sub-expert (expert policy {score:.1f} < {NEAR_EXPERT:g})")


def score_ci(card: dict) -> str | None:
    """The card's first normalised score with its 95% interval over the episodes, as ``"65.6 [59.3, 71.9] (20 ep)"``:
    mean ± 1.96 standard errors, or for a success rate (D4RL's reference scores [0, 1], AntMaze) Wilson's interval,
    which is not empty at 0 of 20. ``None`` when the card has no normalised score."""
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731  (cards are data)
    scores = card.get("scores")
    sc = next((s for s in scores if isinstance(s, dict) and num(s.get("normalized_mean"))), None) \
        if isinstance(scores, list) else None
    if sc is None:
        return None
    mean, n, se = sc["normalized_mean"], sc.get("episodes"), sc.get("normalized_se")
    n = n if num(n) and n > 0 else None
    if str(sc.get("normalized_by", "")).endswith("[0, 1]") and isinstance(n, int) and 0 <= mean <= 100:
        from scipy import stats

        ci = stats.binomtest(round(mean / 100 * n), n).proportion_ci(method="wilson")
        lo, hi = 100 * ci.low, 100 * ci.high
    elif num(se):
        lo, hi = mean - 1.96 * se, mean + 1.96 * se
    else:
        return f"{mean:.1f} ({n or '?'} ep)"
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}] ({n or '?'} ep)"


def published(card: dict) -> tuple[str, str, float] | None:
    """The card's published score of the same algorithm on the D4RL dataset of that name, ``(algo, dataset,
    score)``, or ``None`` when it has none or it is malformed (a run folder's copy of a card is data too)."""
    pub = card.get("published")
    if not isinstance(pub, dict) or not isinstance(pub.get("algo"), str) or not isinstance(pub.get("dataset"), str):
        return None
    return (pub["algo"], pub["dataset"], float(pub["score"])) if _is_num(pub.get("score")) else None


SET_SUFFIX = "@*"  # zoo:NAME@* names NAME and every shipped replica of it


def replicas(name: str) -> list[str]:
    """``zoo:NAME`` and every zoo checkpoint whose card says ``replica_of: NAME`` (the same method retrained
    with another seed), as ``zoo:`` names ordered by the card's training seed, then name."""
    base = name.removeprefix("zoo:")
    found = {base: read_card(zoo_path(base))}
    for d in zoo_dirs():
        for card_file in sorted(d.glob("*/card.json")):
            try:
                card = json.loads(card_file.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(card, dict) and card.get("replica_of") == base:
                found.setdefault(card_file.parent.name, card)

    def seed(item):
        s = item[1].get("seed", (item[1].get("provenance") or {}).get("seed", 0))
        return (s if isinstance(s, int) else 0, item[0])
    return [f"zoo:{n}" for n, _ in sorted(found.items(), key=seed)]


def expand(field: str, ref) -> tuple[str, ...]:
    """The checkpoints a spec's ``actor`` or ``prior`` names: one path or ``zoo:NAME``; a set, ``zoo:NAME@*``
    (:func:`replicas`); or a list of those. A one-line :class:`CheckpointError` names ``field`` otherwise."""
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    if not refs or not all(isinstance(r, str) and r for r in refs):
        raise CheckpointError(f"{field}: expected a checkpoint path, 'zoo:NAME', 'zoo:NAME{SET_SUFFIX}' or a "
                              f"non-empty list of them; got {ref!r}")
    out = []
    for r in refs:
        if r.endswith(SET_SUFFIX):
            if not r.startswith("zoo:"):
                raise CheckpointError(f"{field}: {r!r}: a set ('{SET_SUFFIX}') names a shipped checkpoint, "
                                      f"'zoo:NAME{SET_SUFFIX}'; list paths instead")
            try:
                out += replicas(r.removesuffix(SET_SUFFIX))
            except CheckpointError as e:
                raise CheckpointError(f"{field}: {r!r}: {e}") from None
        elif "@" in r and r.startswith("zoo:"):
            raise CheckpointError(f"{field}: {r!r}: the only set syntax is 'zoo:NAME{SET_SUFFIX}'")
        else:
            out.append(r)
    dup = sorted({r for r in out if out.count(r) > 1})
    if dup:
        raise CheckpointError(f"{field}: {dup[0]!r} is named twice; name each checkpoint once")
    return tuple(out)


def short_name(ref: str) -> str:
    """A checkpoint's name: ``zoo:NAME`` -> NAME, a path -> its folder's name."""
    return ref.removeprefix("zoo:").rstrip("/").split("/")[-1]


_ORBAX_FILES = ("_METADATA", "manifest.ocdbt")  # what every checkpoint's params/ holds (orbax, OCDBT format)


def load(path: str | os.PathLike, env=None) -> nets.Actor | nets.GoalPrior:
    """Load a frozen actor (with its critics when saved) or a goal prior.

    Args:
        path: checkpoint directory, or ``zoo:NAME`` for a shipped checkpoint.
        env: optional env name or Env to check the card against.

    Returns:
        :class:`~poe_jax.nets.Actor` (``.critic`` set when the checkpoint has
        critics) or :class:`~poe_jax.nets.GoalPrior`, with float32 arrays equal
        bit for bit to those saved.

    Raises:
        CheckpointError: see the module docstring.
    """
    import orbax.checkpoint as ocp

    path = zoo_path(path) if isinstance(path, str) and path.startswith("zoo:") else Path(path).absolute()
    card = read_card(path)
    spec, cspec = _specs(card, path)
    want = _expected(card, spec, cspec)
    _compare_shapes("card parameter shapes", card["params"], want, path)
    if env is not None:
        check_env(card, env, path)
    pdir = path / "params"
    if not pdir.is_dir():
        raise CheckpointError(f"{path}: cannot read the parameter files: {pdir} is missing (truncated checkpoint?)")
    for name in _ORBAX_FILES:  # checked here: orbax would report a missing one as every array missing
        if not (pdir / name).is_file():
            raise CheckpointError(f"{path}: params/{name} is missing (a truncated or partly copied checkpoint); copy "
                                  "the whole checkpoint folder again, or save it again")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            meta = ckptr.metadata(pdir)
            meta_tree = getattr(meta, "item_metadata", meta)
            meta_tree = getattr(meta_tree, "tree", meta_tree)
            shapes = {k: list(v.shape) for k, v in nets.flat_paths(meta_tree, _has_shape).items()}
            _compare_shapes("stored arrays", shapes, want, path)
            target = jax.tree_util.tree_map(
                lambda m: jax.ShapeDtypeStruct(tuple(m.shape), np.float32), meta_tree,
                is_leaf=_has_shape,
            )
            tree = ckptr.restore(pdir, target)
    except CheckpointError:
        raise
    except Exception as e:  # orbax / tensorstore raise many types for damaged files
        raise CheckpointError(f"{path}: cannot read the parameter files ({type(e).__name__}: {e})") from None
    tree = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)
    if checksum(tree) != card["sha256"]:
        raise CheckpointError(f"{path}: parameter checksum differs from the card: the files are corrupt or were changed")
    bad = sorted(k for k, v in _flat(tree).items() if not np.all(np.isfinite(v)))
    if bad:
        raise CheckpointError(f"{path}: parameters {bad[:4]} have NaN or inf values (a diverged training run?); a network "
                              "with them gives NaN actions")
    ncard = card.get("normalization") or {}
    mean, std = tree["norm"]["mean"], tree["norm"]["std"]
    if "mean" in ncard and (not np.array_equal(np.float32(ncard["mean"]), mean) or not np.array_equal(np.float32(ncard["std"]), std)):
        raise CheckpointError(f"{path}: the card's normalisation differs from the stored one (was card.json edited?)")
    if np.any(~np.isfinite(std)) or np.any(std <= 0):
        raise CheckpointError(f"{path}: normalisation std must be finite and > 0")
    norm = nets.ObsNorm(jax.numpy.asarray(mean), jax.numpy.asarray(std), float(ncard.get("eps") or 0.0))
    as_jax = lambda t: jax.tree_util.tree_map(jax.numpy.asarray, t)  # noqa: E731
    if card["kind"] == "prior":
        return nets.GoalPrior(as_jax(tree["prior"]), norm, spec)
    critic = nets.Critic(as_jax(tree["critic"]), norm, cspec) if cspec is not None else None
    return nets.Actor(as_jax(tree["actor"]), norm, spec, critic)


def _has_shape(x) -> bool:
    return hasattr(x, "shape")


def _version() -> str:
    from poe_jax import __version__

    return __version__
