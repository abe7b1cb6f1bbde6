"""The run folder: Parquet parts, resume, the pinned spec, locking, and reading episodes back.

``DIR/episodes.parquet`` is a Parquet dataset (a directory; read it with :func:`read_episodes`,
which checks every part; ``pandas.read_parquet`` reads every file there, checked or not) to which each
finished chunk adds one file, written to a temporary name and renamed, so a killed run
loses at most the chunks in flight. Running again on the same DIR resumes: lanes already
recorded are not recomputed. ``DIR/spec.json`` pins the grid's identity; it is written
with the first result part, so a run that fails before any result leaves nothing that
blocks the next. Another spec on a DIR with results is refused (naming the fields that
differ) unless ``force``. A run holds an exclusive lock on DIR while it writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from poe_jax.kernels import priors
from poe_jax.grid.spec import SpecError

__all__ = ["STORE_FORMAT", "Store", "acted", "StoreError", "done_lanes", "episodes_dir", "grid_dirs", "identity_hash", "lock",
           "progress", "read_episodes", "recorded_count", "repair", "write_file", "write_json", "writing"]


class StoreError(ValueError):
    """A run folder cannot be read or written as it is (e.g. a corrupt result part); the message says the fix."""


STORE_FORMAT = 2  # parts record their spec's hash and the folder's spec.json its lane count and columns
_META = b"poe_jax"  # a part's Parquet metadata key: {"identity_sha256": ...}
_REPAIR = "run the grid again with --repair to move it aside (DIR/corrupt/) and recompute its lanes"


def identity_hash(identity: dict) -> str:
    """The SHA-256 of a grid's identity (canonical JSON): what each result part records."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _parts(out: Path) -> list[Path]:
    """The result parts of ``out`` (``part-*.parquet``); one that is not a regular file is refused."""
    parts = sorted(episodes_dir(out).glob("part-*.parquet"))
    for p in parts:
        if not p.is_file():
            raise StoreError(f"{p}: not a regular file (a result part is one); move it away")
    return parts


class _Pinned(NamedTuple):
    """What ``spec.json`` pins: the identity and its hash, the lane count and the columns of every part."""

    identity: dict
    sha256: str
    n_lanes: int | None
    columns: tuple[str, ...] | None
    spec: dict


def _read_pinned(d: Path) -> _Pinned:
    """``d/spec.json``, checked: it parses, and its recorded hash is its identity's (an edit shows)."""
    path = d / "spec.json"
    if path.exists() and not path.is_file():
        raise StoreError(f"{path}: not a regular file; move it away")
    try:
        raw = json.loads(path.read_text())
        identity, spec = raw["identity"], raw["spec"]
        if not isinstance(identity, dict) or not isinstance(spec, dict):
            raise TypeError("identity and spec must be tables")
    except FileNotFoundError:
        raise StoreError(f"{d}: has result parts but no spec.json; it was not written by poe-jax run (use another "
                         "--out for a new run)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise StoreError(f"{path}: unreadable ({type(e).__name__}); the episodes beside it are intact: run the "
                         "command that made them again with --repair to rewrite it (parts that record that spec's "
                         "hash are kept)") from None
    sha = raw.get("identity_sha256")
    if sha is None:
        raise StoreError(f"{d}: written by an earlier poe_jax (no spec hash); run the grid into a new --out")
    if sha != identity_hash(identity) or raw.get("sha256") != _seal(raw):
        raise StoreError(f"{path}: its content does not match its recorded hash (edited by hand?); restore it, or run "
                         "the command that made the folder again with --repair")
    if not isinstance(identity.get("priors"), list):
        raise StoreError(f"{path}: its identity has no list of prior qualities; restore it")
    n = raw.get("n_lanes")
    cols = raw.get("columns")
    return _Pinned(identity, sha, n if isinstance(n, int) and not isinstance(n, bool) else None,
                   tuple(cols) if isinstance(cols, list) else None, spec)


def _seal(raw: dict) -> str:
    """The SHA-256 of spec.json's content without its own ``sha256``: any edit (identity, spec, lane count,
    columns) shows."""
    return identity_hash({k: v for k, v in raw.items() if k != "sha256"})


def _sealed(raw: dict) -> dict:
    return {**raw, "sha256": _seal(raw)}


def _recorded_sha(schema) -> str | None:
    """The spec hash a part's Parquet schema records (None when it records none)."""
    try:
        return json.loads((schema.metadata or {}).get(_META, b"{}")).get("identity_sha256")
    except (json.JSONDecodeError, AttributeError):
        return None


def _check_part(part: Path, sha: str | None, n_lanes: int | None, columns: tuple | None) -> np.ndarray:
    """The lanes of one result part, after checking it: readable, written for this spec (its recorded hash),
    with the run's columns and lanes in ``[0, n_lanes)``. Anything else is a :class:`StoreError` naming the
    part and the fix."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def bad(what: str) -> StoreError:
        return StoreError(f"{part}: {what}; {_REPAIR.replace('DIR', str(part.parent.parent))}")

    try:
        schema = pq.read_schema(part)
        lanes = np.asarray(pq.read_table(part, columns=["lane"]).column("lane")) if "lane" in schema.names else None
    except (pa.ArrowException, OSError) as e:
        raise bad(f"unreadable result part ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if lanes is None:
        raise bad("a result part without a 'lane' column (not written by poe-jax run, or edited)")
    if sha is not None and _recorded_sha(schema) != sha:
        raise bad("a result part of another spec, or without a spec hash (its recorded hash differs from spec.json's)")
    if columns is not None and tuple(schema.names) != columns:
        missing = sorted(set(columns) - set(schema.names))
        extra = sorted(set(schema.names) - set(columns))
        raise bad(f"its columns differ from the run's (missing {missing}, extra {extra})")
    if lanes.dtype.kind not in "iu" or (lanes.size and (lanes.min() < 0 or (n_lanes is not None
                                                                                and lanes.max() >= n_lanes))):
        raise bad(f"lanes outside 0..{'N' if n_lanes is None else n_lanes - 1} (the grid's lane range)")
    return lanes


def repair(out: str | os.PathLike, sha: str | None = None, n_lanes: int | None = None,
           columns: tuple | None = None) -> list[Path]:
    """Move every result part of ``out`` that fails its checks (unreadable; with ``sha``, ``n_lanes`` and
    ``columns``: of another spec, out of range or of other columns) to ``out/corrupt/``; returns where they
    went. Their lanes are then missing, so the next run recomputes them."""
    import pyarrow.parquet as pq

    out, moved = Path(out), []
    for part in _parts(out):
        try:
            _check_part(part, sha, n_lanes, columns)
            pq.read_table(part)
        except Exception:  # noqa: BLE001 - any failure to read is what repair is for
            dest = out / "corrupt" / part.name
            _inside(out, dest)
            dest.parent.mkdir(exist_ok=True)
            os.replace(part, dest)
            moved.append(dest)
    return moved


def episodes_dir(out: Path) -> Path:
    return Path(out) / "episodes.parquet"


def _inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves (links followed) to a place under ``root``; a run never writes or deletes elsewhere."""
    real, top = Path(path).resolve(), Path(root).resolve()
    if real != top and top not in real.parents:
        raise StoreError(f"{path}: resolves to {real}, outside the run folder {top}; refusing to write or delete there")
    return path


def _create(path: Path):
    """A new file at ``path`` for writing, never through a link: whatever stands there (a link planted by
    someone else, a leftover) is removed first, and the file is created exclusively without following
    links."""
    if path.is_symlink() or path.exists():
        path.unlink()
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644), "wb")


def write_file(path: Path, data: bytes | str, root: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file created exclusively (no link followed), synced,
    then renamed over ``path``, so a link or a hard link at ``path`` is replaced, never written through.
    With ``root``, only under it."""
    path = Path(path)
    if root is not None:
        _inside(root, path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with _create(tmp) as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_file(path: Path, root: Path) -> None:
    """Delete the file at ``path`` (no link followed; a missing one is fine), only under ``root``."""
    path = Path(path)
    _inside(root, path.parent)
    path.unlink(missing_ok=True)


def write_json(path: Path, obj, root: Path | None = None) -> None:
    """Write ``obj`` as JSON atomically (:func:`write_file`); with ``root``, only under it."""
    write_file(path, json.dumps(obj, indent=2, default=str) + "\n", root)


def done_lanes(out: Path) -> np.ndarray:
    """Lane indices recorded in ``out`` (sorted, each once), every part checked against ``out/spec.json``
    (:class:`StoreError` for a part that fails; ``--repair`` moves such parts aside)."""
    out = Path(out)
    parts = _parts(out)
    if not parts:
        return np.zeros(0, np.int64)
    pinned = _read_pinned(out)
    lanes = [_check_part(p, pinned.sha256, pinned.n_lanes, pinned.columns) for p in parts]
    return np.unique(np.concatenate(lanes)).astype(np.int64)


def _differing(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def recorded_count(out: Path) -> int:
    """Episodes in ``out``'s parts, from their footers (unchecked: e.g. what --force would discard)."""
    import pyarrow.parquet as pq

    n = 0
    for part in _parts(out):
        try:
            n += pq.read_metadata(part).num_rows
        except Exception:  # noqa: BLE001 - an unreadable part counts as none
            pass
    return n


class Store:
    """One grid's run folder. ``pin`` checks a spec against the folder, ``write`` adds a part.

    ``root``: the run's ``--out`` (the grid's folder, or the folder above it in a multi-grid run);
    every file the store writes or deletes is checked to lie under it, links followed."""

    def __init__(self, out: str | os.PathLike, primary: bool = True, root: str | os.PathLike | None = None):
        self.out = Path(out)
        self.root = Path(out if root is None else root)
        self.primary = primary  # process 0 of a multi-process run: the one that writes shared files
        self._pinned: dict | None = None
        self.discarded = ""  # what pin(force=True) discarded, in words ("" when nothing)

    @property
    def spec_path(self) -> Path:
        return self.out / "spec.json"

    def pin(self, identity: dict, spec: dict, n_lanes: int, force: bool = False, repair: bool = False) -> None:
        """Check that the folder holds results of this identity (or none). ``force`` discards others (and
        :attr:`discarded` says what); ``repair`` rewrites an unreadable spec.json when every part records this
        identity's hash. The identity is written with the first part (:meth:`write`), not here."""
        _inside(self.root, self.out)
        sha = identity_hash(identity)
        self._pinned = {"identity": identity, "identity_sha256": sha, "spec": spec, "n_lanes": n_lanes,
                        "store": STORE_FORMAT}
        parts = _parts(self.out)
        if self.spec_path.exists() and parts:
            try:
                old, why = _read_pinned(self.out), ""
            except StoreError as e:
                old, why = None, str(e)
            if old is None and repair and all(self._records(p, sha) for p in parts):
                # every part records this spec's hash: spec.json is rewritten from the spec that made them
                if self.primary:
                    write_json(self.spec_path, _sealed({**self._pinned, "columns": self._columns()}), self.root)
            elif old is None or old.sha256 != sha:
                if not force:
                    if old is None:
                        raise StoreError(why)
                    raise SpecError(f"{self.out}: holds {recorded_count(self.out)} episodes of a different spec (fields "
                                    f"that differ: {', '.join(_differing(old.identity, identity))}; see "
                                    f"{self.spec_path}); use another --out, or --force to discard those episodes")
                self._discard()
        elif parts:  # parts without a spec.json: not ours to mix with
            if not force:
                raise SpecError(f"{self.out}: holds {recorded_count(self.out)} episodes without a spec.json; use another "
                                "--out, or --force to discard those episodes")
            self._discard()
        elif self.spec_path.exists() and self.primary:  # a spec.json without results: nothing to keep
            _inside(self.root, self.spec_path).unlink()
        self._clean()

    def repair(self, identity: dict, n_lanes: int) -> list[Path]:
        """Move aside (``out/corrupt/``) the parts this spec's run cannot use: unreadable ones, and, when
        spec.json is this spec's (or unreadable while every readable part records this spec's hash), parts of
        another spec, of other columns or out of the lane range. Parts of a folder that holds another spec
        are left alone (:meth:`pin` then refuses)."""
        sha = identity_hash(identity)
        try:
            pinned = _read_pinned(self.out) if self.spec_path.exists() else None
        except StoreError:
            readable = [p for p in _parts(self.out) if self._records(p, sha) is not None]
            ours = readable and all(self._records(p, sha) for p in readable)
            return repair(self.out, sha if ours else None, n_lanes if ours else None)
        if pinned is None or pinned.identity == identity:
            return repair(self.out, sha, n_lanes, pinned.columns if pinned else None)
        return repair(self.out)

    def _records(self, part: Path, sha: str) -> bool | None:
        """Whether ``part`` records ``sha`` (None when it cannot be read)."""
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(part)
        except Exception:  # noqa: BLE001 - a part that cannot say
            return None
        return _recorded_sha(schema) == sha

    def _columns(self) -> list[str] | None:
        import pyarrow.parquet as pq

        parts = _parts(self.out)
        return list(pq.read_schema(parts[0]).names) if parts else None

    def _clean(self) -> None:
        if self.primary:
            for tmp in episodes_dir(self.out).glob(".tmp-*"):  # parts a killed run left half-written
                _inside(self.root, tmp).unlink(missing_ok=True)

    def _discard(self) -> None:
        n = recorded_count(self.out)
        self.discarded = f"discarded {n} episodes of another spec in {self.out}" if n else ""
        if self.primary:
            self.discard()

    def discard(self) -> None:
        """Delete the folder's results (episodes.parquet, spec.json, summary.json), only under the root."""
        d = episodes_dir(self.out)
        for name in ("spec.json", "summary.json"):  # every path checked before anything is deleted
            if (self.out / name).is_symlink() or (self.out / name).exists():
                _inside(self.root, self.out / name)
        if d.is_symlink() or d.exists():
            _inside(self.root, d.parent)
            if d.is_symlink() or not d.is_dir():
                d.unlink()
            else:
                for part in d.iterdir():
                    _inside(self.root, part)
                shutil.rmtree(d)
        for name in ("spec.json", "summary.json"):
            (self.out / name).unlink(missing_ok=True)

    def done(self) -> np.ndarray:
        """The lanes already recorded here (every part checked, see :func:`done_lanes`)."""
        return done_lanes(self.out)

    def write(self, df) -> Path:
        """Add one part (a DataFrame with a ``lane`` column), recording the spec's hash; the first part also
        writes spec.json (with the parts' columns)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._pinned is not None and not self.spec_path.exists():
            write_json(self.spec_path, _sealed({**self._pinned, "columns": list(df.columns)}), self.root)
        d = episodes_dir(self.out)
        d.mkdir(parents=True, exist_ok=True)
        _inside(self.root, d)
        lanes = df["lane"].to_numpy()
        final = d / f"part-{lanes.min():09d}-{lanes.max():09d}-{len(lanes)}.parquet"
        tmp = d / f".tmp-{os.getpid()}-{final.name}"
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = {**(table.schema.metadata or {}),
                _META: json.dumps({"identity_sha256": (self._pinned or {}).get("identity_sha256")}).encode()}
        try:
            with _create(tmp) as f:
                pq.write_table(table.replace_schema_metadata(meta), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as e:  # the half-written temporary goes; the parts written before stay
            tmp.unlink(missing_ok=True)
            raise OSError(e.errno, e.strerror or str(e), str(final)) from None
        return final

    @contextlib.contextmanager
    def locked(self, index: int = 0):
        """An exclusive lock on the folder (one per process index) for as long as a run writes there; a folder
        that resolves outside the run's root (a linked grid folder) is refused before its lock file is made."""
        _inside(self.root, self.out)
        with lock(self.out, index):
            yield


@contextlib.contextmanager
def lock(folder: Path, index: int = 0):
    """An exclusive lock on ``folder`` (``folder/.lock-INDEX``), refused at once when another run holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(folder) / f".lock-{index}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        if path.is_symlink():
            raise StoreError(f"{path}: a link; a run's lock file is never opened through one (remove it)") from None
        raise
    with os.fdopen(fd, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError(f"{folder}: another poe-jax run is writing here; wait for it to finish or use "
                            "another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def writing(folder: str | os.PathLike) -> bool:
    """Whether a run holds ``folder``'s lock now (checked without creating anything)."""
    try:
        import fcntl
    except ImportError:
        return False
    path = Path(folder) / ".lock-0"
    if not path.is_file() or path.is_symlink():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def grid_dirs(out: str | os.PathLike) -> list[Path]:
    """The run folders under ``out``: ``[out]`` for one grid, ``out/<name>`` for each of several (the names
    in ``out/grids.json``, each checked to be one folder inside ``out``)."""
    from poe_jax.grid.spec import check_grid_name

    out = Path(out)
    index = out / "grids.json"
    if index.exists() and not index.is_file():
        raise StoreError(f"{index}: not a regular file; move it away")
    if not index.is_file():
        return [out]
    try:
        names = json.loads(index.read_text())["grids"]
        if not isinstance(names, list) or not names:
            raise TypeError
        return [out / check_grid_name("grids.json", n) for n in names]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise StoreError(f"{index}: unreadable ({type(e).__name__}: expected {{\"grids\": [names]}}); restore it, "
                         "or run the command that made the folder again") from None
    except SpecError as e:
        raise StoreError(str(e)) from None


def read_spec(d: str | os.PathLike) -> dict:
    """The spec a grid folder was run with (its ``spec.json``'s ``spec``), after checking spec.json."""
    return _read_pinned(Path(d)).spec


def read_episodes(out: str | os.PathLike, serve_prior_blind: bool = True):
    """The recorded episodes of a run (one grid or several), sorted by grid then lane (a pandas DataFrame),
    with a ``grid`` column (the grid's folder name), a ``sample`` column (the grid's execution mode:
    a sample of the composed policy, or its mean), and ``family`` and ``prior_checkpoint``: the grids
    made from one checkpoint set (``zoo:NAME@*``) share a family, one grid per checkpoint (``actor`` names
    the actor's); a grid of one checkpoint is its own family. Every part is checked against its grid's spec.json
    (spec hash, lane range, columns) first; a part that fails is a :class:`StoreError`.

    ``serve_prior_blind``: the episodes of rules that ignore the prior (recorded once, with
    ``prior = "any"``) appear once per prior quality of their grid, so every quality has its
    ``frozen`` baseline; ``False`` gives the store as recorded (one row per lane).

    ``attrs["lanes"]``: ``{grid: (episodes recorded, episodes of the whole grid)}``, so a caller can tell an
    unfinished run (:func:`progress`)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from poe_jax.checkpoints import short_name

    frames, served, duplicates, counts = [], False, 0, {}
    for d in grid_dirs(out):
        parts = _parts(d)
        if not episodes_dir(d).is_dir() or not parts:
            raise FileNotFoundError(f"{d}: no recorded episodes (episodes.parquet); run the grid first")
        pinned = _read_pinned(d)
        for part in parts:
            _check_part(part, pinned.sha256, pinned.n_lanes, pinned.columns)
        df = pa.concat_tables([pq.read_table(p) for p in parts]).to_pandas().sort_values("lane", kind="stable")
        n = len(df)
        df = df.drop_duplicates("lane", keep="first")
        duplicates += n - len(df)
        counts[d.name] = (len(df), pinned.n_lanes)
        df = df.drop(columns="grid", errors="ignore")
        df.insert(0, "grid", d.name)  # grids of one run may share env and actor (other prior, goal parameters)
        df["sample"] = pinned.identity.get("sample") is True  # the execution mode: a sample of the policy, or its mean
        # a grid of a checkpoint set (grid.load_specs): its family, and the prior checkpoint it ran
        family = pinned.spec.get("family")
        df["family"] = family if isinstance(family, str) and family else d.name
        df["prior_checkpoint"] = short_name(str(pinned.spec.get("prior", "")))
        blind = df["prior"].eq(priors.PRIOR_BLIND)
        served |= bool(blind.any())
        if serve_prior_blind and blind.any():
            qualities = pinned.identity["priors"]  # from the hashed identity: an edited list cannot invent a cell
            df = pd.concat([df[~blind], *(df[blind].assign(prior=q) for q in qualities)]).sort_values(
                "lane", kind="stable")
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs["prior_blind_recorded"] = served  # some rule ran once for every prior quality
    out.attrs["duplicate_lanes_dropped"] = duplicates
    out.attrs["lanes"] = counts
    return out


def acted(df) -> np.ndarray:
    """``[len(df)]`` bool: the episode's every executed action was finite (``nonfinite_actions == 0``).
    MuJoCo resets its state on a NaN control, so the others' returns mean nothing."""
    return df["nonfinite_actions"].to_numpy() == 0 if "nonfinite_actions" in df else np.ones(len(df), bool)


def progress(out: str | os.PathLike) -> tuple[int, int]:
    """``(episodes recorded, episodes of the whole run)`` over every grid of ``out`` (parts checked)."""
    done = total = 0
    for d in grid_dirs(out):
        n = done_lanes(d).size if _parts(d) else 0
        pinned = _read_pinned(d) if (d / "spec.json").exists() else None
        done += n
        total += pinned.n_lanes if pinned is not None and pinned.n_lanes is not None else n
    return done, total
