"""Grid throughput: a 1000-step hopper grid through ``poe_jax.grid`` vs gymnasium.

An IQL-sized actor (256-256) and a goal prior (random weights: throughput does
not depend on them) are composed with ``poe`` (α = 0.5) for every lane; each
lane is one episode of ``--steps`` control steps (termination off, so every lane
runs the full horizon and both sides do the same physics).

* ``grid``      -- ``poe_jax.grid.run`` on the chosen backend (``native`` on CPU;
  ``mjx`` with ``--backend mjx`` on a GPU): episodes/s and env-steps/s, with the
  compile time reported separately.
* ``gymnasium`` -- ``gymnasium.make_vec("Hopper-v4", num_envs=lanes, "sync")`` with
  the same jitted actor + prior + rule computing the batch's actions each step
  (``--gym-steps`` steps; its rate is per env-step, so it is comparable).

Writes ``grid-<host>.json`` with the machine description.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from compose_throughput import machine, write_record
from poe_jax import checkpoints, compose, grid, nets
from poe_jax.runtime import keep_large_allocations


def make_ckpts(d: Path):
    actor = nets.init_actor(nets.ActorSpec("iql", 11, 3), jax.random.key(0))
    prior = nets.init_prior(nets.PriorSpec(11, 3, ("G1_speed", "G2_balanced", "G3_target")), jax.random.key(1))
    checkpoints.save(d / "actor", actor, env="hopper")
    checkpoints.save(d / "prior", prior, env="hopper")
    return actor, prior


def bench_grid(d: Path, lanes: int, steps: int, backend: str) -> dict:
    spec = grid.GridSpec(env="hopper", actor=str(d / "actor"), prior=str(d / "prior"), rules={"poe": [0.5]},
                         seeds=tuple(range(lanes)), episodes=1, max_steps=steps, backend=backend,
                         chunk_size=lanes, env_options={"terminate_when_unhealthy": False})
    res = grid.run(spec, d / f"run-{backend}-{lanes}", progress=False, force=True)
    s = res.summary
    run_s = s["wall_s"] - s["compile_s"]
    return {"backend": s["backend"], "lanes": lanes, "steps": steps, "compile_s": s["compile_s"],
            "run_s": round(run_s, 3), "episodes_per_s": s["episodes_per_s"], "env_steps_per_s": s["env_steps_per_s"]}


def bench_gym(actor, prior, lanes: int, steps: int) -> dict:
    import gymnasium

    @jax.jit
    def act(obs):
        a = actor.distribution(obs)
        g = prior.distribution(obs, 0)
        return compose.poe(a, g, 0.5).mean

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        venv = gymnasium.make_vec("Hopper-v4", num_envs=lanes, vectorization_mode="sync",
                                  terminate_when_unhealthy=False)
        obs, _ = venv.reset(seed=0)
        act(jnp.asarray(obs, jnp.float32)).block_until_ready()
        t = time.perf_counter()
        for _ in range(steps):
            obs, *_ = venv.step(np.asarray(act(jnp.asarray(obs, jnp.float32))))
        wall = time.perf_counter() - t
        venv.close()
    return {"lanes": lanes, "steps": steps, "env_steps_per_s": lanes * steps / wall,
            "episodes_per_s_at_1000_steps": lanes * steps / wall / 1000}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, nargs="+", default=[256])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--gym-steps", type=int, default=100)
    ap.add_argument("--backend", default="native")
    ap.add_argument("--no-gym", action="store_true")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "poe_jax-bench"),
                    help="where the result JSON goes (benchmarks/results/ holds the committed ones)")
    args = ap.parse_args(argv)
    keep_large_allocations()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        actor, prior = make_ckpts(d)
        for lanes in args.lanes:
            r = {"grid": bench_grid(d, lanes, args.steps, args.backend)}
            if not args.no_gym:
                r["gymnasium"] = bench_gym(actor, prior, lanes, args.gym_steps)
                r["grid_over_gymnasium"] = r["grid"]["env_steps_per_s"] / r["gymnasium"]["env_steps_per_s"]
            g = r["grid"]
            print(f"{g['backend']} lanes={lanes}: compile {g['compile_s']:.1f} s, {g['episodes_per_s']:.2f} episodes/s, "
                  f"{g['env_steps_per_s']:.0f} env-steps/s"
                  + (f"; gymnasium {r['gymnasium']['env_steps_per_s']:.0f} env-steps/s; ratio {r['grid_over_gymnasium']:.2f}x"
                     if "gymnasium" in r else ""))
            results.append(r)
    record = {"benchmark": "grid_throughput", "machine": machine(), "policy": "IQL-sized actor (256-256) + goal prior, poe alpha=0.5",
              "results": results, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_record(args.out, f"grid-{args.backend}", record)


if __name__ == "__main__":
    main()
