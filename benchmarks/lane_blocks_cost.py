"""What evaluating the policy in blocks of lanes costs a grid program, against one batch of all lanes.

On the native backend a grid's program evaluates its policy ``MIN_BATCH`` lanes at a time
(``poe_jax.grid.rollout.lanes_in_blocks``), so a lane's episode does not depend on how many lanes run beside it
(XLA's CPU matrix products can round a row differently with the number of rows). This measures the price:
a whole grid program (``poe_jax.grid.program.build_program``) on hopper, native backend, ``--lanes`` lanes x
``--steps`` steps, poe lanes, an IQL-sized actor (256-256) and the goal prior, built with ``block=None`` (the
baseline: one batch) and ``block=MIN_BATCH``; the two compiled programs run alternately ``--reps`` times in
one process, and the ratio of their median env-steps/s is reported. It also checks the property bought: the
first lane's totals of a ``--lanes`` call equal those of a call with ``MIN_BATCH`` lanes, bit for bit, with
blocks (and says whether they do without). Writes ``lane-blocks-<host>.json`` (``--out``, default a scratch
folder).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np

from compose_throughput import machine, write_record
from poe_jax import envs, nets
from poe_jax.envs.goals import make_goal
from poe_jax.grid.plan import MIN_BATCH
from poe_jax.grid.program import Lanes, build_program


def _lanes(n: int) -> Lanes:
    z32, f32 = np.zeros(n, np.int32), np.zeros(n, np.float32)
    return Lanes(rule=z32, param=f32 + 0.5, goal=z32, prior_goal=z32, prior_param=f32, quality=z32,
                 obs_noise=f32, act_noise=f32, mass_scale=f32 + 1, friction_scale=f32 + 1, cell_key=z32 + 7,
                 seed=np.arange(n, dtype=np.uint32), episode=z32)


def measure(lanes: int, steps: int, reps: int) -> dict:
    env = envs.make("hopper", backend="native", terminate_when_unhealthy=False)
    actor = nets.init_actor(nets.ActorSpec("iql", 11, 3), jax.random.key(0))
    prior = nets.init_prior(nets.PriorSpec(11, 3, ("G1_speed",)), jax.random.key(1))
    goals = (make_goal("G1_speed", "hopper"),)
    big, small = _lanes(lanes), _lanes(MIN_BATCH)
    progs, first_lane_equal = {}, {}
    for name, block in (("one_batch", None), ("blocks", MIN_BATCH)):
        prog = jax.jit(build_program(env, goals, ("poe",), max_steps=steps, obs_noise=False, act_noise=False,
                                     block=block))
        progs[name] = prog.lower(actor, prior, big).compile()
        alone = jax.device_get(prog(actor, prior, small))
        many = jax.device_get(progs[name](actor, prior, big))
        first_lane_equal[name] = all(np.array_equal(np.asarray(a)[:1], np.asarray(b)[:1])
                                     for a, b in zip(jax.tree_util.tree_leaves(alone), jax.tree_util.tree_leaves(many)))
    seconds = {k: [] for k in progs}
    for _ in range(reps):  # alternate, so both see the same machine load
        for name, run in progs.items():
            t0 = time.perf_counter()
            tot = jax.block_until_ready(run(actor, prior, big))
            seconds[name].append(time.perf_counter() - t0)
    env_steps = float(np.sum(np.asarray(tot.length)))
    rate = {k: round(env_steps / float(np.median(v)), 1) for k, v in seconds.items()}
    return {"lanes": lanes, "steps": steps, "reps": reps, "env_steps_per_s": rate,
            "ratio_blocks_to_one_batch": round(rate["blocks"] / rate["one_batch"], 3),
            "first_lane_equal_to_a_call_of_min_batch": first_lane_equal}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lanes", type=int, default=1024)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=tempfile.gettempdir() + "/poe_jax-bench")
    args = p.parse_args()
    rec = {"machine": machine(), **measure(args.lanes, args.steps, args.reps)}
    print({k: v for k, v in rec.items() if k != "machine"})
    print(f"wrote {write_record(args.out, 'lane-blocks', rec)}")


if __name__ == "__main__":
    main()
