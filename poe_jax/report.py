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


def _per_goal_figure(path: Path, goals: list[str], draw, title: str, xlabel: str, ylabel: str) -> str:
    """One panel per goal; ``draw(ax, goal)`` plots it. Saves ``path`` and returns its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(goals), figsize=(5 * len(goals), 4), squeeze=False)
    for ax, goal in zip(axes[0], goals):
        draw(ax, goal)
        ax.set_title(f"{goal}: {title}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _figures(rows: pd.DataFrame, figdir: Path) -> list[str]:
    figdir.mkdir(parents=True, exist_ok=True)
    first = "trained" if "trained" in set(rows["prior"]) else rows["prior"].iloc[0]
    trained = rows[rows["prior"] == first]
    goals = list(dict.fromkeys(trained["goal"]))

    def coefficient(ax, goal):
        g = trained[(trained.goal == goal) & (trained["shift"] == trained["shift"].iloc[0])]
        for rule, r in g[g.rule != "frozen"].groupby("rule", sort=False):
            x = rows_alpha(r)
            ax.plot(x, r["mean"], marker="o", label=rule)
            ax.fill_between(x, r["ci_low"], r["ci_high"], alpha=0.2)
        fz = g[g.rule == "frozen"]
        if len(fz):
            ax.axhline(fz["mean"].iloc[0], color="k", ls="--", label="frozen")

    def frontier(ax, goal):
        g = trained[trained.goal == goal]
        for rule, r in g.groupby("rule", sort=False):
            ax.errorbar(r["kl"], r["mean"], yerr=r["se"].fillna(0), marker="o", ls="-" if len(r) > 1 else "",
                        label=rule, capsize=2)
        ax.set_xscale("symlog", linthresh=1e-2)

    qualities = [q for q in grid.PRIOR_QUALITIES if q in set(rows["prior"])]

    def degradation(ax, goal):
        for rule, r in rows[rows.goal == goal].groupby("rule", sort=False):
            best = r.groupby("prior")["mean"].max().reindex(qualities)
            ax.plot(range(len(qualities)), best.to_numpy(), marker="o", label=rule)
        ax.set_xticks(range(len(qualities)), qualities)

    made = [
        _per_goal_figure(figdir / "return_vs_coefficient.png", goals, coefficient, "goal return vs coefficient",
                         "PoE-equivalent coefficient α (kl_reg: β/(1+β))",
                         "goal return per episode (mean ± 95% CI over seeds)"),
        _per_goal_figure(figdir / "kl_frontier.png", goals, frontier, "deviation vs goal return",
                         "mean per-step KL(composed ‖ frozen actor) [nats]", "goal return per episode (mean ± s.e.)"),
    ]
    if len(qualities) > 1:
        made.append(_per_goal_figure(figdir / "prior_quality.png", goals, degradation, "prior quality degradation",
                                     "prior quality", "best goal return over coefficients (mean over seeds)"))
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
