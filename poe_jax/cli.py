"""The ``poe-jax`` command line. Thin: the library does the work."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class _Formatter(argparse.HelpFormatter):
    """--help shows an option's default once: where it has one (not None, not a bare flag) and its help
    does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        quiet = action.default in (None, False, [], argparse.SUPPRESS) or "default" in text.lower()
        return text if quiet or action.option_strings == [] else f"{text} (default: %(default)s)"


def _sub(sub, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose own --help says what it does (``help`` is only the parent's listing)."""
    return sub.add_parser(name, formatter_class=_Formatter, help=text, description=text)


def _build_parser() -> argparse.ArgumentParser:
    from poe_jax import __version__

    p = argparse.ArgumentParser(prog="poe-jax", formatter_class=_Formatter,
                                description="Steer frozen offline-RL actors with goal-conditioned priors: evaluate "
                                            "grids of rules on MuJoCo, report what helps and what hurts.",
                                epilog="--debug anywhere on the line: show tracebacks of errors (otherwise one line)")
    p.add_argument("--version", action="version", version=f"poe-jax {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _sub(sub, "demo", "compose a toy actor and prior with every rule and print a table")
    _sub(sub, "rules", "list the composition rules and their coefficients")
    _sub(sub, "envs", "list environments, backends, observation/action sizes and goals")
    run = _sub(sub, "run", "evaluate a grid (TOML config or --preset) into --out; resumes")
    run.add_argument("config", nargs="?", help="grid TOML (see README)")
    run.add_argument("--preset", help="a shipped preset instead of a config (poe-jax run --list-presets)")
    run.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    run.add_argument("--out", metavar="DIR", help="results directory (episodes.parquet, summary.json); required, "
                     "except with --list-presets")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="fields",
                     help="override one spec field over the config or preset, as a TOML value: --set seeds=[0,1] "
                          "--set episodes=1 --set env=walker2d --set rules.poe=[0.5]; every grid of a multi-grid spec "
                          "gets it; checked like the file; repeatable")
    run.add_argument("--backend", help="physics backend: auto (mjx with an accelerator, else native), native, mjx, or one a plugin registers (checked with the spec)")
    run.add_argument("--chunk-size", type=int, help="lanes per compiled call")
    run.add_argument("--actor", help="override the spec's actor checkpoint (a path, zoo:NAME, or zoo:NAME@* for NAME "
                     "and its replicas: one grid each)")
    run.add_argument("--prior", help="override the spec's prior checkpoint (a path, zoo:NAME, or zoo:NAME@*)")
    run.add_argument("--force", action="store_true",
                     help="discard results of a different spec in --out (the run then says how many it discarded)")
    run.add_argument("--yes", action="store_true",
                     help="start a run the size estimate calls very long (over 50,000 result parts or 2e9 env steps)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="several processes (hosts): jax.distributed's coordinator, the address of process 0; "
                          "every process runs the same command with its --process-id and takes every n-th chunk")
    run.add_argument("--num-processes", type=int, help="with --coordinator: how many processes run the grid")
    run.add_argument("--process-id", type=int, help="with --coordinator: this process's index, 0 .. n-1")
    run.add_argument("--repair", action="store_true",
                     help="move unreadable result parts aside (DIR/corrupt/) and recompute their lanes")
    run.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                     help="import a module (pkg.mod) or .py file first, e.g. one that registers rules, goals, prior "
                          "qualities or metrics; repeatable (the spec's plugins = [...] too)")
    data = _sub(sub, "data", "D4RL-format datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = _sub(data_sub, "generate", "SAC behaviour policies (phase 'policies'), then datasets ('datasets'); "
                              "antmaze-*: the scripted navigator's dataset")
    gen.add_argument("--env", required=True, help="env to generate for (poe-jax envs)")
    gen.add_argument("--out", required=True, help="folder for policies/, sac.log and ENV-KIND.hdf5")
    gen.add_argument("--phase", choices=["all", "policies", "datasets", "probe", "prior-data", "calibration",
                                         "tracking-policy"],
                     default="all",
                     help="'probe': DIR/probe-states/ENV-medium.npz, states for the off-policy scorer; "
                          "'calibration': DIR/probe-states/ENV-prior-heldout.npz, held-out rows of "
                          "DIR/ENV-prior-data.hdf5 on which a run measures its priors' calibration; "
                          "'prior-data': DIR/ENV-prior-data.hdf5, the goal prior's data from the shipped IQL actors "
                          "(and ENV-track*-sac policies); 'tracking-policy': DIR/ENV-trackV-sac, SAC trained to run "
                          "at --target-speed V")
    gen.add_argument("--actor", help="--phase probe: the probe states of this checkpoint (zoo:NAME or a folder) from its "
                     "own rollouts, DIR/probe-states/NAME-own.npz, for an actor whose dataset is not kept")
    gen.add_argument("--maze-data", choices=["scripted", "diverse"], default="scripted",
                     help="the AntMaze envs: 'scripted', the navigator's runs to the maze's goal (ENV-scripted.hdf5); "
                          "'diverse', D4RL's diverse recipe: random starts, random goals, more noise (ENV-diverse.hdf5)")
    gen.add_argument("--target-speed", type=float, default=1.2, help="m/s, for --phase tracking-policy")
    gen.add_argument("--sac-steps", type=int, help="SAC env steps (default 1,000,000; tracking-policy 300,000)")
    gen.add_argument("--time-budget", type=float, help="stop SAC after this many seconds")
    gen.add_argument("--eval-every", type=int, default=20_000, help="SAC env steps between evaluations (and snapshots)")
    gen.add_argument("--size", type=int, default=200_000, help="transitions per dataset")
    gen.add_argument("--medium-fraction", type=float,
                     help="medium policy: the snapshot whose return is closest to this fraction of the expert's "
                          "(default 0.5; why: poe_jax.data.generate.MEDIUM_FRACTION)")
    gen.add_argument("--seed", type=int, default=0, help="seed of SAC and of the data's rollouts")
    gen.add_argument("--allow-weak", action="store_true",
                     help="build datasets even when the best SAC snapshot scores below "
                          "poe_jax.data.generate.MIN_EXPERT_SCORE (an interrupted SAC run)")
    exp = _sub(data_sub, "export", "write a D4RL-format dataset of poe_jax as a Minari dataset (needs poe_jax[minari])")
    exp.add_argument("dataset", help="a D4RL-format .hdf5 (with next_observations, as poe-jax data generate writes)")
    exp.add_argument("--format", choices=["minari"], required=True, help="the dataset format to write")
    exp.add_argument("--env", required=True, help="the poe_jax env it was collected on (hopper, ..., hopper-v5, ...)")
    exp.add_argument("--dataset-id", required=True, help="Minari id, e.g. poe_jax/hopper/medium-v0")
    exp.add_argument("--root", help="Minari datasets folder (default: MINARI_DATASETS_PATH or ~/.minari/datasets)")
    rep = _sub(sub, "report", "DIR/report.md and DIR/figures/*.png from a grid run")
    rep.add_argument("dir", help="a run folder (poe-jax run --out DIR)")
    rep.add_argument("--kl-budget", type=float, default=0.5, help="nats per step for the KL-budget selector")
    rep.add_argument("--states", help="dataset states for the off-policy scorer (.npz with 'observations' or D4RL "
                     ".hdf5; default: the shipped probe states of each actor's dataset)")
    rep.add_argument("--partial", action="store_true",
                     help="report an unfinished run: marked INCOMPLETE, and no claim gets a verdict")
    rep.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                     help="import a module or .py file first (the run's own plugins are never imported from its "
                          "folder: a run folder is data); repeatable")
    sco = _sub(sub, "score", "off-policy scores of a finished run with the actor's critic (run does this at its end); "
                              "stored in each grid's folder for the report")
    sco.add_argument("dir", help="a finished run folder (poe-jax run --out DIR)")
    sco.add_argument("--states", help="dataset states (.npz with 'observations' or D4RL .hdf5; default: the shipped "
                     "probe states of each actor's dataset)")
    sco.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                     help="import a module or .py file first (the run's rules, goals, qualities); repeatable")
    _sub(sub, "zoo", "list the shipped checkpoints (and POE_JAX_ZOO folders) with their scores")
    tr = _sub(sub, "train", "offline training of frozen actors and goal priors")
    tr_sub = tr.add_subparsers(dest="algo", required=True)
    for algo, what in (("iql", "IQL"), ("td3_bc", "TD3+BC"), ("bc", "behaviour cloning")):
        t = _sub(tr_sub, algo, f"{what} (CORL settings) on one or more datasets of one env, trained together")
        t.add_argument("--dataset", required=True, nargs="+", help="D4RL-format .hdf5 file(s) named ENV-KIND.hdf5")
        t.add_argument("--env", required=True, help="env the data were collected on (sizes are checked)")
        t.add_argument("--out", required=True, help=f"folder; writes DATASET-{algo}/ checkpoints")
        t.add_argument("--steps", type=int, default=1_000_000, help="gradient steps")
        t.add_argument("--time-budget", type=float, help="stop after this many seconds (the card records the steps run)")
        t.add_argument("--seed", type=int, default=0, help="training seed (initialisation and batches)")
    t_pr = _sub(tr_sub, "prior", "goal-conditioned prior by AWR on a dataset, all goals")
    t_pr.add_argument("--dataset", required=True, help="D4RL-format .hdf5 with infos/qpos and infos/qvel")
    t_pr.add_argument("--env", required=True, help="env the data were collected on")
    t_pr.add_argument("--out", required=True, help="folder; writes ENV-prior/")
    t_pr.add_argument("--steps", type=int, default=100_000, help="prior updates")
    t_pr.add_argument("--seed", type=int, default=0, help="training seed (and the --fraction draw)")
    t_pr.add_argument("--goals", nargs="+", help="goals to train heads for (default: every goal that applies to the env)")
    t_pr.add_argument("--fraction", type=float, default=1.0,
                      help="share of the dataset's training trajectories to train on (whole trajectories, drawn with "
                           "--seed); the held-out rows are the same as the full prior's")
    port = _sub(sub, "port", "port an actor trained elsewhere to a poe_jax checkpoint")
    port_sub = port.add_subparsers(dest="source", required=True)
    corl = _sub(port_sub, "corl", "a CORL (PyTorch) trainer checkpoint; loaded with weights_only=True")
    corl.add_argument("ckpt", help="CORL .pt file (top-level 'actor'; 'qf'/'vf' for IQL)")
    corl.add_argument("--algo", required=True, choices=["iql", "iql_det", "td3_bc", "bc", "awac", "cql", "sac_n"],
                      help="the CORL algorithm that trained it (decides the actor's layout and its std)")
    corl.add_argument("--env", required=True, help="env the actor was trained on (sizes are checked)")
    corl.add_argument("--obs-stats", help=".npz with 'mean' and 'std' of the training observations")
    corl.add_argument("--det-std", type=float, default=0.1, help="std for deterministic actors (x max_action)")
    corl.add_argument("--dataset", help="dataset name for the card (e.g. hopper-medium-v2)")
    corl.add_argument("--out", required=True, help="checkpoint directory to write")
    corl.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    return p


def _fields(items: list[str]) -> dict:
    """``--set KEY=VALUE`` as spec fields: VALUE is a TOML value (a bare word is a string); a dotted KEY
    (``rules.poe``) sets one entry of a table."""
    import json
    import tomllib

    out: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise UsageError(f"--set: expected KEY=VALUE (a spec field and a TOML value); got {item!r}")
        for text in (value, json.dumps(value.strip())):
            try:
                table = tomllib.loads(f"{key} = {text}")
                break
            except tomllib.TOMLDecodeError:
                continue
        else:
            raise UsageError(f"--set: {key!r} is not a spec field name (letters, digits, '_', dotted for a table entry)")
        for k, v in table.items():
            out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _run(args) -> int:
    from poe_jax import grid

    if args.list_presets:
        from poe_jax.grid.plan import preset_sizes

        rows = preset_sizes()
        w = max(len(r.name) for r in rows)
        print(f"{'preset':<{w}}  grids  episodes  time (measured)")
        for r in rows:
            print(f"{r.name:<{w}}  {r.grids:>5}  {r.episodes:>8,}  {r.measured or 'not measured'}\n{'':<{w}}  {r.about}")
        return 0
    if (args.config is None) == (args.preset is None):
        raise UsageError("run: give a CONFIG.toml or --preset NAME (not both)")
    if not args.out:
        raise UsageError("run: --out DIR is required")
    from poe_jax.runtime import keep_large_allocations

    several = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in several) and any(v is None for v in several):
        raise UsageError("run: --coordinator, --num-processes and --process-id go together (several processes)")
    if args.coordinator is not None and not (args.num_processes >= 1 and 0 <= args.process_id < args.num_processes):
        raise UsageError(f"run: --process-id must be in 0..{args.num_processes - 1} and --num-processes >= 1; got "
                         f"{args.process_id} of {args.num_processes}")
    keep_large_allocations()  # a process setting: the CLI's to make, not the library's (poe_jax.runtime)
    if args.coordinator is not None:  # before anything touches a JAX backend
        import jax

        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
    source = args.config or f"preset:{args.preset}"
    plugins = [str(Path(p).absolute()) if p.endswith(".py") else p for p in args.plugin]
    fields = _fields(args.fields)
    fields.update({k: v for k, v in (("actor", args.actor), ("prior", args.prior)) if v is not None})
    specs = grid.load_specs(source, **fields, plugins=plugins or None)
    opts = dict(force=args.force, progress=not args.quiet, backend=args.backend, chunk_size=args.chunk_size,
                repair=args.repair, yes=args.yes, log=lambda text: print(text, flush=True))
    if len(specs) == 1:
        results = [grid.run(specs[0], args.out, **opts)]
    else:
        name = args.preset or Path(args.config).stem
        results = grid.run_many(specs, args.out, name=name, **opts)
    if args.process_id:  # several processes: process 0 says what ran
        print(f"process {args.process_id}: done")
        return 0
    print(grid.first_screen(args.out))
    print()
    for res in results:
        s = res.summary
        if s.get("discarded"):
            print(f"--force: {s['discarded']}", file=sys.stderr)
        print(f"{s['episodes_recorded']} episodes in {res.out} ({res.computed} computed now, {res.skipped} already there); "
              f"backend {s['backend']}, compile {s['compile_s']:.1f} s, wall {s['wall_s']:.1f} s, "
              f"{s['episodes_per_s'] or 0:.1f} episodes/s, {s['env_steps_per_s'] or 0:.0f} env-steps/s")
    return 0


def _data(args) -> int:
    from poe_jax.data import generate

    if args.data_command == "export":
        from poe_jax import data, envs
        from poe_jax.data import minari_io

        raw = data.read(args.dataset)
        refs = {k: raw.get(f"metadata/{k}") for k in ("ref_min_score", "ref_max_score")}
        if refs["ref_min_score"] is None:  # D4RL's reference scores of the env
            spec = envs.spec(args.env)
            refs = {"ref_min_score": spec.ref_min_score, "ref_max_score": spec.ref_max_score}
        folder = minari_io.export(raw, args.dataset_id, args.env, root=args.root, **refs)
        print(f"wrote Minari dataset {args.dataset_id} in {folder}")
        return 0
    from poe_jax.data import antmaze

    if args.actor is not None:
        if args.phase != "probe":
            raise UsageError("--actor goes with --phase probe (the probe states of a shipped actor's own rollouts)")
        generate.actor_probe_states(args.actor, args.out, seed=args.seed)
        return 0
    if args.env in antmaze.MAZES:  # the mazes' data come from a scripted navigator, not SAC
        make = antmaze.generate_diverse if args.maze_data == "diverse" else antmaze.generate
        make(args.env, args.out, size=args.size, seed=args.seed)
        return 0
    if args.phase == "tracking-policy":
        generate.tracking_policy(args.env, args.target_speed, args.out, steps=args.sac_steps or 300_000,
                                 seed=args.seed, eval_every=args.eval_every)
        return 0
    if args.phase == "prior-data":
        generate.prior_data(args.env, args.out, size=args.size, seed=args.seed)
        return 0
    if args.phase == "calibration":
        generate.calibration_rows(args.env, args.out)
        return 0
    if args.phase in ("all", "policies"):
        generate.policies(args.env, args.out, steps=args.sac_steps or 1_000_000, time_budget=args.time_budget, seed=args.seed,
                          eval_every=args.eval_every)
    frac = {} if args.medium_fraction is None else {"medium_fraction": args.medium_fraction}
    if args.phase in ("all", "datasets"):
        generate.datasets(args.env, args.out, size=args.size, seed=args.seed, allow_weak=args.allow_weak, **frac)
    if args.phase in ("all", "probe"):
        generate.probe_states(args.env, args.out, seed=args.seed, **frac)
    return 0


ZOO_NOTE = ("Data: self-generated rollouts of policies trained by poe_jax (card field data_source), not the D4RL "
            "datasets. Scores: D4RL-normalised with D4RL's reference returns (the same dynamics), mean of "
            "deterministic episodes with its 95% interval. Published: the same algorithm's score on the D4RL dataset "
            "of that name. Notes: the training seed of a replica, a prior's data fraction; for medium-expert data, whether its expert policy "
            "is within 10% of D4RL's expert.")


def _zoo() -> int:
    from poe_jax import checkpoints, grid

    print(ZOO_NOTE)
    head = ("name", "kind", "algo", "env", "dataset", "score", "published (D4RL)", "notes")
    for d in grid.zoo_dirs():
        print(f"\n{d}")
        rows, bad = [], []
        for path in sorted(p for p in d.glob("*") if (p / "card.json").is_file()):
            try:
                card = checkpoints.read_card(path)
            except checkpoints.CheckpointError as e:
                bad.append(f"{path.name}  unreadable: {e}")
                continue
            pub = checkpoints.published(card)
            notes = [f"seed {card.get('seed', '?')} of {card['replica_of']}" if card.get("replica_of") else "",
                     f"{card['variant_of']} on {card['data_fraction']:.0%} of its data"
                     if card.get("variant_of") and isinstance(card.get("data_fraction"), (int, float)) else "",
                     checkpoints.expert_level(card) or ""]
            rows.append((path.name, card["kind"], card.get("algo") or "-", card.get("env") or "-", card.get("dataset") or "-",
                         checkpoints.score_ci(card) or "-",
                         f"{pub[0]} {pub[2]:g} on {pub[1]}" if pub else "-",
                         "; ".join(n for n in notes if n) or "-"))
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
        for r in rows:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
        for line in bad:
            print(line)
    return 0


def _train(args) -> int:
    from poe_jax.train import zoo

    if args.algo in ("iql", "td3_bc", "bc"):
        zoo.train_actors(args.env, [Path(f) for f in args.dataset], Path(args.out), args.steps, args.algo,
                         args.time_budget, args.seed)
    else:
        zoo.train_prior(args.env, Path(args.dataset), Path(args.out), args.steps, args.seed, goals=args.goals,
                        fraction=args.fraction)
    return 0


def _port(args) -> int:
    from poe_jax.checkpoints import read_card
    from poe_jax.port import port_corl

    out = port_corl(args.ckpt, args.algo, args.env, args.out, obs_stats=args.obs_stats, det_std=args.det_std,
                    dataset=args.dataset, overwrite=args.overwrite)
    print(f"wrote {out}")
    if args.algo == "iql" and not read_card(out).get("critic"):
        print(f"note: {args.ckpt} has no IQL critics ('qf' and 'vf'): the actor was ported alone, so the critic "
              "rules and the off-policy scorer will refuse it", file=sys.stderr)
    return 0


class UsageError(ValueError):
    """A command line that cannot run as given (the message says what to give)."""


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can cause and fix: printed as one line, never as a traceback (unless --debug)."""
    from poe_jax.checkpoints import CheckpointError
    from poe_jax.data import DatasetError
    from poe_jax.port import PortError
    from poe_jax.analysis.report import ReportError
    from poe_jax.grid.spec import SpecError
    from poe_jax.grid.store import StoreError
    from poe_jax.train.offline import TrainDiverged

    return (UsageError, SpecError, CheckpointError, DatasetError, PortError, ReportError, StoreError, TrainDiverged,
            OSError)


def _redeliver_interrupt(unraisable, _default=sys.unraisablehook) -> None:
    """A Ctrl-C that lands in a callback Python cannot raise from (e.g. JAX's garbage-collection callback) is
    only printed as "Exception ignored"; raise it again in the main thread instead (from a helper thread:
    raised inside this hook it would be ignored too)."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        import _thread
        import threading
        import time

        threading.Thread(target=lambda: (time.sleep(0.02), _thread.interrupt_main()), daemon=True).start()
        return
    _default(unraisable)


# What each command imports anyway: loaded first, with Ctrl-C held, because a C extension interrupted while it
# initialises prints its own traceback (numpy) or turns the interrupt into "ImportError: initialization failed"
# (tensorstore, under orbax).
_HEAVY = ("numpy", "jax", "flax", "mujoco", "pandas", "pyarrow.parquet", "orbax.checkpoint")
_LIGHT = ("numpy", "jax")


def _import_heavy(argv: list[str]) -> None:
    """Import the command's heavy modules with SIGINT held; a Ctrl-C meanwhile exits 130 at once after them
    (nothing has started)."""
    import importlib
    import signal

    if any(a in ("-h", "--help") for a in argv):
        return
    command = next((a for a in argv if not a.startswith("-")), "")
    held = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    for name in _LIGHT if command in ("demo", "rules", "envs") else _HEAVY:
        importlib.import_module(name)
    if held:
        print("poe-jax: interrupted", file=sys.stderr, flush=True)
        os._exit(130)


def entry() -> None:
    """The ``poe-jax`` console script (and ``python -m poe_jax``): :func:`main`, then exit with its code.

    It leaves without the interpreter's teardown (``os._exit``, after flushing stdout and stderr): after a
    Ctrl-C, XLA may still be compiling on its own threads, and tearing the JAX client down under such a
    compile crashed the process (a segfault after the correct message); and a Ctrl-C during teardown killed
    a finished run's process. Nothing is lost: every file the commands write is complete on disk (written to
    a temporary name, synced, renamed) before the command returns or the interrupt is handled."""
    import signal

    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    sys.unraisablehook = _redeliver_interrupt
    _import_heavy(sys.argv[1:])
    signal.signal(signal.SIGINT, on_sigint)
    try:
        code = main()
    except BaseException as e:
        # a Ctrl-C outside main's own handler, or one a C extension turned into another error while it was
        # being imported (e.g. "ImportError: initialization failed")
        if not (interrupted or isinstance(e, KeyboardInterrupt)) or isinstance(e, SystemExit):
            raise
        print("poe-jax: interrupted", file=sys.stderr)
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # done: a late Ctrl-C changes nothing
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. A known error prints ``poe-jax: error: ...`` (one line) and returns 2; Ctrl-C prints
    one line and returns 130. ``--debug`` (anywhere on the line) shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args = _build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt as e:
        if debug:
            raise
        hint = {"data": "; run the same command again to resume (SAC resumes from its last snapshot)"}
        print(f"poe-jax: {e}" if str(e) else f"poe-jax: interrupted{hint.get(args.command, '')}", file=sys.stderr)
        return 130
    except _known_errors() as e:
        if debug:
            raise
        print(f"poe-jax: error: {_one_line(e)}", file=sys.stderr)
        return 2


# What to do about an OS error, by errno name (the path and the OS's words come first).
_OS_HINTS = {"ENOSPC": "the disk is full; free space or use another --out (what was written is kept)",
             "EDQUOT": "the disk quota is exceeded; free space or use another --out (what was written is kept)",
             "EFBIG": "a file grew past this system's size limit (ulimit -f); raise it or use another --out",
             "EROFS": "the filesystem is read-only; use another --out",
             "ENAMETOOLONG": "the path is too long; use a shorter --out or shorter grid names",
             "EEXIST": "something is already there; move it or use another --out",
             "ENOTDIR": "a file stands where a folder is needed; move it or use another --out",
             "EACCES": "no permission; use another --out", "EPERM": "not permitted; use another --out"}


def _one_line(e: BaseException) -> str:
    """The error in one line; an OS error names its path, the OS's words and what to do."""
    import errno

    if isinstance(e, OSError) and e.filename is not None:
        code = errno.errorcode.get(e.errno or 0, "")
        hint = _OS_HINTS.get(code)
        path = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        return f"{path}: {e.strerror or e}" + (f" [{code}]; {hint}" if hint else (f" [{code}]" if code else ""))
    return " ".join(str(e).split())


def _check_env(args) -> None:
    """``--env`` names a registered env, and the numbers are in range (before minutes of loading data)."""
    from poe_jax.domain import Domain

    numbers = {"steps": Domain(int, lo=1), "sac_steps": Domain(int, lo=1), "time_budget": Domain(float, lo=0, lo_open=True),
               "seed": Domain(int, lo=0, hi=2**32 - 1), "size": Domain(int, lo=1), "eval_every": Domain(int, lo=1),
               "target_speed": Domain(float), "medium_fraction": Domain(float, lo=0, hi=1, lo_open=True, hi_open=True),
               "fraction": Domain(float, lo=0, hi=1, lo_open=True)}
    for name, domain in numbers.items():
        value = getattr(args, name, None)
        if value is not None:
            try:
                domain.check(f"--{name.replace('_', '-')}", value)
            except ValueError as e:
                raise UsageError(str(e)) from None
    env = getattr(args, "env", None)
    if env is None:
        return
    from poe_jax import envs

    if env not in envs.names():
        raise UsageError(f"--env: unknown env {env!r}; known envs: {', '.join(envs.names())}")


def _compile_cache() -> None:
    """JAX's persistent compilation cache for the CLI's process: MJX programs (tens of seconds to compile
    on a CPU) are reused by the next run. JAX does not persist the native backend's programs (they call
    back into MuJoCo C); the runner keeps those for the process. ``POE_JAX_CACHE`` moves it; a cache the
    caller already set is kept."""
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        path = os.environ.get("POE_JAX_CACHE") or str(Path.home() / ".cache" / "poe_jax" / "jax")
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _dispatch(args) -> int:
    if args.command in ("train", "data"):
        _check_env(args)
    if args.command == "run":
        _compile_cache()
    if args.command == "demo":
        from poe_jax.demo import main as demo_main

        return demo_main()
    if args.command == "rules":
        from poe_jax.kernels import rules as kernels

        for r in kernels.RULES.values():
            rng = f"{r.param} in [{r.lo}, {r.hi}]" if r.param else "no coefficient"
            needs = "  (needs the actor's critic)" if r.needs_critic else ""
            print(f"{r.name:14s} {rng}{needs}")
        return 0
    if args.command == "envs":
        from poe_jax import envs
        from poe_jax.envs.goals import goal_params
        from poe_jax.physics import backend_names, resolve_backend

        print(f"backends: {', '.join(b for b in backend_names() if b != 'auto')}; auto -> {resolve_backend('auto')}")
        w = max(len("env"), *(len(n) for n in envs.names()))  # long names (antmaze-medium) keep the columns
        print(f"{'env':{w}s} {'obs':>4s} {'act':>4s} {'frame_skip':>10s} {'max_steps':>9s}  goals")
        for name in envs.names():
            env = envs.make(name, backend="native", nthread=1)
            goals = "; ".join(
                f"{g}({', '.join(f'{k}={v}' for k, v in goal_params(g, name).items())})" for g in envs.goal_names(name)
            )
            print(f"{name:{w}s} {env.obs_size:4d} {env.act_size:4d} {env.spec.frame_skip:10d} {env.max_steps:9d}  {goals}")
        return 0
    if args.command == "report":
        from poe_jax import grid
        from poe_jax.analysis.report import write_report

        if not Path(args.dir).is_dir():
            raise UsageError(f"report: {args.dir} is not a run folder (poe-jax run --out DIR writes one)")
        missing = [d for d in grid.grid_dirs(args.dir) if not (d / "episodes.parquet").exists()]
        if missing:
            raise UsageError(f"report: {missing[0]} has no episodes.parquet (run poe-jax run first)")
        plugins = [str(Path(p).absolute()) if p.endswith(".py") else p for p in args.plugin]
        import time

        from poe_jax.analysis.report import console_lines

        start = time.time() - 1  # file times may be rounded down to the second
        write_report(args.dir, kl_budget=args.kl_budget, states=args.states, partial=args.partial, plugins=plugins)
        print("\n".join(console_lines(args.dir, since=start)))
        return 0
    if args.command == "score":
        from poe_jax.analysis import offpolicy
        from poe_jax.grid.spec import load_plugins

        if not Path(args.dir).is_dir():
            raise UsageError(f"score: {args.dir} is not a run folder (poe-jax run --out DIR writes one)")
        if args.states is not None:
            try:
                offpolicy.load_states(args.states)
            except (ValueError, OSError) as e:
                raise UsageError(f"states (--states): {e}") from None
        load_plugins([str(Path(p).absolute()) if p.endswith(".py") else p for p in args.plugin])
        df, notes = offpolicy.score_run(args.dir, args.states)
        for note in notes:
            print(note)
        print(f"scored {0 if df is None else len(df)} rows in {args.dir}")
        return 0
    if args.command == "zoo":
        return _zoo()
    if args.command == "train":
        return _train(args)
    if args.command == "data":
        return _data(args)
    if args.command == "run":
        return _run(args)
    if args.command == "port":
        return _port(args)
    return 2


if __name__ == "__main__":
    entry()
