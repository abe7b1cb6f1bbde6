"""Write docs/cli.md: every ``poe-jax`` command's ``--help``, from the parser itself.

usage: python scripts/cli_reference.py [--check]   (--check: exit 1 if docs/cli.md is out of date)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def render() -> str:
    import os

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: one width for everyone
    from poe_jax import cli

    parser = cli._build_parser()
    parts = ["# The command line: `poe-jax`", "", "[README](../README.md) · [all pages](README.md)", "",
             "Generated from the parser by `python scripts/cli_reference.py` (a test keeps it current).", ""]

    def walk(p: argparse.ArgumentParser, path: list[str]):
        parts.extend([f"## `{' '.join(path)}`", "", "```text", p.format_help().rstrip(), "```", ""])
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(sub, [*path, name])

    walk(parser, ["poe-jax"])
    return "\n".join(parts)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if DOC.read_text() == text else 1)
    DOC.write_text(text)
    print(f"wrote {DOC}")
