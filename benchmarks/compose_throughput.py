"""Composition throughput: the jitted PoE kernel against jitted baselines, measured the same way.

Workload: 10^7 action elements (1.25M states x 8 action dims, float32). The kernel reads four
arrays (actor mean/std, prior mean/std) and writes two: 24 bytes per element.

Variants, all jitted, timed in one process with **interleaved** repetitions (round r times every
variant once, so drift in the machine hits all of them alike), median over rounds:
  * ``compose.poe``       -- the library kernel (validation, fallback, exact end points);
  * ``jnp reference``     -- the textbook precision form of the same formula in plain jnp;
  * ``same bytes``        -- a kernel that reads the same four arrays and writes two (``a + b``,
    ``c + d``): what moving these bytes costs through XLA;
  * ``copy``              -- ``jnp.copy`` of two arrays (reads 8, writes 8 bytes per element).
Ratios are against ``same bytes`` (the memory bound of this kernel shape).

The glibc malloc setting (:func:`poe_jax.runtime.keep_large_allocations`, which the CLI applies):
without it glibc unmaps every freed 40 MB buffer and each call page-faults its outputs in again.
A process cannot undo it, so the script runs itself twice, in fresh processes: as a library user
gets it (default), and with the setting. It also times an eager ``compose.poe`` call against the
jitted one on a small batch (what a Python loop pays).

Usage: ``python benchmarks/compose_throughput.py [--reps 15] [--out DIR]``; writes
``compose-<host>.json`` (both modes, the machine) to ``--out`` (a scratch folder by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax import compose
from poe_jax.kernels.gaussian import DiagGaussian
from poe_jax.runtime import keep_large_allocations

STATES, ACT_DIM = 1_250_000, 8
ELEMENTS = STATES * ACT_DIM
BYTES_PER_ELEMENT = 24  # 4 float32 reads + 2 float32 writes


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "numpy": np.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def write_record(out: str | Path, name: str, record: dict) -> Path:
    """Write ``record`` to ``out/NAME-HOST.json`` (the machine it ran on names the file)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{socket.gethostname()}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def interleaved(fns: dict, reps: int) -> dict:
    """Median seconds of each function over ``reps`` rounds; each round calls every function once, in
    turn (after one warm-up call each)."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def jnp_reference(actor, prior, alpha):
    """The textbook precision form, in plain jnp."""
    lt, lg = 1.0 / actor.std**2, 1.0 / prior.std**2
    lam = (1 - alpha) * lt + alpha * lg
    return (((1 - alpha) * lt * actor.mean + alpha * lg * prior.mean) / lam), 1.0 / jnp.sqrt(lam)


def same_bytes(actor, prior, alpha):
    return actor.mean + prior.mean, actor.std + prior.std


def copy2(actor, prior, alpha):
    return jnp.copy(actor.mean), jnp.copy(actor.std)


def measure(reps: int, malloc: bool) -> dict:
    tuned = keep_large_allocations() if malloc else False
    rng = np.random.default_rng(0)
    actor = DiagGaussian(jnp.asarray(rng.standard_normal((STATES, ACT_DIM), dtype=np.float32)),
                         jnp.asarray(rng.uniform(0.05, 1.0, (STATES, ACT_DIM)).astype(np.float32)))
    prior = DiagGaussian(jnp.asarray(rng.standard_normal((STATES, ACT_DIM), dtype=np.float32)),
                         jnp.asarray(rng.uniform(0.05, 1.0, (STATES, ACT_DIM)).astype(np.float32)))
    alpha = jnp.float32(0.5)
    kernels = {"compose.poe": compose.poe, "jnp reference": jnp_reference, "same bytes": same_bytes, "copy": copy2}
    jitted = {k: jax.jit(f) for k, f in kernels.items()}
    fns = {k: (lambda f=f: jax.block_until_ready(f(actor, prior, alpha))) for k, f in jitted.items()}
    times = interleaved(fns, reps)
    np.testing.assert_allclose(jitted["compose.poe"](actor, prior, alpha).mean,
                               jitted["jnp reference"](actor, prior, alpha)[0], rtol=1e-5, atol=1e-6)
    base = times["same bytes"]
    rows = [{"variant": k, "seconds": t, "actions_per_s": STATES / t, "GB_per_s": BYTES_PER_ELEMENT * ELEMENTS / t / 1e9,
             "x_same_bytes": base / t} for k, t in times.items()]
    # eager against jitted, on a batch a Python loop would pass
    small_a = DiagGaussian(actor.mean[:256, :6], actor.std[:256, :6])
    small_g = DiagGaussian(prior.mean[:256, :6], prior.std[:256, :6])
    poe_jit = jax.jit(compose.poe)
    small = interleaved({"eager": lambda: jax.block_until_ready(compose.poe(small_a, small_g, 0.5)),
                         "jit": lambda: jax.block_until_ready(poe_jit(small_a, small_g, 0.5))}, max(reps, 50))
    return {"malloc_tuned": tuned, "results": rows, "eager_seconds": small["eager"], "jit_seconds": small["jit"],
            "eager_over_jit": small["eager"] / small["jit"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "poe_jax-bench"),
                    help="where the result JSON goes (benchmarks/results/ holds the committed ones)")
    ap.add_argument("--mode", choices=["both", "default", "malloc"], default="both",
                    help="both: run each mode in a fresh process (the default); one mode: run it here")
    args = ap.parse_args(argv)
    if args.mode != "both":
        print(json.dumps(measure(args.reps, args.mode == "malloc")))
        return {}
    modes = {}
    for mode in ("default", "malloc"):
        res = subprocess.run([sys.executable, __file__, "--reps", str(args.reps), "--mode", mode], capture_output=True,
                             text=True, check=True)
        modes[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"compose throughput, {ELEMENTS:.0e} elements ({STATES} states x {ACT_DIM} dims, float32), "
          f"median of {args.reps} interleaved rounds")
    for mode, m in modes.items():
        print(f"-- {mode} malloc ({'keep_large_allocations applied' if m['malloc_tuned'] else 'as a library user gets it'})")
        print(f"{'variant':16s} {'ms':>8s} {'Mact/s':>8s} {'GB/s':>7s} {'x same bytes':>13s}")
        for r in m["results"]:
            print(f"{r['variant']:16s} {1e3 * r['seconds']:8.2f} {r['actions_per_s'] / 1e6:8.2f} {r['GB_per_s']:7.2f} "
                  f"{r['x_same_bytes']:13.2f}")
        print(f"eager compose.poe on [256, 6]: {1e6 * m['eager_seconds']:.0f} us, jitted {1e6 * m['jit_seconds']:.0f} us "
              f"({m['eager_over_jit']:.0f}x)")
    record = {
        "benchmark": "compose_throughput",
        "workload": {"states": STATES, "act_dim": ACT_DIM, "elements": ELEMENTS, "dtype": "float32",
                     "bytes_per_element": BYTES_PER_ELEMENT, "rule": "poe", "reps": args.reps},
        "machine": machine(),
        "modes": modes,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_record(args.out, "compose", record)
    return record


if __name__ == "__main__":
    main()
