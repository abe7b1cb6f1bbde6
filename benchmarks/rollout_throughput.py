"""Rollout throughput on the CPU: closed-loop native backend vs its limits.

For hopper and halfcheetah with 256 and 1024 lanes, a 2x256 tanh MLP policy
(jitted) drives every lane for ``--steps`` control steps (termination off, so
all three variants do the same physics work):

* ``native``     -- ``poe_jax.grid.rollout`` on the native backend: policy, env logic and
  ``mujoco.rollout`` stepping inside one jitted ``while_loop``.
* ``open-loop``  -- ``mujoco.rollout`` alone on the same batch and step count with
  precomputed controls: no policy, no Python, no JAX (the CPU limit the issue
  names).
* ``open-loop batch`` -- the same with ``mujoco.batch.Batch.rollout`` (MuJoCo >= 4),
  the stepper the native backend uses: its own physics limit, reported beside
  the ``mujoco.rollout`` one so that the closed-loop overhead is visible.
* ``gymnasium``  -- ``gymnasium.make_vec(..., vectorization_mode="sync")`` stepping
  the v4 envs, with the same jitted MLP computing the batch's actions
  (fewer steps; it is slow).

Env-steps/s = lanes x control steps / wall time (compile excluded: each
variant runs once before it is timed; native and open-loop are timed
``--repeats`` times, interleaved, and the medians are reported). Writes ``rollout-<host>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from compose_throughput import machine, write_record
from poe_jax import envs
from poe_jax.grid import rollout
from poe_jax.physics.native import default_threads, mj_batch
from poe_jax.runtime import keep_large_allocations

GYM_IDS = {"hopper": "Hopper-v4", "halfcheetah": "HalfCheetah-v4"}


def mlp_params(key, obs, act, hidden=256):
    k = jax.random.split(key, 3)
    init = lambda kk, i, o: jax.random.normal(kk, (i, o)) / np.sqrt(i)  # noqa: E731
    return [init(k[0], obs, hidden), init(k[1], hidden, hidden), init(k[2], hidden, act)]


def mlp(params, obs):
    h = jnp.tanh(obs @ params[0])
    h = jnp.tanh(h @ params[1])
    return jnp.tanh(h @ params[2])


def timed(fn, repeats: int = 1):
    """Median wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_env(name: str, lanes: int, steps: int, gym_steps: int, repeats: int = 5) -> dict:
    env = envs.make(name, backend="native", terminate_when_unhealthy=False)
    params = mlp_params(jax.random.key(0), env.obs_size, env.act_size)
    policy = rollout.deterministic(lambda obs: mlp(params, obs))
    keys = jax.random.split(jax.random.key(1), lanes)
    run = jax.jit(lambda k: rollout.rollout(env, policy, k, max_steps=steps))
    native = lambda: jax.block_until_ready(run(keys))  # noqa: E731

    m = env.model
    pool = mj_rollout.Rollout(nthread=default_threads())
    datas = [mujoco.MjData(m) for _ in range(default_threads())]
    nstate = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_FULLPHYSICS.value)
    init = np.zeros((lanes, nstate))
    init[:, 1 : 1 + m.nq] = m.qpos0
    ctrl = np.random.default_rng(0).uniform(-1, 1, (lanes, steps * env.spec.frame_skip, m.nu))
    out = np.empty((lanes, steps * env.spec.frame_skip, nstate))
    open_loop = lambda: pool.rollout(m, datas, init, ctrl, state=out)  # noqa: E731
    variants = {"native": native, "open": open_loop}
    if mj_batch is not None:
        batch = mj_batch.Batch(m, nsim=lanes, nthread=default_threads())
        qpos_out = {"qpos": np.empty((lanes, steps * env.spec.frame_skip, m.nq))}

        def open_batch():
            batch.state[:] = 0.0
            batch.bind("qpos")[:] = m.qpos0
            batch.rollout(steps * env.spec.frame_skip, control=ctrl, out=qpos_out)

        variants["batch"] = open_batch
    # Interleave the variants so that machine noise (shared VMs) hits them alike.
    times = {k: [] for k in variants}
    for fn in variants.values():
        fn()
    for _ in range(repeats):
        for k, fn in variants.items():
            times[k].append(timed(fn, 1))
    t = {k: float(np.median(v)) for k, v in times.items()}
    t_native, t_open = t["native"], t["open"]

    import gymnasium

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        venv = gymnasium.make_vec(GYM_IDS[name], num_envs=lanes, vectorization_mode="sync")
    act = jax.jit(lambda o: mlp(params, o))

    def gym_loop():
        obs, _ = venv.reset(seed=0)
        for _ in range(gym_steps):
            obs, *_ = venv.step(np.asarray(act(jnp.asarray(obs, jnp.float32))))

    t_gym = timed(gym_loop)
    venv.close()
    rows = {
        "native (closed loop)": lanes * steps / t_native,
        "open-loop mujoco.rollout": lanes * steps / t_open,
        "gymnasium sync vector env": lanes * gym_steps / t_gym,
    }
    if "batch" in t:
        rows["open-loop mujoco.batch"] = lanes * steps / t["batch"]
    return {"env": name, "lanes": lanes, "steps": steps, "repeats": repeats, "gym_steps": gym_steps,
            "env_steps_per_s": rows, "native_over_open_loop": rows["native (closed loop)"] / rows["open-loop mujoco.rollout"],
            "native_over_open_loop_batch": rows["native (closed loop)"] / rows.get("open-loop mujoco.batch", np.nan),
            "native_over_gymnasium": rows["native (closed loop)"] / rows["gymnasium sync vector env"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--gym-steps", type=int, default=40)
    ap.add_argument("--lanes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timed runs; medians are reported")
    ap.add_argument("--envs", nargs="+", default=["hopper", "halfcheetah"])
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "poe_jax-bench"),
                    help="where the result JSON goes (benchmarks/results/ holds the committed ones)")
    args = ap.parse_args(argv)
    keep_large_allocations()
    results = []
    print(f"{'env':12s} {'lanes':>6s} {'native':>10s} {'open-loop':>10s} {'open-batch':>10s} {'gymnasium':>10s} "
          f"{'nat/open':>9s} {'nat/batch':>9s} {'nat/gym':>8s}  (env-steps/s)")
    for name in args.envs:
        for lanes in args.lanes:
            r = bench_env(name, lanes, args.steps, args.gym_steps, args.repeats)
            s = r["env_steps_per_s"]
            print(f"{name:12s} {lanes:6d} {s['native (closed loop)']:10.0f} {s['open-loop mujoco.rollout']:10.0f} "
                  f"{s.get('open-loop mujoco.batch', np.nan):10.0f} {s['gymnasium sync vector env']:10.0f} "
                  f"{r['native_over_open_loop']:9.2f} {r['native_over_open_loop_batch']:9.2f} {r['native_over_gymnasium']:8.1f}")
            results.append(r)
    record = {"benchmark": "rollout_throughput", "machine": machine(), "threads": default_threads(),
              "policy": "MLP 2x256 tanh, jitted", "stepper": "batch" if mj_batch is not None else "rollout", "results": results, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_record(args.out, "rollout", record)


if __name__ == "__main__":
    main()
