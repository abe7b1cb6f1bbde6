"""The run folder: Parquet parts, resume, the pinned spec, locking, and reading episodes back.

``DIR/episodes.parquet`` is a Parquet dataset (a directory; read it with
:func:`read_episodes`, or ``pandas.read_parquet(DIR / "episodes.parquet")``) to which each
finished chunk adds one file, written to a temporary name and renamed, so a killed run
loses at most the chunks in flight. Running again on the same DIR resumes: lanes already
recorded are not recomputed. ``DIR/spec.json`` pins the grid's identity; it is written
with the first result part, so a run that fails before any result leaves nothing that
blocks the next. Another spec on a DIR with results is refused (naming the fields that
differ) unless ``force``. A run holds an exclusive lock on DIR while it writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from poe_jax import priors
from poe_jax.spec import SpecError

__all__ = ["Store", "StoreError", "done_lanes", "episodes_dir", "grid_dirs", "read_episodes", "repair", "write_json"]


class StoreError(ValueError):
    """A run folder cannot be read as it is (e.g. a corrupt result part); the message says the fix."""


def _corrupt(part: Path, err: Exception) -> StoreError:
    return StoreError(f"{part}: unreadable result part ({type(err).__name__}: {' '.join(str(err).split())[:160]}); "
                      f"run the grid again with --repair (poe-jax run ... --out {part.parent.parent} --repair) to move "
                      "it aside and recompute its lanes")


def _parts(out: Path) -> list[Path]:
    return sorted(episodes_dir(out).glob("part-*.parquet"))


def _read_lanes(part: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return np.asarray(pq.read_table(part, columns=["lane"]).column("lane"))
    except (pa.ArrowException, OSError, KeyError) as e:
        raise _corrupt(part, e) from None


def _read_all(d: Path):
    """All parts of ``d`` as one DataFrame; a corrupt part is named, with the fix, not pyarrow's message."""
    import pandas as pd
    import pyarrow as pa

    try:
        return pd.read_parquet(episodes_dir(d))
    except (pa.ArrowException, OSError):
        for part in _parts(d):
            _read_lanes(part)  # raises for the corrupt one
        raise


def repair(out: str | os.PathLike) -> list[Path]:
    """Move every unreadable result part of ``out`` to ``out/corrupt/``; returns where they went.

    Their lanes are then missing, so the next run recomputes them."""
    import pyarrow.parquet as pq

    out, moved = Path(out), []
    for part in _parts(out):
        try:
            pq.read_table(part)
        except Exception:  # noqa: BLE001 - any failure to read is what repair is for
            dest = out / "corrupt" / part.name
            dest.parent.mkdir(exist_ok=True)
            os.replace(part, dest)
            moved.append(dest)
    return moved


def episodes_dir(out: Path) -> Path:
    return Path(out) / "episodes.parquet"


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def done_lanes(out: Path) -> np.ndarray:
    """Lane indices already recorded in ``out`` (sorted, each once)."""
    parts = [_read_lanes(p) for p in _parts(Path(out))]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _differing(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class Store:
    """One grid's run folder. ``pin`` checks a spec against the folder, ``write`` adds a part."""

    def __init__(self, out: str | os.PathLike, primary: bool = True):
        self.out = Path(out)
        self.primary = primary  # process 0 of a multi-process run: the one that writes shared files
        self._pinned: dict | None = None

    @property
    def spec_path(self) -> Path:
        return self.out / "spec.json"

    def pin(self, identity: dict, spec: dict, force: bool = False) -> None:
        """Check that the folder holds results of this identity (or none); ``force`` discards others.

        The identity is written with the first part (:meth:`write`), not here."""
        if self.spec_path.exists():
            try:
                old = json.loads(self.spec_path.read_text())
            except json.JSONDecodeError:
                old = None
            if old is None or old.get("identity") != identity:
                if not force:
                    fields = _differing(old.get("identity", {}), identity) if isinstance(old, dict) else ["(unreadable)"]
                    raise SpecError(f"{self.out}: holds results of a different spec (fields that differ: "
                                    f"{', '.join(fields)}; see {self.spec_path}); use another --out, or --force to "
                                    "discard them")
                if self.primary:
                    self.discard()
        elif done_lanes(self.out).size:  # parts without a spec.json: not ours to mix with
            if not force:
                raise SpecError(f"{self.out}: holds results without a spec.json; use another --out, or --force to "
                                "discard them")
            if self.primary:
                self.discard()
        if self.primary:
            for tmp in episodes_dir(self.out).glob(".tmp-*"):  # parts a killed run left half-written
                tmp.unlink(missing_ok=True)
        self._pinned = {"identity": identity, "spec": spec}

    def discard(self) -> None:
        shutil.rmtree(episodes_dir(self.out), ignore_errors=True)
        self.spec_path.unlink(missing_ok=True)
        (self.out / "summary.json").unlink(missing_ok=True)

    def write(self, df) -> Path:
        """Add one part (a DataFrame with a ``lane`` column); the first part also writes spec.json."""
        if self._pinned is not None and not self.spec_path.exists():
            write_json(self.spec_path, self._pinned)
        d = episodes_dir(self.out)
        d.mkdir(parents=True, exist_ok=True)
        lanes = df["lane"].to_numpy()
        final = d / f"part-{lanes.min():09d}-{lanes.max():09d}-{len(lanes)}.parquet"
        tmp = d / f".tmp-{os.getpid()}-{final.name}"
        df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return final

    @contextlib.contextmanager
    def locked(self, index: int = 0):
        """An exclusive lock on the folder (one per process index) for as long as a run writes there."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        with open(self.out / f".lock-{index}", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SpecError(f"{self.out}: another poe-jax run is writing here; wait for it to finish or use "
                                "another --out") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def grid_dirs(out: str | os.PathLike) -> list[Path]:
    """The run folders under ``out``: ``[out]`` for one grid, ``out/<name>`` for each of several."""
    out = Path(out)
    index = out / "grids.json"
    if index.is_file():
        return [out / n for n in json.loads(index.read_text())["grids"]]
    return [out]


def read_spec(d: str | os.PathLike) -> dict:
    """The spec a grid folder was run with (its ``spec.json``'s ``spec``)."""
    return json.loads((Path(d) / "spec.json").read_text())["spec"]


def read_episodes(out: str | os.PathLike, serve_prior_blind: bool = True):
    """The recorded episodes of a run (one grid or several), sorted by grid then lane (a pandas DataFrame),
    with a ``grid`` column (the grid's folder name) and a ``sample`` column (the grid's execution mode:
    a sample of the composed policy, or its mean). A lane stored twice (e.g. by two runs racing
    before the folder was locked) is read once.

    ``serve_prior_blind``: the episodes of rules that ignore the prior (recorded once, with
    ``prior = "any"``) appear once per prior quality of their grid, so every quality has its
    ``frozen`` baseline; ``False`` gives the store as recorded (one row per lane)."""
    import pandas as pd

    frames, served, duplicates = [], False, 0
    for d in grid_dirs(out):
        if not episodes_dir(d).is_dir():
            raise FileNotFoundError(f"{d}: no recorded episodes (episodes.parquet); run the grid first")
        df = _read_all(d).sort_values("lane", kind="stable")
        n = len(df)
        df = df.drop_duplicates("lane", keep="first")
        duplicates += n - len(df)
        df = df.drop(columns="grid", errors="ignore")
        df.insert(0, "grid", d.name)  # grids of one run may share env and actor (other prior, goal parameters)
        spec = read_spec(d) if (d / "spec.json").is_file() else {}
        df["sample"] = spec.get("sample") is True  # the execution mode: a sample of the policy, or its mean
        blind = df["prior"].eq(priors.PRIOR_BLIND)
        served |= bool(blind.any())
        if serve_prior_blind and blind.any():
            qualities = (spec or read_spec(d))["priors"]
            df = pd.concat([df[~blind], *(df[blind].assign(prior=q) for q in qualities)]).sort_values(
                "lane", kind="stable")
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs["prior_blind_recorded"] = served  # some rule ran once for every prior quality
    out.attrs["duplicate_lanes_dropped"] = duplicates
    return out
