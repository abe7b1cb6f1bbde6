"""Rule dispatch: what a grid pays per step to compose, against ``compose.poe`` alone.

A grid's program switches over rules per lane (``compose.switch``); under ``vmap`` a
``lax.switch`` evaluates every branch it has and selects. Measured at ``--batch`` lanes
(float32, act_dim 6, random actor/prior), all in one process:

* ``poe``       -- ``jax.jit(jax.vmap(compose.poe))``: the baseline.
* ``spec``      -- ``compose.switch(("poe",), ...)``: a poe-only grid's dispatch (its own rules only).
* ``spec_mix``  -- the quickstart preset's rules (frozen, poe, kl_reg, additive, prior_only).
* ``legacy``    -- every built-in closed-form rule, including poe_adaptive's 20-step bisection:
  what each grid's program evaluated before dispatch was limited to the grid's rules.

Then a whole grid program (``poe_jax.grid.program.build_program``) on hopper, native backend,
``--lanes`` lanes x ``--steps`` steps, poe-only lanes, built with the grid's own rules vs the
legacy table: env-steps/s of each (compile excluded). Ratios are against the baseline of the
same process. Writes ``dispatch-<host>.json`` (``--out``, default a scratch folder).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from compose_throughput import machine, median_time, write_record
from poe_jax import compose, envs, nets
from poe_jax.envs.goals import make_goal
from poe_jax.kernels.gaussian import DiagGaussian
from poe_jax.grid.program import Lanes, build_program

ALL_CLOSED = ("frozen", "prior_only", "additive", "poe", "kl_reg", "poe_adaptive")  # every rule without a critic


def kernel_costs(batch: int, reps: int) -> dict:
    k = jax.random.split(jax.random.key(0), 4)
    a = DiagGaussian(jax.random.normal(k[0], (batch, 6)), jnp.exp(0.3 * jax.random.normal(k[1], (batch, 6))))
    g = DiagGaussian(jax.random.normal(k[2], (batch, 6)), jnp.exp(0.3 * jax.random.normal(k[3], (batch, 6))))
    alpha = jnp.full((batch,), 0.5, jnp.float32)

    def switched(rules, index):
        idx = jnp.full((batch,), index, jnp.int32)
        f = jax.jit(jax.vmap(lambda i, a, g, p: compose.switch(rules, i, compose.RuleInputs(a, g, p))))
        return lambda: f(idx, a, g, alpha)

    poe = jax.jit(jax.vmap(compose.poe))
    mix = ("frozen", "poe", "kl_reg", "additive", "prior_only")
    fns = {"poe": lambda: poe(a, g, alpha), "spec": switched(("poe",), 0), "spec_mix": switched(mix, 1),
           "legacy": switched(ALL_CLOSED, ALL_CLOSED.index("poe"))}
    out = {}
    for name, fn in fns.items():
        jax.block_until_ready(fn())
        out[name] = median_time(lambda fn=fn: jax.block_until_ready(fn()), reps)
    base = out["poe"]
    return {"batch": batch, "seconds": out, "ratio_to_poe": {k: round(v / base, 3) for k, v in out.items()}}


def program_rates(lanes: int, steps: int) -> dict:
    env = envs.make("hopper", backend="native", terminate_when_unhealthy=False)
    actor = nets.init_actor(nets.ActorSpec("iql", 11, 3), jax.random.key(0))
    prior = nets.init_prior(nets.PriorSpec(11, 3, ("G1_speed",)), jax.random.key(1))
    goals = (make_goal("G1_speed", "hopper"),)
    z32, f32 = np.zeros(lanes, np.int32), np.zeros(lanes, np.float32)

    def lanes_for(rule_index):
        return Lanes(rule=z32 + rule_index, param=f32 + 0.5, goal=z32, prior_goal=z32, prior_param=f32, quality=z32,
                     obs_noise=f32, act_noise=f32, mass_scale=f32 + 1, friction_scale=f32 + 1, cell_key=z32 + 7,
                     seed=np.arange(lanes, dtype=np.uint32), episode=z32)

    out = {}
    for name, rules in (("spec", ("poe",)), ("legacy", ALL_CLOSED)):
        prog = jax.jit(build_program(env, goals, rules, max_steps=steps, obs_noise=False, act_noise=False))
        ln = lanes_for(list(rules).index("poe"))
        t0 = time.perf_counter()
        compiled = prog.lower(actor, prior, ln).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(compiled(actor, prior, ln))  # warm
        t0 = time.perf_counter()
        tot = jax.block_until_ready(compiled(actor, prior, ln))
        run_s = time.perf_counter() - t0
        out[name] = {"compile_s": round(compile_s, 2), "run_s": round(run_s, 3),
                     "env_steps_per_s": round(float(np.sum(tot.length)) / run_s, 1)}
    out["speedup_spec_over_legacy"] = round(out["spec"]["env_steps_per_s"] / out["legacy"]["env_steps_per_s"], 3)
    return {"lanes": lanes, "steps": steps, **out}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--lanes", type=int, default=256)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default=tempfile.gettempdir() + "/poe_jax-bench")
    args = p.parse_args()
    rec = {"machine": machine(), "kernel": kernel_costs(args.batch, args.reps),
           "program": program_rates(args.lanes, args.steps)}
    print(rec["kernel"]["ratio_to_poe"], rec["program"])
    print(f"wrote {write_record(args.out, 'dispatch', rec)}")


if __name__ == "__main__":
    main()
