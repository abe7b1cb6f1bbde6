"""Runs a grid in a fresh process (for the kill/resume, device-count and multi-process tests).

usage: python grid_worker.py SPEC.json OUT [--coordinator HOST:PORT --nproc N --pid I]
"""

import argparse
import json
import os

import jax


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("out")
    ap.add_argument("--coordinator")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--pid", type=int, default=0)
    args = ap.parse_args()
    if os.environ.get("POE_JAX_CACHE"):
        jax.config.update("jax_compilation_cache_dir", os.environ["POE_JAX_CACHE"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    if args.coordinator:
        jax.distributed.initialize(args.coordinator, num_processes=args.nproc, process_id=args.pid)

    from poe_jax import grid

    spec = grid.load_spec(json.loads(open(args.spec).read()))
    res = grid.run(spec, args.out, progress=False)
    print(json.dumps({"computed": res.computed, "devices": len(jax.local_devices()), "processes": jax.process_count()}))


if __name__ == "__main__":
    main()
