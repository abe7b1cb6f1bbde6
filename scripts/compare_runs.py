"""Are two run folders' results the same, bit for bit? (A refactor's check: run the same grid before and
after, then compare.)

    python scripts/compare_runs.py RUN_A RUN_B

Compares the recorded episodes (every column: names, order, dtypes and values, floats by their bits; rows
matched by grid and lane) and every table the report wrote (``*.csv``, the run folders' own names masked).
Prints one line per difference and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from poe_jax.grid import store


def _episodes(d: Path) -> pd.DataFrame:
    df = store.read_episodes(d, serve_prior_blind=False)
    return df.drop(columns=["grid"]).reset_index(drop=True) if df["grid"].nunique() == 1 else df


def _same(x: pd.Series, y: pd.Series) -> bool:
    if x.dtype != y.dtype:
        return False
    if x.dtype.kind == "f":
        return np.array_equal(x.to_numpy().view(np.uint64 if x.dtype == np.float64 else np.uint32),
                              y.to_numpy().view(np.uint64 if y.dtype == np.float64 else np.uint32))
    return x.equals(y)


def compare(a: Path, b: Path) -> list[str]:
    diffs = []
    ea, eb = _episodes(a), _episodes(b)
    if list(ea.columns) != list(eb.columns):
        diffs.append(f"episode columns differ: {list(ea.columns)} vs {list(eb.columns)}")
    if len(ea) != len(eb):
        diffs.append(f"episodes: {len(ea)} vs {len(eb)}")
    else:
        diffs += [f"episodes.{c}: {int((ea[c].astype(str) != eb[c].astype(str)).sum())} rows differ"
                  for c in ea.columns if c in eb and not _same(ea[c], eb[c])]
    for ta in sorted(a.glob("*.csv")):
        tb = b / ta.name
        if not tb.is_file():
            diffs.append(f"{ta.name}: only in {a}")
        elif ta.read_text().replace(a.name, "RUN") != tb.read_text().replace(b.name, "RUN"):
            diffs.append(f"{ta.name}: differs")
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    diffs = compare(args.a, args.b)
    print("\n".join(diffs) if diffs else f"same: {args.a} and {args.b}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
