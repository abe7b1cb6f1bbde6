"""The ``poe-jax`` command line. Thin: the library does the work."""

from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poe-jax", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="compose a toy actor and prior with every rule and print a table")
    sub.add_parser("rules", help="list the composition rules and their coefficients")
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
    return 2


if __name__ == "__main__":
    sys.exit(main())
