"""Composition throughput: jitted PoE kernel vs NumPy vs a plain memory copy.

Workload: 10^7 action elements (1.25M states x 8 action dims, float32). The
kernel reads four arrays (actor mean/std, prior mean/std) and writes two, so it
moves 24 bytes per element. The copy baseline moves the same 24 bytes per
element (reads 12, writes 12) into preallocated buffers -- the practical limit
of the memory system -- once with one thread and once split across all cores;
the faster of the two is the reference.

Variants of the kernel:
  * ``jax fresh``   -- ``jax.jit(compose.poe)``: outputs are new buffers each call.
  * ``jax in-place`` -- the same kernel with the actor's buffers donated, so XLA
    writes the outputs over them (how a rollout loop would call it). New 40 MB
    buffers cost page faults on every call; donation removes them.
  * ``numpy``        -- the same formula in NumPy (float32).

By default the benchmark calls :func:`poe_jax.runtime.keep_large_allocations`
(as the CLI does): glibc otherwise unmaps every freed 40 MB buffer and each call
page-faults its outputs in again. ``--glibc-default`` shows that cost.

Usage: ``python benchmarks/compose_throughput.py [--reps 20] [--out benchmarks/results]``.
Writes ``compose-<host>.json`` with the machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax import compose
from poe_jax.gaussian import DiagGaussian
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


def median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def numpy_poe(mt, st, mg, sg, alpha):
    vt, vg = st * st, sg * sg
    d = (1 - alpha) * vg + alpha * vt
    r = alpha * vt / d
    return (1 - r) * mt + r * mg, st * sg / np.sqrt(d)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "poe_jax-bench"),
                    help="where the result JSON goes (benchmarks/results/ holds the committed ones)")
    ap.add_argument("--glibc-default", action="store_true",
                    help="do not raise glibc's mmap threshold (shows the page-fault cost)")
    args = ap.parse_args(argv)
    malloc_tuned = False if args.glibc_default else keep_large_allocations()

    rng = np.random.default_rng(0)
    mt, mg = (rng.standard_normal((STATES, ACT_DIM), dtype=np.float32) for _ in range(2))
    st, sg = (rng.uniform(0.05, 1.0, (STATES, ACT_DIM)).astype(np.float32) for _ in range(2))
    alpha = np.float32(0.5)
    results = {}

    # Copy baselines: the same 24 bytes/element, into preallocated memory.
    src = np.concatenate([mt, st, mg]).reshape(-1)  # 12 bytes/element
    dst = np.empty_like(src)
    t = median_time(lambda: np.copyto(dst, src), args.reps)
    results["copy 1 thread"] = t
    threads = os.cpu_count() or 1
    pool = ThreadPoolExecutor(threads)
    bounds = np.linspace(0, src.size, threads + 1).astype(int)
    parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    t = median_time(lambda: list(pool.map(lambda s: np.copyto(dst[s], src[s]), parts)), args.reps)
    results[f"copy {threads} threads"] = t

    # NumPy kernel.
    results["numpy poe"] = median_time(lambda: numpy_poe(mt, st, mg, sg, alpha), max(3, args.reps // 4))

    # JAX kernel, fresh outputs.
    actor = DiagGaussian(jnp.asarray(mt), jnp.asarray(st))
    prior = DiagGaussian(jnp.asarray(mg), jnp.asarray(sg))
    fresh = jax.jit(compose.poe)

    def run_fresh():
        jax.block_until_ready(fresh(actor, prior, alpha))

    results["jax poe (fresh outputs)"] = median_time(run_fresh, args.reps)

    # JAX kernel, actor buffers donated and overwritten (outputs feed the next call).
    inplace = jax.jit(compose.poe, donate_argnums=0)
    state = {"actor": DiagGaussian(jnp.array(mt), jnp.array(st))}

    def run_inplace():
        state["actor"] = jax.block_until_ready(inplace(state["actor"], prior, alpha))

    results["jax poe (in-place)"] = median_time(run_inplace, args.reps)

    hlo = fresh.lower(actor, prior, alpha).compile().as_text()
    fusions = hlo.count("fusion(")

    copy_best = min(results["copy 1 thread"], results[f"copy {threads} threads"])
    rows = []
    for name, t in results.items():
        gbs = BYTES_PER_ELEMENT * ELEMENTS / t / 1e9
        rows.append(
            {
                "variant": name,
                "seconds": t,
                "elements_per_s": ELEMENTS / t,
                "actions_per_s": STATES / t,
                "GB_per_s": gbs,
                "fraction_of_copy": copy_best / t,
            }
        )
    print(f"compose throughput, {ELEMENTS:.0e} elements ({STATES} states x {ACT_DIM} dims, float32)")
    print(f"{'variant':28s} {'ms':>8s} {'Melem/s':>9s} {'Mact/s':>8s} {'GB/s':>7s} {'x copy':>7s}")
    for r in rows:
        print(
            f"{r['variant']:28s} {1e3 * r['seconds']:8.2f} {r['elements_per_s'] / 1e6:9.1f} "
            f"{r['actions_per_s'] / 1e6:8.2f} {r['GB_per_s']:7.2f} {r['fraction_of_copy']:7.2f}"
        )
    print(f"XLA fusions in the compiled kernel: {fusions}")

    record = {
        "benchmark": "compose_throughput",
        "workload": {"states": STATES, "act_dim": ACT_DIM, "elements": ELEMENTS, "dtype": "float32",
                     "bytes_per_element": BYTES_PER_ELEMENT, "rule": "poe", "reps": args.reps},
        "machine": machine(),
        "results": rows,
        "kernel_fusions": fusions,
        "malloc_tuned": malloc_tuned,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_record(args.out, "compose", record)
    return record


if __name__ == "__main__":
    main()
