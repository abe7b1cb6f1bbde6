"""Running a grid: plan, chunks of lanes through the compiled program, records into the store.

Lanes are grouped by the program they run (one per (rule, prior quality, noise switches):
:class:`poe_jax.grid.plan.ProgramKey`); each group's lanes go through its compiled program in
chunks (``vmap``, at least :data:`poe_jax.grid.plan.MIN_BATCH` lanes a call). The lane axis of a
chunk is sharded over the local devices (``Mesh`` + ``NamedSharding``); with
``jax.distributed`` each process takes every ``process_count``-th chunk. Results do not
depend on chunking, device count, process count, resumption or on which other cells are in
the grid (:mod:`poe_jax.grid.program`, "Independence from the rest of the grid"). ``DIR/summary.json`` records the spec, package versions, backend,
devices, compile time, wall time and episodes/s.

Records: one row per lane. The episode's totals (returns, length, speed, termination),
its cell (rule, coefficient, its PoE-equivalent alpha, goal, prior quality, shift), and
one column per registered metric (:mod:`poe_jax.grid.metrics`: the episode mean, and the
discounted mean for metrics that have one).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from poe_jax import checkpoints
from poe_jax.grid import metrics
from poe_jax.grid.plan import MIN_BATCH, Plan, resolve
from poe_jax.grid.program import Totals
from poe_jax.grid.spec import GRID_NAME_MAX, GridSpec, SpecError, check_grid_name
from poe_jax.grid.store import Store, acted, done_lanes, episodes_dir, lock, recorded_count, write_json
from poe_jax.kernels import rules as kernels

__all__ = ["Estimate", "RunInterrupted", "RunResult", "compact_table", "estimate", "first_screen", "headline", "records", "run",
           "run_many", "verdict_lines",
           "summary_table", "versions"]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says how many episodes were kept and how to resume."""


class RunResult(NamedTuple):
    out: Path
    computed: int  # episodes computed by this call (this process)
    skipped: int  # episodes found already recorded
    summary: dict


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("poe_jax", "jax", "jaxlib", "flax", "numpy", "mujoco", "mujoco-mjx", "orbax-checkpoint", "pyarrow", "pandas"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# The store's column order: the lane's cell, then the episode's signals (poe_jax.grid.metrics, registration
# order), each followed by the columns derived from it, then where the episode ran.


def records(plan: Plan, cell_ids: np.ndarray, lanes, lane_ids: np.ndarray, tot: Totals):
    """One row per lane (a DataFrame): the lanes' cells, then one column per declared signal
    (:func:`poe_jax.grid.metrics.finalize`), the env's normalised score, the goal's tracked target, and
    where the episode ran."""
    import pandas as pd

    cells = plan.cell_table
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    length = np.asarray(tot.length)
    terminated = np.asarray(tot.terminated, bool)
    signals = metrics.finalize(tot.values, length)
    # the per-state alpha's episode mean for rules whose alpha varies per state, else the fixed one
    signals["alpha_used"] = np.where(cells.adaptive[cell_ids], signals["alpha_used"], cells.alpha_equiv[cell_ids])
    derived = {
        "normalized_score": plan.env.spec.normalized_score(signals["return_task"]),
        "length": length.astype(np.int64),
        # the target of a goal that tracks one (G3's target_speed), NaN for the other goals
        **{param: values[cell_ids] for param, values in cells.targets.items()},
        "terminated": terminated,
    }
    follows = {"return_goal": ["normalized_score", "length"]}  # column -> the derived columns placed after it
    for param, signal in cells.tracked.items():
        follows.setdefault(signal, []).append(param)
    follows.setdefault("x_velocity", []).append("terminated")
    rec = {
        "env": plan.spec.env,
        "actor": plan.actor_path.name,
        "rule": cells.rule[cell_ids],
        "param": np.asarray(lanes.param, np.float64),
        "alpha_equiv": cells.alpha_equiv[cell_ids],
        "goal": cells.goal[cell_ids],
        "prior": cells.prior[cell_ids],
        "shift": cells.shift[cell_ids],
        "seed": np.asarray(lanes.seed, np.int64),
        "episode": np.asarray(lanes.episode, np.int64),
    }
    for col, v in signals.items():
        rec[col] = v
        rec.update({d: derived[d] for d in follows.get(col, ())})
    rec.update({d: v for d, v in derived.items() if d not in rec})
    rec.update({
        # envs whose goal is their termination (AntMaze: EnvSpec.success) record it; others have none
        "success": (pd.array(terminated, dtype="boolean") if plan.env_info.success
                    else pd.array([pd.NA] * len(lane_ids), dtype="boolean")),
        "backend": plan.backend,
        "cell": np.asarray(cell_ids, np.int64),
        "lane": np.asarray(lane_ids, np.int64),
    })
    return pd.DataFrame(rec)


class _Progress:
    """The run's bar (tqdm: rate and ETA). It moves within a chunk too: the program calls it with its
    step index, read as the chunk's fraction done (``t / max_steps``, a lower bound on the episodes done)."""

    def __init__(self, total: int, initial: int, max_steps: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="ep", desc="episodes", smoothing=0.1, dynamic_ncols=True)
        self.base, self.size, self.max_steps = initial, 0, max_steps

    def start(self, size: int) -> None:
        self.size = size

    def __call__(self, t) -> None:  # host side, from jax.debug.callback
        n = self.base + int(self.size * min(int(t), self.max_steps) / self.max_steps)
        if n > self.bar.n:
            self.bar.n = n
            self.bar.refresh()

    def finish(self) -> None:
        self.base += self.size
        self.bar.n = self.base
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _barrier(name: str) -> None:
    """Wait for every process (no-op with one): ``jax.experimental.multihost_utils.sync_global_devices``."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _with(spec: GridSpec, backend: str | None, chunk_size: int | None) -> GridSpec:
    return spec.replace(**{k: v for k, v in (("backend", backend), ("chunk_size", chunk_size)) if v is not None})


def _run_folder(out) -> Path:
    """``out`` as a run folder to create or reuse: a folder, or nothing yet (checked before anything is written)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"out: {out} is a file; give a folder for the run")
    if (out / "card.json").exists():
        raise SpecError(f"out: {out} is a checkpoint folder (card.json); give a folder for the run")
    if len(str(out.absolute())) + GRID_NAME_MAX + 64 > _PATH_MAX:
        raise SpecError(f"out: {out} is too long a path for the run's files ({_PATH_MAX} characters at most)")
    return out


_PATH_MAX = 4000  # characters a run's file paths may take (Linux: 4096)


def run(spec: GridSpec, out: str | os.PathLike, force: bool = False, progress: bool = True,
        backend: str | None = None, chunk_size: int | None = None, repair: bool = False,
        yes: bool = False, log=None) -> RunResult:
    """Evaluate ``spec`` into ``out`` (see :mod:`poe_jax.grid.store` for the folder). Resumable. While it
    runs it holds an exclusive lock on ``out``: a second run into the same folder is refused at once,
    and so is a single-grid run into a multi-grid run's folder.
    ``force``: discard results of another spec in ``out`` (the summary's ``discarded`` says what).
    ``repair``: first move unreadable or foreign result parts aside (``out/corrupt/``); their lanes are
    recomputed. ``yes``: run a grid that :func:`estimate` calls very long. ``log(text)``: where the size
    estimate and the first chunk's timing go (nothing by default).
    Ctrl-C raises :class:`RunInterrupted` once the chunk in flight is dropped (the parts written stay)."""
    plan = resolve(_with(spec, backend, chunk_size))
    out = _run_folder(out)
    est = estimate([plan], out)
    est.check(yes)
    _load_models([plan])
    out.mkdir(parents=True, exist_ok=True)
    with lock(out, jax.process_index()):
        if (out / "grids.json").exists():
            raise SpecError(f"{out}: holds a multi-grid run (grids.json); a single grid needs its own --out")
        _say(log, f"run: {est.text()}")
        _say_chunk(log, plan)
        return _run_plan(plan, out, out, force, progress, repair, log)


def _load_models(plans: list[Plan]) -> None:
    """Read and check every grid's actor and prior (card, shapes, checksum, finite weights) before the run
    folder is created, locked or a result discarded (``force``): a bad checkpoint is refused with
    ``out`` as it was."""
    for p in plans:
        p.actor_full, p.prior  # noqa: B018  (cached on the plan)


def _say_chunk(log, plan: Plan) -> None:
    """The lanes per call an MJX grid chose by itself, and why (:attr:`Plan.chunk`)."""
    if plan.backend == "mjx" and plan.spec.chunk_size is None:
        _say(log, f"{plan.spec.name or 'grid'}: chunk size {plan.chunk[1]}")


def _say(log, text: str) -> None:
    if log is not None and jax.process_index() == 0:
        log(text)


def _run_plan(plan: Plan, out: Path, root: Path, force: bool, progress: bool, repair: bool, log=None) -> RunResult:
    """One grid into ``out`` (under the run's ``root``); the caller holds the run's lock."""
    store = Store(out, primary=jax.process_index() == 0, root=root)
    out.mkdir(exist_ok=True)
    with store.locked(jax.process_index()) if out != root else contextlib.nullcontext():
        n_lanes = plan.n_lanes
        if repair and store.primary:
            store.repair(plan.identity, n_lanes)
        store.pin(plan.identity, plan.spec.to_dict(), n_lanes, force, repair)
        _barrier("poe_jax_grid_spec")
        return _execute(plan, store, progress, log)


def _chunks(groups: list[tuple], chunk_of, done: np.ndarray) -> list[tuple]:
    """This process's chunks ``(key, lane ids, batch)`` of lanes not yet recorded: each program's lanes
    (in lane order) cut into chunks of its batch; every ``process_count``-th chunk of the run is this
    process's."""
    pid, nproc = jax.process_index(), jax.process_count()
    out, i = [], 0
    for key, ids in groups:
        batch = chunk_of(ids.size)
        for lo in range(0, ids.size, batch):
            c = ids[lo:lo + batch]
            c = c[~done[c]]
            if i % nproc == pid and c.size:
                out.append((key, c, batch))
            i += 1
    return out


def _execute(plan: Plan, store: Store, progress: bool, log=None) -> RunResult:
    actor, prior = plan.actor, plan.prior
    table = plan.lanes
    n_lanes = len(table)
    done = np.zeros(n_lanes, bool)
    done[store.done()] = True
    skipped = int(done.sum())
    devices = jax.local_devices()
    per_cell = plan.program_keys()
    keys = list(dict.fromkeys(per_cell))
    lane_key = np.asarray([keys.index(k) for k in per_cell], np.int64)[table.cell]
    groups = [(k, np.flatnonzero(lane_key == i)) for i, k in enumerate(keys)]

    def chunk_of(n: int) -> int:  # the group's batch: at least MIN_BATCH, a multiple of the devices
        size = max(MIN_BATCH, min(plan.chunk_size, n))
        return -(-size // len(devices)) * len(devices)

    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(devices), ("lanes",)),
                                          jax.sharding.PartitionSpec("lanes"))
    mine = _chunks(groups, chunk_of, done)
    bar = _Progress(n_lanes, skipped, plan.spec.max_steps) if (progress and store.primary) else None
    t_start = time.perf_counter()
    try:
        computed, steps, compile_s = _chunks_through(plan, store, actor, prior, table, mine, sharding, bar, log)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        kept = int(done_lanes(store.out).size)
        raise RunInterrupted(f"interrupted: {kept} of {n_lanes} episodes kept in {store.out}; run the same command "
                             "again to resume") from None
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t_start
    _barrier("poe_jax_grid_done")
    rate = lambda x: round(x / max(wall - compile_s, 1e-9), 3) if computed else None  # noqa: E731
    summary = {
        "spec": plan.spec.to_dict(), "identity": plan.identity, "versions": versions(), "backend": plan.backend,
        "actor": _provenance(plan.actor_path.name, plan.actor_card),
        "prior": _provenance(plan.prior_path.name, plan.prior_card),
        "devices": [str(d) for d in jax.devices()], "processes": jax.process_count(), "host": socket.gethostname(),
        "lanes": n_lanes, "episodes_recorded": int(done_lanes(store.out).size), "episodes_computed_this_run": computed,
        "episodes_skipped_as_done": skipped, "compile_s": round(compile_s, 3), "wall_s": round(wall, 3),
        "episodes_per_s": rate(computed), "env_steps_per_s": rate(steps) and round(rate(steps), 1),
        "chunk_size": max(chunk_of(ids.size) for _, ids in groups), "programs": len(keys),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "discarded": store.discarded,
    }
    if store.primary:
        from poe_jax.analysis import calibration  # how well the prior covers held-out actions, per goal and quality

        summary["calibration"] = calibration.of_plan(plan, prior)
        write_json(store.out / "summary.json", summary, store.root)
        _score(plan, store, rescore=computed > 0)
    return RunResult(store.out, computed, skipped, summary)


def _score(plan: Plan, store: Store, rescore: bool = True) -> None:
    """The off-policy scores of a finished grid with the actor's critic (:mod:`poe_jax.analysis.offpolicy`),
    stored with the run for the report; a grid that cannot be scored keeps a note saying why. A finished grid
    resumed with nothing to compute keeps the scores it has (``rescore`` false), e.g. ones made with
    ``poe-jax score --states``."""
    from poe_jax.analysis import offpolicy

    if done_lanes(store.out).size < plan.n_lanes or (not rescore and offpolicy.scored(store.out)):
        return
    try:
        df, note = offpolicy.score_grid(plan, store.out)
    except ValueError as e:  # e.g. a grid without frozen: nothing to score against
        df, note = None, f"{store.out.name}: skipped ({e})"
    offpolicy.store_scores(store.out, df, note, store.root)


def _provenance(name: str, card: dict) -> dict:
    """What a reader of the results must know of a checkpoint: its data and scores, from its card."""
    return {"name": name, "algo": card.get("algo"), "dataset": card.get("dataset"),
            "data_source": card.get("data_source"), "scores": card.get("scores") or [], "published": card.get("published"),
            "seed": card.get("seed"), "replica_of": card.get("replica_of"), "expert_level": checkpoints.expert_level(card)}


class _Ticker:
    """The progress callback a compiled program calls (``on_step``): one object per process, pointed at
    the bar of the run in progress, so a program compiled for one run serves the next."""

    bar = None

    def __call__(self, t) -> None:
        if self.bar is not None:
            self.bar(t)


_TICKER = _Ticker()
_COMPILED: dict = {}  # compiled programs of this process, by what determines them (see _program_id)
_COMPILED_MAX = 64


def _program_id(plan: Plan, key, batch: int, args) -> tuple:
    """Everything a compiled program depends on: the env and its options, the backend, the bound goals, the
    program key, the horizon, the prior-quality noise, the execution mode, the batch, the declared signals, and
    the structure, shapes and dtypes of its arguments (the actor's and prior's weights are arguments, not constants)."""
    sp = plan.spec
    leaves, tree = jax.tree_util.tree_flatten(args)
    return (sp.env, plan.backend, tuple(sorted((k, repr(v)) for k, v in sp.env_options.items())),
            repr(plan.mjx_options) if plan.backend == "mjx" else None,
            tuple((g.name, tuple(sorted((k, repr(v)) for k, v in g.params.items()))) for g in plan.goals),
            key, sp.max_steps, sp.degraded_noise, sp.sample, batch, tree,
            tuple((name, m.reduce, m.discounted, m.transition, id(m.fn)) for name, m in metrics.METRICS.items()),
            tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in leaves))


def _on_step(plan: Plan):
    """The in-program progress callback: on the native backend (whose physics is a host call anyway); none on
    MJX, whose program then runs on the device without a host round trip (its bar moves per chunk)."""
    return None if plan.backend == "mjx" else _TICKER


def _compiled(plan: Plan, key, batch: int, actor, prior, lanes):
    """The compiled program for ``key`` at this batch: from this process's cache, else compiled now (and
    kept). Returns ``(executable, compile seconds)``. Grids of one run that share an env and differ in their
    actor (medium, medium-expert) reuse each other's programs."""
    pid = _program_id(plan, key, batch, (actor, prior, lanes))
    if pid in _COMPILED:
        return _COMPILED[pid], 0.0
    t0 = time.perf_counter()
    exe = jax.jit(plan.program(key, on_step=_on_step(plan))).lower(actor, prior, lanes).compile()
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[pid] = exe
    return exe, time.perf_counter() - t0


def _chunks_through(plan: Plan, store: Store, actor, prior, table, mine, sharding, bar, log=None):
    """Each chunk of lanes through its program into the store; returns (episodes, env steps, compile s).
    After the first chunk, ``log`` gets the time it took and what that projects for the rest."""
    compile_s, computed, steps = 0.0, 0, 0
    _TICKER.bar = bar
    try:
        for i, (key, idx, batch) in enumerate(mine):
            t0 = time.perf_counter()
            c, e, s = _chunk_through(plan, store, actor, prior, table, key, idx, batch, sharding, bar)
            compile_s, computed, steps = compile_s + c, computed + e, steps + s
            if i == 0 and len(mine) > 1:
                run_s = time.perf_counter() - t0 - c
                rest = sum(ix.size for _, ix, _ in mine[1:])
                eta = run_s / max(e, 1) * rest
                _say(log, f"first chunk: {e} episodes in {run_s:.1f} s (+ {c:.1f} s compiling); the other {rest:,} "
                          f"take about {_duration(eta)} (+ compiling {len({k for k, _, _ in mine}) - 1} more programs)")
    finally:
        _TICKER.bar = None
    return computed, steps, compile_s


def _chunk_through(plan: Plan, store: Store, actor, prior, table, key, idx, batch, sharding, bar):
    """One chunk through its program into the store; returns (compile s, episodes, env steps)."""
    padded = np.concatenate([idx, np.full(batch - idx.size, idx[-1])])
    # the program holds one rule and one prior quality: its lanes index them at 0
    lanes = table.lanes.take(padded)
    lanes = lanes._replace(rule=np.zeros_like(lanes.rule), quality=np.zeros_like(lanes.quality))
    lanes = jax.device_put(lanes, sharding)
    if bar is not None:
        bar.start(idx.size)
    exe, compile_s = _compiled(plan, key, batch, actor, prior, lanes)
    tot = jax.tree_util.tree_map(lambda v: np.asarray(v)[: idx.size], jax.device_get(exe(actor, prior, lanes)))
    store.write(records(plan, table.cell[idx], table.lanes.take(idx), table.lane[idx], tot))
    if bar is not None:
        bar.finish()
    return compile_s, idx.size, int(np.sum(tot.length))


def run_many(specs: Sequence[GridSpec], out: str | os.PathLike, name: str = "", force: bool = False,
             progress: bool = True, backend: str | None = None, chunk_size: int | None = None,
             repair: bool = False, yes: bool = False, log=None) -> list[RunResult]:
    """Run several grids (e.g. one per env, from :func:`poe_jax.grid.spec.load_specs`) into ``out/<grid name>/``.

    Every grid is checked and resolved, and the whole run sized (:func:`estimate`), before the first one
    runs. Grid names are single folder names (:func:`poe_jax.grid.spec.check_grid_name`): nothing is written
    outside ``out``. ``out/grids.json`` lists the grids and pins the folder as a multi-grid run: another
    list on the same ``out`` is refused unless ``force``, a single-grid run into it is refused, and this
    run holds ``out``'s lock throughout. ``out/summary.json`` holds each grid's summary and the total wall
    time. :func:`poe_jax.grid.store.read_episodes` on ``out`` reads them all. Resumable like :func:`run`.
    """
    import json

    specs = list(specs)
    for i, sp in enumerate(specs):
        check_grid_name(f"grids[{i}].name", sp.name)
    names = [sp.name for sp in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup or not specs:
        raise SpecError(f"grids: duplicate grid names {dup}" if dup else "grids: no grids to run")
    plans = [resolve(_with(sp, backend, chunk_size)) for sp in specs]
    out = _run_folder(out)
    est = estimate(plans, out)
    est.check(yes)
    _load_models(plans)
    index = {"name": name or out.name, "grids": names}
    index_path = out / "grids.json"
    out.mkdir(parents=True, exist_ok=True)
    with lock(out, jax.process_index()):
        if (out / "spec.json").exists() or episodes_dir(out).exists():
            raise SpecError(f"{out}: holds a single-grid run; use another --out for several grids")
        if index_path.exists():
            try:
                old = json.loads(index_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                old = None
            if old != index and not force:
                raise SpecError(f"{out}: holds a run of other grids (see {index_path}); use another --out, or --force "
                                "(grids of the same name and another spec are then discarded, the others kept)")
        if jax.process_index() == 0:
            write_json(index_path, index, out)
        _say(log, f"run: {len(plans)} grids, {est.text()}")
        for p in plans:
            _say_chunk(log, p)
        t0 = time.perf_counter()
        results = [_run_plan(plan, out / plan.spec.name, out, force, progress, repair, log) for plan in plans]
        if jax.process_index() == 0:
            subs = {r.out.name: r.summary for r in results}
            first = results[0].summary
            write_json(out / "summary.json", {
                "spec": {"name": index["name"], "grids": {k: v["spec"] for k, v in subs.items()}},
                "versions": first["versions"], "backend": first["backend"], "devices": first["devices"],
                "host": first["host"], "wall_s": round(time.perf_counter() - t0, 3),
                "episodes_recorded": sum(v["episodes_recorded"] for v in subs.values()),
                "grids": subs,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }, out)
    return results


class Estimate(NamedTuple):
    """What a run will take, before it starts: its episodes, result parts, disk and memory, and env steps."""

    out: Path
    lanes: int  # episodes of the whole run
    todo: int  # not recorded yet (an estimate: parts are not checked here)
    parts: int
    disk_bytes: int
    memory_bytes: int
    env_steps: int

    def text(self) -> str:
        return (f"{self.lanes:,} episodes ({self.todo:,} to run) in {self.parts:,} result parts, about "
                f"{_size(self.disk_bytes)} on disk, up to {self.env_steps:,} env steps")

    def check(self, yes: bool = False) -> None:
        """Refuse in one line a run that cannot fit in memory or on disk, or a very long one without ``yes``."""
        free_disk = shutil.disk_usage(_existing(self.out)).free
        if self.memory_bytes > _memory() // 2:
            raise SpecError(f"grid: {self.lanes:,} episodes need about {_size(self.memory_bytes)} of memory for their "
                            f"lane table, more than half of this machine's {_size(_memory())}; shrink the grid "
                            "(episodes, seeds, coefficients) or split it")
        if self.disk_bytes > free_disk:
            raise SpecError(f"grid: {self.text()}, more than the {_size(free_disk)} free under {self.out}; free some "
                            "space, use another --out, or shrink the grid")
        if not yes and (self.parts > LONG_PARTS or self.env_steps > LONG_STEPS):
            raise SpecError(f"grid: {self.text()}: a very long run; add --yes (yes=True) to start it, or raise "
                            "--chunk-size to write fewer parts")


LONG_PARTS = 50_000  # result parts beyond which a run asks for --yes
LONG_STEPS = 2_000_000_000  # env steps beyond which a run asks for --yes (about a day at 20k steps/s)
_BYTES_PER_EPISODE = 200  # Parquet: parts of 24 and 72 episodes of the quickstart took 21.7 and 28.3 KB
_BYTES_PER_PART = 20_000  # a part's schema, footer and per-column overhead
_LANE_BYTES = 96  # the lane table and the done mask, per lane


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def _memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def estimate(plans: Sequence[Plan], out: str | os.PathLike) -> Estimate:
    """The size of running ``plans`` into ``out`` (:class:`Estimate`), from the plans alone: nothing is built,
    loaded or written. Parts: each program's lanes in chunks of the grid's batch."""
    lanes = todo = parts = steps = 0
    out = Path(out)
    multi = len(plans) > 1
    for plan in plans:
        n = plan.n_lanes
        per_program = plan.n_lanes_per_program()
        batch = max(MIN_BATCH, plan.chunk_size)
        parts += sum(-(-k // batch) for k in per_program)
        lanes += n
        steps += n * plan.spec.max_steps
        todo += max(0, n - recorded_count(out / plan.spec.name if multi else out))
    return Estimate(out, lanes, todo, parts, lanes * _BYTES_PER_EPISODE + parts * _BYTES_PER_PART,
                    max(plan.n_lanes for plan in plans) * _LANE_BYTES, steps)


def summary_table(df) -> str:
    """One screen: mean ± s.e. goal return and normalised score per (goal, prior, shift, rule, param)."""
    if df["env"].nunique() > 1 or df["actor"].nunique() > 1:
        return "\n\n".join(f"== {env} / {actor}\n" + summary_table(sub)
                           for (env, actor), sub in df.groupby(["env", "actor"], sort=False))
    kept = df[acted(df)]
    note = ""
    if len(kept) < len(df):
        bad = df.loc[df.index.difference(kept.index)]
        which = sorted({f"{r}({p:g})" for r, p in zip(bad["rule"], bad["param"])})
        note = (f"\nEXCLUDED: {len(bad)} episodes executed a NaN or inf action ({', '.join(which)}); MuJoCo "
                "resets its state on one, so their returns mean nothing and are left out of the table above")
        df = kept
        if df.empty:
            return note.strip()
    g = df.groupby(["goal", "prior", "shift", "rule", "param"], sort=False)
    agg = g.agg(n=("return_goal", "size"), goal_mean=("return_goal", "mean"), goal_se=("return_goal", "sem"),
                score=("normalized_score", "mean"), kl=("kl_to_frozen", "mean"), sv=("support_violation", "mean"))
    w = max(10, *(len(s) for s in df["shift"].unique()))  # shift names in full
    lines = [f"{'goal':12s} {'prior':8s} {'shift':{w}s} {'rule':13s} {'param':>6s} {'n':>4s} "
             f"{'goal return':>18s} {'score':>7s} {'KL':>8s} {'viol':>5s}"]
    for (goal, prior, shift, rule, param), r in agg.iterrows():
        se = f"{r.goal_se:6.1f}" if np.isfinite(r.goal_se) else f"{'–':>6s}"  # one episode: no standard error
        lines.append(f"{goal:12s} {prior:8s} {shift:{w}s} {rule:13s} {param:6.3g} {int(r.n):4d} "
                     f"{r.goal_mean:10.1f} ± {se} {r.score:7.1f} {r.kl:8.3g} {r.sv:5.2f}")
    lines.append("n: episodes; goal return: mean ± s.e. over episodes; score: mean D4RL-normalised task score; "
                 "KL: mean per-step KL(composed || frozen); viol: fraction of steps outside the actor's support "
                 "(density < 0.01)")
    return "\n".join(lines) + note


def _kept(df, prior: str) -> dict:
    """``{(rule, param): mean over goals of (rule's mean goal return / frozen's)}`` under ``prior``."""
    frozen = df[df["rule"] == "frozen"].groupby("goal")["return_goal"].mean()
    sub = df[(df["prior"] == prior) & (df["rule"] != "frozen")]
    if sub.empty:
        return {}
    means = sub.groupby(["rule", "param", "goal"], sort=False)["return_goal"].mean().reset_index()
    base = means["goal"].map(frozen.to_dict()).astype(float)
    means = means.assign(kept=means["return_goal"] / base)[base.abs() > 0]
    return means.groupby(["rule", "param"], sort=False)["kept"].mean().to_dict()


def headline(df, out: str | os.PathLike) -> str:
    """Two or three lines after the summary table: what steering did to frozen's goal return, and where
    the tests are. Empty when the grid has no frozen lanes (nothing to compare with). Episodes that
    executed a non-finite action are left out, as in the table."""
    df = df[acted(df)]
    if "frozen" not in set(df["rule"]) or df["env"].nunique() > 1 or df["actor"].nunique() > 1:
        return f"Paired tests, Holm-corrected labels and the study's claims: poe-jax report {out}"
    lines = []
    for prior, what in (("random", "Under the random prior"), ("trained", "With the trained prior")):
        kept = _kept(df, prior)
        if not kept:
            continue
        by_rule: dict[str, list] = {}
        for (rule, param), k in kept.items():
            by_rule.setdefault(rule, []).append((param, k))
        parts = []
        for rule, vals in by_rule.items():
            ks = [k for _, k in vals]
            ps = [p for p, _ in vals]
            span = f"{100 * min(ks):.0f}%" if len(ks) == 1 else f"{100 * min(ks):.0f}-{100 * max(ks):.0f}%"
            coef = "" if len(ps) == 1 else f" ({min(ps):g}-{max(ps):g})"
            parts.append(f"{rule}{coef} {span}")
        lines.append(f"{what}, the share of frozen's goal return each rule kept (mean over goals): "
                     + "; ".join(parts) + ".")
    lines.append(f"Whether each change is real (paired tests, Holm), where steering hurts, and the study's claims: "
                 f"poe-jax report {out}")
    return "\n".join(lines)


# ------------------------------------------------------------------ the first screen
SCREEN_WIDTH = 100  # the first screen's tables fit this many columns


def _grid_header(name: str, summary: dict, df) -> list[str]:
    """What ran: env, actor (with its data source), prior, and the grid's size."""
    spec = summary.get("spec", {})
    actor, prior = summary.get("actor") or {}, summary.get("prior") or {}
    source = str(actor.get("data_source", "")).split(";")[0].split(" (")[0]
    n = lambda k, what: f"{len(spec.get(k, []))} {what}"  # noqa: E731
    shape = (f"{n('rules', 'rule(s)')} ({df[['rule', 'param']].drop_duplicates().shape[0]} with their coefficients) × "
             f"{n('goals', 'goal(s)')} × {n('priors', 'prior quality(ies)')} × {n('shifts', 'shift(s)')} × "
             f"{n('seeds', 'seed(s)')} × {spec.get('episodes', '?')} episode(s) = {summary.get('episodes_recorded', '?')} "
             f"episodes of {spec.get('max_steps', '?')} steps")
    return [f"{name}: env {spec.get('env', '?')}, actor {actor.get('name', '?')}, prior {prior.get('name', '?')}",
            f"  actor's data: {actor.get('dataset', '?')}" + (f", {source}" if source else ""),
            f"  {shape}; {'sampled actions' if spec.get('sample') else 'the composed mean executed'}"]


def _columns(df) -> tuple[list, dict]:
    """The table's (rule, param) columns in spec order, and ``{kept: [folded, ...]}`` for columns that execute
    another column's mean (``Rule.twin``: kl_reg at β beside poe at α = β/(1+β)), when the grid executed the
    mean (a sample differs)."""
    cols = list(dict.fromkeys(zip(df["rule"], df["param"])))
    sampled = bool(df["sample"].iloc[0]) if "sample" in df and len(df) else False
    by_key = {(r, round(float(p), 6)): (r, p) for r, p in cols}
    kept, folded = [], {}
    for rule, param in cols:
        spec = kernels.RULES.get(rule)
        twin = by_key.get(spec.twin(param)) if spec is not None and not sampled else None
        if twin is None or twin == (rule, param):
            kept.append((rule, param))
        else:
            folded.setdefault(twin, []).append((rule, param))
    return kept, folded


def _label(col) -> str:
    rule, param = col
    return rule if rule in ("frozen", "prior_only") else f"{rule} {param:g}"


def compact_table(df) -> list[str]:
    """Goals × prior qualities × shifts as rows, rules and coefficients as columns: frozen's mean goal return,
    and each rule's as a percentage of it; blocks of columns that fit :data:`SCREEN_WIDTH`."""
    cols, folded = _columns(df)
    means = df.groupby(["goal", "prior", "shift", "rule", "param"], sort=False)["return_goal"].mean()
    rows = list(dict.fromkeys(zip(df["goal"], df["prior"], df["shift"])))
    rows = [r for r in rows if r[1] != "any"]
    wg, wp, ws = (max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(("goal", "prior", "shift")))
    row_label = lambda g, p, s: f"{g:<{wg}}  {p:<{wp}}  {s:<{ws}}"  # noqa: E731
    lw = wg + wp + ws + 4
    names = [_label(c) + ("=" + "=".join(_label(f) for f in folded[c]) if c in folded else "") for c in cols]
    w = max(8, *(min(len(n), 18) + 1 for n in names))
    per_block = max(1, (SCREEN_WIDTH - lw) // w)

    def base(g, p, s):  # frozen's mean goal return in the row (recorded once for every prior quality)
        return means.get((g, "any", s, "frozen", 0.0), means.get((g, p, s, "frozen", 0.0), np.nan))

    lines = []
    for lo in range(0, len(cols), per_block):
        block = list(range(lo, min(lo + per_block, len(cols))))
        lines.append(row_label("goal", "prior", "shift") + "".join(f"{names[i][:w - 1]:>{w}}" for i in block))
        for g, p, s in rows:
            b = base(g, p, s)
            cells = []
            for i in block:
                rule, param = cols[i]
                v = means.get((g, p, s, rule, param), means.get((g, "any", s, rule, param), np.nan))
                cells.append(f"{v:.0f}" if rule == "frozen" else "-" if not np.isfinite(v) or not b else
                             f"{100 * v / abs(b):.0f}%")
            lines.append(row_label(g, p, s) + "".join(f"{c:>{w}}" for c in cells))
        lines.append("")
    lines.append("frozen: its mean goal return; every other column: the rule's mean goal return as a % of frozen's "
                 "(same goal, shift and seeds).")
    for c, fs in folded.items():
        gap = max((abs(means.get((g, p, s, *f), np.nan) - means.get((g, p, s, *c), np.nan)) / abs(base(g, p, s))
                   for g, p, s in rows for f in fs), default=np.nan)
        lines.append(f"{_label(c)} = {' = '.join(_label(f) for f in fs)}: one policy (kl_reg at β executes poe's mean "
                     f"at α = β/(1+β)), shown once; its episodes differ only by float rounding, which 1000 steps "
                     f"amplify: at most {100 * gap:.0f} percentage point(s) apart in this table.")
    return lines


def _seed_gain(df, rule, param, prior, shift):
    """Per seed, the mean over goals of (rule − frozen) / |frozen's mean|, and each goal's share of it."""
    fz = df[(df["rule"] == "frozen") & (df["shift"] == shift)]
    x = df[(df["rule"] == rule) & (df["param"] == param) & (df["prior"] == prior) & (df["shift"] == shift)]
    f = fz.groupby(["goal", "seed"])["return_goal"].mean()
    r = x.groupby(["goal", "seed"])["return_goal"].mean()
    both = r.index.intersection(f.index)
    if not len(both):
        return None, {}
    base = fz.groupby("goal")["return_goal"].mean().abs()
    rel = ((r[both] - f[both]) / base.reindex(both.get_level_values(0)).to_numpy()).rename("rel").reset_index()
    rel = rel[np.isfinite(rel["rel"])]
    per_seed = rel.groupby("seed")["rel"].mean()
    per_goal = rel.groupby("goal")["rel"].mean() / max(1, rel["goal"].nunique())
    return per_seed.to_numpy(), per_goal.to_dict()


def verdict_lines(df) -> list[str]:
    """Per shift and prior quality, what steering kept or gained (the best rule, a 95% t-interval over seeds
    of the share of frozen's goal return, averaged over goals) and where it hurt (interval below 100%); the
    goal that drives a gain is named. Untested for multiplicity: `poe-jax report` has the Holm-adjusted labels."""
    from scipy import stats as sps

    out = []
    shifts = list(dict.fromkeys(df["shift"]))
    for shift in shifts:
        for prior in [p for p in dict.fromkeys(df["prior"]) if p != "any"]:
            res = []
            kept, folded = _columns(df)  # one policy under two names is judged once
            for rule, param in kept:
                if rule == "frozen":
                    continue
                seeds, goals = _seed_gain(df, rule, param, prior, shift)
                if seeds is None or len(seeds) < 2:
                    continue
                m, se = float(seeds.mean()), float(seeds.std(ddof=1) / np.sqrt(len(seeds)))
                h = float(sps.t.ppf(0.975, len(seeds) - 1) * se)
                res.append(((rule, param), m, m - h, m + h, goals))
            if not res:
                continue
            where = f" under {shift}" if len(shifts) > 1 else ""
            best = max(res, key=lambda r: r[1])
            (rule, param), m, lo, hi, goals = best
            drive = ""
            if lo > 0 and goals:  # a gain the interval supports: name the goal that drives it
                g, share = max(goals.items(), key=lambda kv: kv[1])
                if share > 2 / 3 * m and len(goals) > 1:
                    drive = f", mostly from {g} (+{100 * share:.0f} points)"
            name = lambda c: "=".join(_label(x) for x in [c, *folded.get(c, [])])  # noqa: E731
            line = (f"{prior} prior{where}: best {name((rule, param))} kept {100 * (1 + m):.0f}% of frozen's goal "
                    f"return [95% CI {100 * (1 + lo):.0f}, {100 * (1 + hi):.0f}]{drive}")
            hurt = sorted((r for r in res if r[3] < 0), key=lambda r: r[1])
            line += ("; hurt (CI below 100%): " + ", ".join(f"{name(c)} {100 * (1 + v):.0f}%" for c, v, *_ in hurt[:4])
                     + (f" and {len(hurt) - 4} more" if len(hurt) > 4 else "")) if hurt else "; none hurt (CI below 100%)"
            out.append(line + ".")
    return out


def first_screen(out: str | os.PathLike) -> str:
    """What ``poe-jax run`` prints at the end: per grid, what ran (env, actor and its data source, prior, size),
    the compact table, and the verdict lines; then where the tests are."""
    from poe_jax.grid.store import grid_dirs, read_episodes

    out = Path(out)
    every = read_episodes(out)
    ok = acted(every)
    df = every[ok]
    lines = []
    for d in grid_dirs(out):
        name = d.name
        sub = df[df["grid"] == name]
        try:
            summary = json.loads((d / "summary.json").read_text())
        except (OSError, ValueError):
            summary = {}
        lines += _grid_header(name, summary, sub) + [""]
        bad = every[(every["grid"] == name) & ~ok].drop_duplicates("lane")
        if len(bad):
            which = sorted({f"{r}({p:g})" for r, p in zip(bad["rule"], bad["param"])})
            lines += [f"EXCLUDED: {len(bad)} episodes executed a NaN or inf action ({', '.join(which)}); MuJoCo resets "
                      "its state on one, so their returns mean nothing and are left out below", ""]
        if "frozen" not in set(sub["rule"]):
            lines += ["(no frozen lanes: nothing to compare with)", ""]
            continue
        verdicts = verdict_lines(sub)
        lines += compact_table(sub) + [""] + verdicts + (
            ["(\"best\" is chosen on these seeds, so its interval is optimistic; the report's cross-fitted oracle "
             "chooses on half the seeds and tests on the other half.)"] if verdicts else []) + [""]
    lines.append(f"Paired tests with Holm-adjusted labels, where steering hurts, and the study's claims: "
                 f"poe-jax report {out}")
    return "\n".join(lines)
