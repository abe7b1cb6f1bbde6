"""SAC training throughput (env steps/s with one gradient update each) vs replay-buffer size.

SAC's whole loop (policy, physics, replay buffer, updates) is one compiled ``lax.scan``
per chunk. An update reads the buffer, so if a step also writes it inside the scan,
XLA keeps the old buffer alive and copies all of it every step: with a 1M-row buffer
(the D4RL-sized runs of ``poe-jax data generate``) SAC ran at 0.38x the speed of a
50k-row buffer (walker2d on one core of the 2-core VM: 39 vs 101 env-steps/s). ``poe_jax.train.sac`` now collects each chunk's rows
apart and writes them into the buffer once per chunk, so the buffer size should not
matter: this script times both sizes in one process and reports the ratio
(1M rows / 50k rows; about 1.0 means no per-step copy). Now: 104 vs 106 (0.99).

Env-steps/s = chunk x chunks / wall time, compile excluded (one chunk runs first).
Writes ``sac-<host>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax

from compose_throughput import machine, write_record
from poe_jax import envs
from poe_jax.train import sac


def steps_per_s(env, buffer: int, chunk: int, chunks: int) -> float:
    cfg = sac.SACConfig(steps=max(buffer, chunk * (chunks + 1)), buffer=buffer, warmup=0, chunk=chunk)
    state, step = sac.init(env, cfg)
    state = step(state)
    jax.block_until_ready(state.step)
    t = time.perf_counter()
    for _ in range(chunks):
        state = step(state)
    jax.block_until_ready(state.step)
    return chunk * chunks / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="walker2d")
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "poe_jax-bench"),
                    help="where the result JSON goes (benchmarks/results/ holds the committed ones)")
    args = ap.parse_args()
    env = envs.make(args.env, backend="native")
    rows = {str(b): steps_per_s(env, b, args.chunk, args.chunks) for b in (50_000, 1_000_000)}
    ratio = rows["1000000"] / rows["50000"]
    print(f"{args.env}: {rows['50000']:.0f} env-steps/s with 50k buffer rows, {rows['1000000']:.0f} with 1M "
          f"(ratio {ratio:.2f})")
    record = {"machine": machine(), "env": args.env, "chunk": args.chunk, "chunks": args.chunks,
              "env_steps_per_s_by_buffer_rows": rows, "ratio_1M_over_50k": ratio,
              "config": "SACConfig defaults: batch 256, 256-256 nets, 1 update per env step, 1 lane",
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_record(args.out, "sac", record)


if __name__ == "__main__":
    main()
