"""GPU throughput of the grid against MJX physics alone, in one process.

For each env (hopper, halfcheetah), lane count (4,096, 16,384, 65,536) and MJX implementation
("jax", and "warp" where ``mujoco_warp`` imports), it measures:

* ``physics``  -- MJX alone: ``vmap(env.step)`` with random controls, ``--steps`` steps in one
  compiled loop (the ceiling the grid is compared with);
* ``frozen``   -- ``poe_jax.grid.run`` with the frozen actor only;
* ``poe``      -- the grid with ``poe`` (alpha 0.5) and the goal prior;
* ``paper``    -- the grid with the ``paper`` preset's rules (frozen, prior_only, additive and poe at
  five alphas, poe_adaptive);

each with its compile time, env-steps/s and peak device memory. The headline per (env, lanes) is
``grid / physics``: the share of the physics' throughput the whole grid keeps. Termination is off,
so every lane runs the full horizon; actor and prior have IQL's sizes with random weights
(throughput does not depend on them). ``XLA_FLAGS=--xla_gpu_triton_gemm_any=true`` is set unless
``XLA_FLAGS`` is given. The env's MJX solver defaults (``poe-jax envs``; ``mjx_options``) apply.

``--budget-s`` stops starting new measurements once that many seconds have passed (each measured
one is kept, the rest are listed as skipped), so one device call stays inside its limit.
``--smoke`` runs the same code on the CPU in seconds (native backend, 8 lanes, 10 steps, hopper):
a test keeps the script working.

Writes ``OUT/gpu-throughput-HOST.json`` (with the machine) and prints a table.

usage: python benchmarks/gpu_throughput.py [--smoke] [--out DIR] [--envs ...] [--lanes ...] [--steps N]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_gpu_triton_gemm_any=true")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compose_throughput import machine, write_record  # noqa: E402

from poe_jax import checkpoints, envs, grid, nets  # noqa: E402
from poe_jax.runtime import keep_large_allocations  # noqa: E402

ALPHAS = [0.1, 0.25, 0.5, 0.75, 0.9]
MODES = {
    "frozen": {"frozen": []},
    "poe": {"poe": [0.5]},
    "paper": {"frozen": [], "prior_only": [], "additive": ALPHAS, "poe": ALPHAS, "poe_adaptive": [0.05, 0.5]},
}


def peak_memory() -> int | None:
    """Peak bytes in use on the first device since the process started (None where the backend does not say)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def make_ckpts(d: Path, env_name: str) -> None:
    env = envs.make(env_name, backend="native")
    actor = nets.init_actor(nets.ActorSpec("iql", env.obs_size, env.act_size), jax.random.key(0))
    prior = nets.init_prior(nets.PriorSpec(env.obs_size, env.act_size, ("G1_speed", "G2_balanced", "G3_target")),
                            jax.random.key(1))
    checkpoints.save(d / f"{env_name}-actor", actor, env=env_name, overwrite=True)
    checkpoints.save(d / f"{env_name}-prior", prior, env=env_name, overwrite=True)


def bench_physics(env_name: str, lanes: int, steps: int, backend: str, impl: str) -> dict:
    """MJX (or native) physics alone: random controls, ``steps`` steps of ``lanes`` lanes in one compiled loop."""
    opts = {}
    if backend == "mjx":
        from poe_jax.envs.registry import mjx_defaults
        from poe_jax.physics.options import MjxOptions

        opts = {"options": MjxOptions(**{**mjx_defaults(env_name), "impl": impl}).check()}
    env = envs.make(env_name, backend=backend, terminate_when_unhealthy=False, **opts)
    step = jax.vmap(env.step)

    @jax.jit
    def run(key):
        state = jax.vmap(env.reset)(jax.random.split(key, lanes))

        def body(i, s):
            a = jax.random.uniform(jax.random.fold_in(key, i), (lanes, env.act_size), minval=-1.0, maxval=1.0)
            return step(s, a)
        return jax.lax.fori_loop(0, steps, body, state).obs.sum()

    t = time.perf_counter()
    run.lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(run(jax.random.key(0)))  # warm-up
    t = time.perf_counter()
    jax.block_until_ready(run(jax.random.key(1)))
    run_s = time.perf_counter() - t
    return {"compile_s": round(compile_s, 3), "run_s": round(run_s, 4),
            "env_steps_per_s": round(lanes * steps / run_s, 1), "peak_bytes": peak_memory()}


def bench_grid(d: Path, env_name: str, lanes: int, steps: int, backend: str, impl: str, rules: dict) -> dict:
    per_seed = sum(max(1, len(v)) for v in rules.values())  # lanes per seed: one per (rule, coefficient)
    seeds = max(1, lanes // per_seed)
    spec = grid.GridSpec(env=env_name, actor=str(d / f"{env_name}-actor"), prior=str(d / f"{env_name}-prior"),
                         rules=rules, seeds=tuple(range(seeds)), episodes=1, max_steps=steps, backend=backend,
                         chunk_size=seeds * per_seed, env_options={"terminate_when_unhealthy": False},
                         mjx_options={"impl": impl} if backend == "mjx" else {})
    res = grid.run(spec, d / f"run-{env_name}-{lanes}-{impl}-{len(rules)}-{per_seed}", progress=False, force=True)
    s = res.summary
    run_s = s["wall_s"] - s["compile_s"]
    n = seeds * per_seed
    return {"lanes_run": n, "compile_s": s["compile_s"], "run_s": round(run_s, 3),
            "env_steps_per_s": round(n * steps / run_s, 1) if run_s > 0 else None, "peak_bytes": peak_memory()}


def table(results: list[dict]) -> str:
    lines = [f"{'env':12s} {'impl':5s} {'lanes':>6s} {'mode':8s} {'env-steps/s':>12s} {'x physics':>9s} "
             f"{'compile s':>9s} {'peak MB':>8s}"]
    phys = {(r["env"], r["impl"], r["lanes"]): r["env_steps_per_s"] for r in results if r["mode"] == "physics"}
    for r in results:
        base = phys.get((r["env"], r["impl"], r["lanes"]))
        ratio = f"{r['env_steps_per_s'] / base:9.2f}" if base and r.get("env_steps_per_s") else f"{'-':>9s}"
        mem = f"{r['peak_bytes'] / 2**20:8.0f}" if r.get("peak_bytes") else f"{'-':>8s}"
        lines.append(f"{r['env']:12s} {r['impl']:5s} {r['lanes']:6d} {r['mode']:8s} {r['env_steps_per_s'] or 0:12.0f} "
                     f"{ratio} {r['compile_s']:9.1f} {mem}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, native backend, 8 lanes, 10 steps, hopper: seconds")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "poe_jax-bench"),
                    help="folder for the JSON (default: a scratch folder; benchmarks/results/ to commit one)")
    ap.add_argument("--envs", nargs="+", default=["hopper", "halfcheetah"])
    ap.add_argument("--lanes", nargs="+", type=int, default=[4096, 16384, 65536])
    ap.add_argument("--steps", type=int, default=100, help="control steps per lane")
    ap.add_argument("--modes", nargs="+", default=["physics", *MODES], choices=["physics", *MODES])
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no new measurement after this many seconds")
    args = ap.parse_args(argv)
    keep_large_allocations()
    backend = "native" if args.smoke else "mjx"
    if args.smoke:
        args.envs, args.lanes, args.steps = ["hopper"], [8], 10
    impls = ["jax"] + (["warp"] if backend == "mjx" and importlib.util.find_spec("mujoco_warp") else [])
    start = time.perf_counter()
    results, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for env_name in args.envs:
            make_ckpts(d, env_name)
            for impl in impls:
                for lanes in args.lanes:
                    for mode in args.modes:
                        item = {"env": env_name, "impl": impl if backend == "mjx" else "-", "lanes": lanes,
                                "mode": mode, "steps": args.steps, "backend": backend}
                        if time.perf_counter() - start > args.budget_s:
                            skipped.append(item)
                            continue
                        try:
                            r = (bench_physics(env_name, lanes, args.steps, backend, impl) if mode == "physics" else
                                 bench_grid(d, env_name, lanes, args.steps, backend, impl, MODES[mode]))
                        except Exception as e:  # noqa: BLE001 - e.g. out of device memory: recorded, the rest go on
                            r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}", "compile_s": 0.0,
                                 "env_steps_per_s": None, "peak_bytes": None}
                        results.append({**item, **r})
                        print(table(results).splitlines()[-1], flush=True)
    record = {"benchmark": "gpu_throughput", "machine": machine(), "smoke": args.smoke, "steps": args.steps,
              "wall_s": round(time.perf_counter() - start, 1), "results": results, "skipped": skipped}
    write_record(args.out, "gpu-throughput", record)
    print(table(results))
    if skipped:
        print(f"skipped (past --budget-s {args.budget_s:g} s): {len(skipped)} measurements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
