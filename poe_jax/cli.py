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
    return p


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
    return 2


if __name__ == "__main__":
    sys.exit(main())
