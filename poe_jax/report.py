"""``poe-jax report DIR``: ``DIR/report.md`` and ``DIR/figures/*.png`` from a grid run.

The statistics and their rules are those of :mod:`poe_jax.stats` (restated in the
report). Figures: goal return vs coefficient per rule (mean over seeds with a 95%
band), the KL-vs-return frontier, and prior-quality degradation curves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from poe_jax import grid, stats

__all__ = ["write_report"]

_RULES_TEXT = """\
**How to read this.** The unit of replication is the seed: episodes are averaged within each
(cell, rule, coefficient, seed) first. Means carry standard errors and 95% t-intervals over
seeds. Each rule/coefficient is compared with `frozen` of the same cell on the same seeds by a
paired t-test (Wilcoxon signed-rank beside it when there are at least 6 pairs), with Holm's
correction across every tested row of the grid. A (cell, rule) is **HELP** when its operating
point is significantly better than `frozen` (Holm-adjusted p < {level}), **HURT** when
significantly worse, **FROZEN** otherwise. Operating points: the *oracle* coefficient (best mean
goal return, chosen after seeing the results) and the *KL-budget selector's* coefficient (largest
mean per-step KL(composed ‖ actor) within {budget} nats). Exclusions: episodes with a non-finite
goal return are dropped and counted below. A cell is (env, actor, goal, prior quality, shift)."""


def _fmt(x, nd=1):
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def _p(x):
    return "–" if not np.isfinite(x) else (f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}")


def _panel_figure(path: Path, rows: pd.DataFrame, draw, title: str, xlabel: str, ylabel: str) -> str:
    """One panel per (env, actor) row and goal column; ``draw(ax, sub)`` plots one
    panel's rows. Saves ``path`` and returns its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    actors = list(dict.fromkeys(zip(rows["env"], rows["actor"])))
    goals = list(dict.fromkeys(rows["goal"]))
    fig, axes = plt.subplots(len(actors), len(goals), figsize=(5 * len(goals), 3.8 * len(actors)), squeeze=False)
    for i, (env, actor) in enumerate(actors):
        for j, goal in enumerate(goals):
            ax = axes[i, j]
            draw(ax, rows[(rows.env == env) & (rows.actor == actor) & (rows.goal == goal)])
            ax.set_title(f"{actor} · {goal}: {title}", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _figures(rows: pd.DataFrame, figdir: Path) -> list[str]:
    figdir.mkdir(parents=True, exist_ok=True)
    first = "trained" if "trained" in set(rows["prior"]) else rows["prior"].iloc[0]
    first_shift = rows["shift"].iloc[0]
    trained = rows[(rows["prior"] == first) & (rows["shift"] == first_shift)]

    def coefficient(ax, g):
        for rule, r in g[~g.rule.isin(["frozen", "prior_only"])].groupby("rule", sort=False):
            x = rows_alpha(r)
            ax.plot(x, r["mean"], marker="o", label=rule)
            ax.fill_between(x, r["ci_low"], r["ci_high"], alpha=0.2)
        for rule, style in (("frozen", "--"), ("prior_only", ":")):
            r = g[g.rule == rule]
            if len(r):
                ax.axhline(r["mean"].iloc[0], color="k", ls=style, label=rule)

    def frontier(ax, g):
        for rule, r in g.groupby("rule", sort=False):
            ax.errorbar(r["kl"], r["mean"], yerr=r["se"].fillna(0), marker="o", ls="-" if len(r) > 1 else "",
                        label=rule, capsize=2)
        ax.set_xscale("symlog", linthresh=1e-2)

    qualities = [q for q in grid.PRIOR_QUALITIES if q in set(rows["prior"])]

    def degradation(ax, g):
        for rule, r in g.groupby("rule", sort=False):
            best = r.groupby("prior")["mean"].max().reindex(qualities)
            ax.plot(range(len(qualities)), best.to_numpy(), marker="o", label=rule)
        ax.set_xticks(range(len(qualities)), qualities)

    made = [
        _panel_figure(figdir / "return_vs_coefficient.png", trained, coefficient,
                      f"goal return vs coefficient ({first} prior)",
                      "PoE-equivalent coefficient α (kl_reg: β/(1+β))",
                      "goal return per episode (mean ± 95% CI over seeds)"),
        _panel_figure(figdir / "kl_frontier.png", trained, frontier, f"deviation vs goal return ({first} prior)",
                      "mean per-step KL(composed ‖ frozen actor) [nats]", "goal return per episode (mean ± s.e.)"),
    ]
    if len(qualities) > 1:
        made.append(_panel_figure(figdir / "prior_quality.png", rows[rows["shift"] == first_shift], degradation,
                                  "prior quality degradation", "prior quality",
                                  "best goal return over coefficients (mean over seeds)"))
    return made


def rows_alpha(r: pd.DataFrame) -> np.ndarray:
    from poe_jax import compose

    return np.asarray([float(compose.alpha_equiv(rule, p)) for rule, p in zip(r["rule"], r["param"])])


def write_report(out: str | Path, kl_budget: float = 0.5, level: float = 0.05) -> Path:
    """Write ``out/report.md`` and ``out/figures/*.png`` for the run in ``out``."""
    out = Path(out)
    df = grid.read_episodes(out)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    rows, excluded = stats.row_stats(df, level=level)
    cells = stats.label_cells(rows, kl_budget=kl_budget)
    figs = _figures(rows, out / "figures")
    lines = [f"# poe_jax report: {summary.get('spec', {}).get('name') or out.name}", ""]
    lines += [_RULES_TEXT.format(level=level, budget=kl_budget), ""]
    for point in ("oracle", "selector"):
        counts = cells[f"{point}_label"].value_counts()
        lines.append(f"**{point.replace('selector', 'KL-budget selector')} operating point:** " + ", ".join(
            f"{lab} {int(counts.get(lab, 0))}" for lab in ("HELP", "FROZEN", "HURT")) + f" of {len(cells)} (cell, rule) pairs.")
    lines += ["", f"Exclusions: {excluded['non_finite_episodes']} of {excluded['episodes']} episodes had a non-finite goal return.", ""]
    lines += ["## Per cell and rule", "",
              "| env | goal | prior | shift | rule | oracle coef | mean ± s.e. | frozen | p (Holm) | label | selector coef | regret | selector label |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rs = rows.set_index(stats.ROW)
    for _, c in cells.iterrows():
        o = rs.loc[(c.env, c.actor, c.goal, c.prior, c["shift"], c.rule, c.oracle_param)]
        lines.append(f"| {c.env} | {c.goal} | {c.prior} | {c['shift']} | {c.rule} | {c.oracle_param:g} | "
                     f"{_fmt(o['mean'])} ± {_fmt(o['se'])} | {_fmt(o['frozen_mean'])} | {_p(o['p_holm'])} | "
                     f"**{c.oracle_label}** | {c.selector_param:g} | {_fmt(c.regret)} | {c.selector_label} |")
    sv = df.groupby("rule")[[f"support_violation_{e}" for e in grid.SUPPORT_EPS]].mean()
    lines += ["", "## Support violation (fraction of executed actions with actor density < ε)", "",
              "| rule | " + " | ".join(f"ε = {e}" for e in grid.SUPPORT_EPS) + " |",
              "|---|" + "---|" * len(grid.SUPPORT_EPS)]
    for rule, r in sv.iterrows():
        lines.append(f"| {rule} | " + " | ".join(f"{v:.3f}" for v in r.to_numpy()) + " |")
    lines += ["", "## Figures", ""] + [f"![{f}](figures/{f})" for f in figs]
    lines += ["", "## Spec and versions", "", "```json", json.dumps({"spec": summary.get("spec"),
              "versions": summary.get("versions"), "backend": summary.get("backend"),
              "devices": summary.get("devices"), "wall_s": summary.get("wall_s")}, indent=2), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
