"""The ``poe-jax`` command line. Thin: the library does the work."""

from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poe-jax", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="compose a toy actor and prior with every rule and print a table")
    sub.add_parser("rules", help="list the composition rules and their coefficients")
    sub.add_parser("envs", help="list environments, backends, observation/action sizes and goals")
    port = sub.add_parser("port", help="port an actor trained elsewhere to a poe_jax checkpoint")
    port_sub = port.add_subparsers(dest="source", required=True)
    corl = port_sub.add_parser("corl", help="a CORL (PyTorch) trainer checkpoint; loaded with weights_only=True")
    corl.add_argument("ckpt", help="CORL .pt file (top-level 'actor'; 'qf'/'vf' for IQL)")
    corl.add_argument("--algo", required=True, choices=["iql", "iql_det", "td3_bc", "bc", "awac", "cql", "sac_n"])
    corl.add_argument("--env", required=True, help="env the actor was trained on (sizes are checked)")
    corl.add_argument("--obs-stats", help=".npz with 'mean' and 'std' of the training observations")
    corl.add_argument("--det-std", type=float, default=0.1, help="std for deterministic actors (x max_action)")
    corl.add_argument("--dataset", help="dataset name for the card (e.g. hopper-medium-v2)")
    corl.add_argument("--out", required=True, help="checkpoint directory to write")
    corl.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    return p


def _port(args) -> int:
    from poe_jax.checkpoints import CheckpointError
    from poe_jax.port import PortError, port_corl

    try:
        out = port_corl(args.ckpt, args.algo, args.env, args.out, obs_stats=args.obs_stats, det_std=args.det_std,
                        dataset=args.dataset, overwrite=args.overwrite)
    except (PortError, CheckpointError) as e:
        print(f"poe-jax port: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from poe_jax.demo import main as demo_main

        return demo_main()
    if args.command == "rules":
        from poe_jax.compose import RULES

        for r in RULES.values():
            rng = f"{r.param} in [{r.lo}, {r.hi}]" if r.param else "no coefficient"
            print(f"{r.name:12s} {rng}")
        return 0
    if args.command == "envs":
        from poe_jax import envs
        from poe_jax.envs.goals import goal_params
        from poe_jax.physics import resolve_backend

        print(f"backends: native (MuJoCo C, CPU), mjx (MuJoCo in JAX); auto -> {resolve_backend('auto')}")
        print(f"{'env':12s} {'obs':>4s} {'act':>4s} {'frame_skip':>10s} {'max_steps':>9s}  goals")
        for name in envs.names():
            env = envs.make(name, backend="native", nthread=1)
            goals = "; ".join(
                f"{g}({', '.join(f'{k}={v}' for k, v in goal_params(g, name).items())})" for g in envs.goal_names()
            )
            print(f"{name:12s} {env.obs_size:4d} {env.act_size:4d} {env.spec.frame_skip:10d} {env.max_steps:9d}  {goals}")
        return 0
    if args.command == "port":
        return _port(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
