"""What Ant-v5's contact forces cost on the native backend: ``ant-v5`` against ``ant`` (v4).

Both step the same model and frame skip; ``ant-v5`` also keeps every batch row's ``MjData``
(``mujoco.batch.Batch(persistent=True)``) and runs ``mj_rnePostConstraint`` on each stepped row
for ``cfrc_ext`` (its observation and contact cost). A jitted 2x256 tanh MLP drives every lane
for ``--steps`` control steps with termination off, in one compiled ``poe_jax.grid.rollout`` per env;
the two are timed interleaved ``--repeats`` times and the medians compared. Writes
``contact-forces-<host>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from compose_throughput import machine, write_record
from poe_jax import envs
from poe_jax.grid import rollout
from poe_jax.physics.native import default_threads
from poe_jax.runtime import keep_large_allocations
from rollout_throughput import mlp, mlp_params, timed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lanes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "poe_jax-bench"),
                    help="where the result JSON goes (benchmarks/results/ holds the committed ones)")
    args = ap.parse_args(argv)
    keep_large_allocations()
    results = []
    print(f"{'lanes':>6s} {'ant':>10s} {'ant-v5':>10s} {'v5/v4':>7s}  (env-steps/s)")
    for lanes in args.lanes:
        runs = {}
        for name in ("ant", "ant-v5"):
            env = envs.make(name, backend="native", terminate_when_unhealthy=False)
            params = mlp_params(jax.random.key(0), env.obs_size, env.act_size)
            policy = rollout.deterministic(lambda obs, p=params: mlp(p, obs))
            keys = jax.random.split(jax.random.key(1), lanes)
            run = jax.jit(lambda k, e=env, pol=policy: rollout.rollout(e, pol, k, max_steps=args.steps))
            runs[name] = lambda r=run, k=keys: jax.block_until_ready(r(k))
            runs[name]()  # compile
        times = {k: [] for k in runs}
        for _ in range(args.repeats):
            for k, fn in runs.items():
                times[k].append(timed(fn, 1))
        rate = {k: lanes * args.steps / float(np.median(v)) for k, v in times.items()}
        ratio = rate["ant-v5"] / rate["ant"]
        print(f"{lanes:6d} {rate['ant']:10.0f} {rate['ant-v5']:10.0f} {ratio:7.2f}")
        results.append({"lanes": lanes, "steps": args.steps, "repeats": args.repeats, "env_steps_per_s": rate,
                        "v5_over_v4": ratio})
    write_record(args.out, "contact-forces", {
        "benchmark": "contact_forces_cost", "machine": machine(), "threads": default_threads(),
        "policy": "MLP 2x256 tanh, jitted", "results": results, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


if __name__ == "__main__":
    main()
