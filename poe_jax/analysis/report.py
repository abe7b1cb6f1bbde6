"""``poe-jax report DIR``: ``DIR/report.md`` and ``DIR/figures/*.png`` from a grid run.

The statistics and their rules are those of :mod:`poe_jax.analysis.stats` (restated in the
report). Figures: goal return vs coefficient per rule (mean over seeds with a 95%
band), the KL-vs-return frontier, and prior-quality degradation curves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from poe_jax import checkpoints
from poe_jax.analysis import claims, stats, styles
from poe_jax.kernels import rules as kernels
from poe_jax.grid import metrics, store
from poe_jax.kernels import priors
from poe_jax.grid.spec import load_plugins, plugin_key

__all__ = ["console_lines", "Aggregate", "Analysis", "ReportError", "analyze", "render", "write_report"]


class ReportError(ValueError):
    """The run cannot be reported as it is; the message says why and what to do."""

_RULES_TEXT = """\
**How to read this.** The unit of replication is the seed (an initial state): episodes are averaged
within each (cell, rule, coefficient, seed) first. A cell is (grid, env, actor, goal, prior quality,
shift). Each rule and coefficient is compared with `frozen` of the same cell on the same seeds.
Effect first: the paired difference with its 95% interval, and the minimum detectable effect (MDE: the
difference the family's first Holm step detects with 80% power). Then the test: a paired sign-flip
permutation test (valid where returns are bimodal: falls, flips), with Holm's correction **within one
cell's coefficients of one rule** (the family is stated per row; it never spans the run, so no label
changes when another grid is added). Labels: **HELP** when significantly better (Holm-adjusted p <
{level}) and the episodes are not shorter than frozen's (one-sided paired t-test on lengths, and not by
more than 10%); a significant gain with shorter episodes is **FALL**; **HURT** when significantly worse;
otherwise **FROZEN** only if the 95% interval of the difference lies within ±{effect:.0%} of frozen's
return (no change that matters), else **UNDERPOWERED** (the data allow both "no change" and a change
that matters). Policies that execute identical actions are tested once (`kl_reg` beside `poe` at
α = β/(1+β) when the mean is executed). Operating points: the **cross-fitted oracle** (the best
coefficient chosen on alternate seeds and evaluated on the others, both ways: no hindsight) and the
**KL-budget selector** (largest mean per-step KL(composed ‖ actor) within {budget} nats; it looks at no
return). Exclusions: episodes with a non-finite goal return are dropped and counted below."""


def _claims_lines(table: pd.DataFrame) -> list[str]:
    """The study's claims, each tested on its own population (``poe_jax.analysis.claims``)."""
    lines = ["", "## The study's claims, each on its own population", "",
             "Each claim is tested the study's way on the population it is about (second column), with its own "
             "multiple-testing family; its verdict follows the rule in the last column, stated before looking. "
             "Verdicts: reproduced, partly, not reproduced, vacuous (the test cannot fail), premise not met, "
             "underpowered, not covered. Numbers come from this run only.", "",
             "| # | claim | population | test | measured | verdict | verdict rule |",
             "|---|---|---|---|---|---|---|"]
    cell = lambda x: str(x).replace("|", "\\|")  # noqa: E731  (|ΔJ| inside a table cell)
    for _, r in table.iterrows():
        lines.append(f"| {r['claim']} | {cell(r['statement'])} | {cell(r['population'])} | {cell(r['test'])} | "
                     f"{cell(r['effect'])} | **{r['verdict']}** | {cell(r['rule'])} |")
    across = table["across_checkpoints"]
    if across.ne("").any():
        lines += ["", "**Across checkpoints.** This run has checkpoint sets (`zoo:NAME@*` or a list: one grid per "
                  "checkpoint). A claim whose test read a set is also decided on one checkpoint at a time, with its "
                  "own test and family: slice k takes the k-th grid of every set (seed 0 first) and the grids outside "
                  "sets (`poe_jax.analysis.claims.checkpoint_slices`). `holds: VERDICT`: the same verdict on every "
                  "checkpoint; `differs`: not.", "",
                  "| # | verdict (all checkpoints) | per checkpoint | across checkpoints |", "|---|---|---|---|"]
        for (_, r), a in zip(table.iterrows(), across):
            if a:
                lines.append(f"| {r['claim']} | {r['verdict']} | {cell(r.get('per_checkpoint', '')) or '—'} | "
                             f"**{a}** |")
    return lines


class Aggregate(NamedTuple):
    """Across cells, per prior quality (rliable style): the table and the performance profile's data."""

    table: pd.DataFrame
    dropped: int
    quality: str
    profile: pd.DataFrame


def _aggregate(df: pd.DataFrame, cells: pd.DataFrame) -> Aggregate | None:
    """IQM, mean and paired probability of improvement across cells per prior quality, and the performance
    profile of the trained prior (or the first quality); None when fewer than two rules can be normalised."""
    runs, dropped = stats.normalized_runs(df[df["shift"] == "none"], cells, point="selector")  # frozen once per quality
    if runs.empty or runs["rule"].nunique() < 2:
        return None
    quality = "trained" if "trained" in set(runs["prior"]) else runs["prior"].iloc[0]
    mine = runs[(runs["prior"] == quality) & ~runs["sample"].astype(bool)]
    mine = mine if len(mine) else runs[runs["prior"] == quality]
    taus = np.linspace(0.0, max(2.0, float(np.nanquantile(mine["score"], 0.95))), 61)
    return Aggregate(stats.aggregate(runs), dropped, quality, stats.performance_profile(mine, taus))


def _aggregate_section(agg: Aggregate | None, out: Path) -> tuple[list[str], str | None]:
    """The aggregate's table (``aggregate.csv``), its lines and its figure."""
    if agg is None:
        return [], None
    figdir = out / "figures"
    _csv(agg.table, out / "aggregate.csv")
    dropped = agg.dropped
    lines = ["", "## Across cells, per prior quality: IQM, mean and P(improvement) (95% stratified bootstrap CIs)", "",
             "Each rule at its KL-budget selector's coefficient (what a deployment without hindsight would pick), per "
             "prior quality and execution mode (a broken prior is never pooled with the trained one, nor sampled "
             "actions with executed means), over the cells without a shift (claim 9 has the shifts). Score of a run (cell, seed): its "
             "mean goal return divided by frozen's mean in the same cell, so frozen averages 1; each recorded episode "
             "counts once. IQM: the mean of the middle 50% of the runs; P(improve): per cell, the share of seeds on "
             "which the rule beats frozen *on the same seed* (paired), averaged over cells. Intervals: 2,000 "
             "resamples of the seeds within each cell (pairs kept). These sit beside the per-cell tests; they do not "
             "replace them." + (f" {dropped} cells where frozen earned no goal reward cannot be normalised and are "
                                "left out." if dropped else ""), "",
             "| prior | execution | rule | cells | runs | IQM [95% CI] | mean [95% CI] | P(improve over frozen) [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in agg.table.iterrows():
        pi = ("–" if r["rule"] == "frozen" or not np.isfinite(r.get("p_improve", np.nan)) else
              f"{r['p_improve']:.2f} [{r['p_improve_low']:.2f}, {r['p_improve_high']:.2f}]")
        lines.append(f"| {r['prior']} | {r['execution']} | {r['rule']} | {r['cells']} | {r['runs']} | {r['iqm']:.3f} [{r['iqm_low']:.3f}, "
                     f"{r['iqm_high']:.3f}] | {r['mean']:.3f} [{r['mean_low']:.3f}, {r['mean_high']:.3f}] | {pi} |")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for rule, g in agg.profile.groupby("rule", sort=False):
        style = _style(rule)
        ax.plot(g["tau"], g["fraction"], ls=style["ls"] or "-", color=style["color"], label=rule)
        ax.fill_between(g["tau"], g["low"], g["high"], alpha=0.15, color=style["color"])
    ax.axvline(1.0, color="k", lw=0.5)
    ax.set_xlabel("τ: goal return / frozen's mean in the cell", fontsize=8)
    ax.set_ylabel("fraction of runs with score > τ (95% CI band)", fontsize=8)
    ax.set_title(f"Performance profile ({agg.quality} prior, selector coefficient)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    figdir.mkdir(parents=True, exist_ok=True)
    _png(fig, figdir / "performance_profile.png")
    return lines, "performance_profile.png"


def _fmt(x, nd=1):
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def _p(x):
    return "–" if not np.isfinite(x) else (f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}")


def _panel_figure(path: Path, rows: pd.DataFrame, draw, title: str, xlabel: str, ylabel: str,
                  columns: int = 3) -> str:
    """One panel per (grid, goal) the rows hold with more than one point to draw (no empty or single-point
    panels), wrapped ``columns`` to a line; each titled with its env, actor and goal (and the grid's name when
    it is not the actor's). ``draw(ax, sub)`` plots one panel's rows. Saves ``path`` and returns its name."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched

    panels = [(name, goal) for name, goal in dict.fromkeys(zip(rows["grid"], rows["goal"]))
              if len(rows[(rows.grid == name) & (rows.goal == goal) & (rows.rule != "frozen")]) > 1]
    panels = panels or list(dict.fromkeys(zip(rows["grid"], rows["goal"])))[:1]
    ncol = min(columns, len(panels))
    nrow = -(-len(panels) // ncol)
    fig = Figure(figsize=(5 * ncol, 3.9 * nrow + 0.6))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for k, (name, goal) in enumerate(panels):
        ax = axes[k // ncol, k % ncol]
        sub = rows[(rows.grid == name) & (rows.goal == goal)]
        draw(ax, sub)
        env, actor = sub["env"].iloc[0], sub["actor"].iloc[0]
        extra = "" if name in ("", actor, f"{env}-{actor}") else f"\n(grid {name})"
        ax.set_title(f"{env} · {actor} · {goal}{extra}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for k in range(len(panels), nrow * ncol):
        axes[k // ncol, k % ncol].set_visible(False)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    _png(fig, path)
    return path.name


def _style(rule: str) -> dict:
    s = styles.style(rule)
    return {"marker": s.marker, "ls": s.linestyle, "color": s.color, "label": rule}


CI_NOTE = "mean ± 95% CI over seeds"  # the one error-bar convention of every figure


def _figures(rows: pd.DataFrame, cells: pd.DataFrame, figdir: Path) -> list[str]:
    """Per prior quality: goal return vs coefficient, the KL frontier and survival (episode length);
    then prior-quality degradation at the KL-budget selector's coefficient. Every error bar is a 95% CI."""
    figdir.mkdir(parents=True, exist_ok=True)
    first_shift = rows["shift"].iloc[0]
    qualities = [q for q in priors.names() if q in set(rows["prior"])]
    qualities += [q for q in dict.fromkeys(rows["prior"]) if q not in qualities]

    def coefficient(ax, g, column="mean", band=True):
        for rule, r in g[~g.rule.isin(["frozen", "prior_only"])].groupby("rule", sort=False):
            x = rows_alpha(r)
            if np.isnan(x).any():  # poe_adaptive, iql_guided, critic_greedy: no fixed alpha (see the KL frontier)
                continue
            ax.plot(x, r[column], **_style(rule))
            if band:
                ax.fill_between(x, r["ci_low"], r["ci_high"], alpha=0.15)
        for rule, style in (("frozen", "--"), ("prior_only", ":")):
            r = g[g.rule == rule]
            if len(r):
                ax.axhline(r[column].iloc[0], color="k", ls=style, label=rule)

    def frontier(ax, g):
        for rule, r in g.groupby("rule", sort=False):
            style = _style(rule)
            style["ls"] = style["ls"] if len(r) > 1 else ""
            ax.errorbar(r["kl"], r["mean"], yerr=(r["ci_high"] - r["mean"]).fillna(0), capsize=2, **style)
        ax.set_xscale("symlog", linthresh=1e-2)

    made = []
    for k, q in enumerate(qualities):
        sub = rows[(rows["prior"] == q) & (rows["shift"] == first_shift)]
        tag = "" if k == 0 else f"-{q}"  # the first quality keeps the plain names
        made += [
            _panel_figure(figdir / f"return_vs_coefficient{tag}.png", sub, coefficient,
                          f"Goal return vs coefficient ({q} prior; poe and kl_reg at equal α execute the same mean)",
                          "PoE-equivalent coefficient α (kl_reg: β/(1+β))", f"goal return per episode ({CI_NOTE})"),
            _panel_figure(figdir / f"kl_frontier{tag}.png", sub, frontier,
                          f"Deviation from the frozen actor vs goal return ({q} prior)",
                          "mean per-step KL(composed ‖ frozen actor) [nats]", f"goal return per episode ({CI_NOTE})"),
            _panel_figure(figdir / f"survival{tag}.png", sub, lambda ax, g: coefficient(ax, g, "length", band=False),
                          f"Survival: episode length vs coefficient ({q} prior; next to the goal return above)",
                          "PoE-equivalent coefficient α (kl_reg: β/(1+β))", "episode length (mean over seeds)"),
        ]
    if len(qualities) > 1:
        chosen = cells.set_index([*stats.CELL, "rule"])["selector_param"]

        def degradation(ax, g):
            order = list(dict.fromkeys(g["rule"]))
            for rule, r in g.groupby("rule", sort=False):
                dx = 0.04 * (order.index(rule) - (len(order) - 1) / 2)  # a small offset: equal points stay visible
                pts = []
                for q in qualities:
                    rq = r[r.prior == q]
                    if rq.empty:
                        pts.append((np.nan, np.nan, np.nan))
                        continue
                    key = (*(rq.iloc[0][c] for c in stats.CELL), rule)
                    p = chosen.get(key, rq["param"].iloc[0])
                    row = rq[rq["param"] == p].iloc[0]
                    pts.append((row["mean"], row["ci_high"] - row["mean"], p))
                m, half, ps = (np.asarray(v, float) for v in zip(*pts))
                style = _style(rule)
                style["ls"] = style["ls"] or "-"
                ax.errorbar(np.arange(len(qualities)) + dx, m, yerr=np.nan_to_num(half), capsize=2, **style)
                if rule not in ("frozen", "prior_only"):
                    for x, (y, pv) in enumerate(zip(m, ps)):
                        if np.isfinite(y):
                            ax.annotate(f"{pv:g}", (x + dx, y), fontsize=6, textcoords="offset points", xytext=(3, 3))
            ax.set_xticks(range(len(qualities)), qualities)

        made.append(_panel_figure(figdir / "prior_quality.png", rows[rows["shift"] == first_shift], degradation,
                                  "Prior-quality degradation at the KL-budget selector's coefficient (annotated)",
                                  "prior quality", f"goal return per episode ({CI_NOTE})"))
    return made


def rows_alpha(r: pd.DataFrame) -> np.ndarray:
    return np.asarray([kernels.RULES[rule].equiv(p) if rule in kernels.RULES else np.nan
                       for rule, p in zip(r["rule"], r["param"])])


class Analysis(NamedTuple):
    """What a run's stored episodes say (:func:`analyze`), before anything is written (:func:`render`).

    Attributes:
        out: the run folder. kl_budget, level: the selector's budget and the tests' level.
        df: the recorded episodes. summary: the run's ``summary.json``. head: the report's first lines.
        incomplete: fewer episodes than the grids have (or a run writing now). excluded: episodes left out.
        rows: per (cell, rule, coefficient) statistics (None: nothing to compare). cells: the per-cell labels.
        claims: the study's claims (None while incomplete). curve, ratios: claims 2 and 9's tables.
        aggregate: across cells (:class:`Aggregate`). tracking: the tracking error of goals with a target.
        offpolicy, offpolicy_notes: the stored off-policy scores (``poe-jax score``) and why grids lack them.
        deviation: the performance-difference bound's check. support: support violation per rule.
        metrics: every registered per-step metric's episode mean per (goal, prior, rule, param).
        checkpoints: per row of a checkpoint set, whether its answer holds across the set's checkpoints
            (:func:`poe_jax.analysis.stats.across_checkpoints`; empty without a set).
        calibration: per (grid, goal, prior quality, poe α), the prior's calibration on held-out actions
            (:mod:`poe_jax.analysis.calibration`, from the run summary) beside PoE's change from frozen.
    """

    out: Path
    kl_budget: float
    level: float
    df: pd.DataFrame
    summary: dict
    head: list
    incomplete: bool
    excluded: dict
    rows: pd.DataFrame | None = None
    cells: pd.DataFrame | None = None
    claims: pd.DataFrame | None = None
    curve: pd.DataFrame | None = None
    ratios: pd.DataFrame | None = None
    aggregate: Aggregate | None = None
    tracking: pd.DataFrame | None = None
    offpolicy: pd.DataFrame | None = None
    offpolicy_notes: list = []
    deviation: pd.DataFrame | None = None
    support: pd.DataFrame | None = None
    metrics: pd.DataFrame | None = None
    checkpoints: pd.DataFrame | None = None
    calibration: pd.DataFrame | None = None


def write_report(out: str | Path, kl_budget: float = 0.5, level: float = 0.05, states: str | Path | None = None,
                 partial: bool = False, plugins=()) -> Path:
    """Write ``out/report.md``, its tables (``*.csv``) and ``out/figures/*.png`` for the run in ``out``:
    :func:`render` of :func:`analyze`.

    ``states``: dataset states for the off-policy scorer; given, the scoring step runs first
    (:func:`poe_jax.analysis.offpolicy.score_run`, what ``poe-jax score DIR --states F`` does). Otherwise the
    report shows the scores the run stored.

    A run folder is data: nothing named in it is imported. ``plugins`` (module names or ``.py``
    files) are imported first, e.g. the ones the run was made with, so their rules, goals and
    metrics are known; the report says which of the run's plugins were not given.

    An unfinished run (fewer episodes than its grids have, or a run writing into ``out`` now) is
    refused unless ``partial``; a partial report says INCOMPLETE at the top and decides no claim.
    """
    _check_args(kl_budget, level)
    out = Path(out)
    if states is not None:  # a file the caller named must be usable: refused now, not skipped later
        from poe_jax.analysis import offpolicy

        try:
            offpolicy.load_states(states)
        except (ValueError, OSError) as e:
            raise ReportError(f"states (--states): {e}") from None
        _check_outputs(out)
        load_plugins(plugins)
        offpolicy.score_run(out, states)
    return render(analyze(out, kl_budget, level, partial, plugins))


def console_lines(out: str | Path, since: float = 0.0) -> list[str]:
    """What ``poe-jax report`` prints after writing: the oracle labels' counts per prior quality, each claim's
    verdict, and the files the report wrote (modified at or after ``since``, a ``time.time()``)."""
    out = Path(out)
    lines = [f"wrote {out / 'report.md'}"]
    labels = out / "labels.csv"
    if labels.is_file():
        t = pd.read_csv(labels)
        t = t[t["point"].str.startswith("oracle")]
        for prior, g in t.groupby("prior", sort=False):
            counts = g["label"].value_counts()
            lines.append(f"  {prior} prior, at the cross-fitted oracle: " + ", ".join(
                f"{lab} {int(counts.get(lab, 0))}" for lab in stats.LABELS if counts.get(lab, 0)) +
                f" of {len(g)} (cell, rule) pairs")
    claims_file = out / "claims.csv"
    if claims_file.is_file():
        lines.append("The study's claims (claims.csv; population and test in report.md):")
        for r in pd.read_csv(claims_file, keep_default_na=False).itertuples():
            statement = str(r.statement)
            statement = statement if len(statement) <= 70 else statement[:70].rsplit(" ", 1)[0] + " ..."
            across = str(getattr(r, "across_checkpoints", ""))  # absent from a report of an earlier version
            across = f"  [across checkpoints: {across}]" if across else ""
            lines.append(f"  {r.claim}. {str(r.verdict).upper():16s} {statement}{across}")
    elif (out / "report.md").is_file() and "INCOMPLETE" in (out / "report.md").read_text()[:2000]:
        lines.append("No claim decided: the run is INCOMPLETE (see report.md).")
    files = sorted(p.relative_to(out).as_posix() for p in [*out.glob("*.csv"), *out.glob("*.md"),
                                                            *(out / "figures").glob("*.png")]
                   if p.is_file() and p.stat().st_mtime >= since)
    lines.append(f"Files: {', '.join(files)}")
    return lines


def _check_args(kl_budget, level) -> None:
    if isinstance(kl_budget, bool) or not isinstance(kl_budget, (int, float)) or not (math.isfinite(kl_budget)
                                                                                      and kl_budget > 0):
        raise ReportError(f"kl_budget (--kl-budget): must be a finite number > 0 (nats per step); got {kl_budget!r}")
    if not 0 < level < 1:
        raise ReportError(f"level: must be in (0, 1); got {level!r}")


def analyze(out: str | Path, kl_budget: float = 0.5, level: float = 0.05, partial: bool = False,
            plugins=()) -> Analysis:
    """The run's statistics, claims and labels (:class:`Analysis`), from its stored records only: nothing is
    written and no JAX runs. Refuses an unfinished run unless ``partial`` (see :func:`write_report`)."""
    from poe_jax.analysis import offpolicy

    _check_args(kl_budget, level)
    out = Path(out)
    _check_outputs(out)
    load_plugins(plugins)  # the caller's, never the run folder's
    running = any(store.writing(d) for d in {out, *store.grid_dirs(out)})
    recorded, expected = store.progress(out)
    incomplete = running or recorded < expected
    if incomplete and not partial:
        now = "a run is writing into it now; " if running else ""
        raise ReportError(f"{out}: {recorded} of {expected} episodes; {now}finish it with the same command "
                          "(poe-jax run ... --out DIR), or report what is there with --partial")
    unloaded = _unloaded_plugins(out, plugins)
    df = store.read_episodes(out)
    summary = _summary(out)
    if "frozen" not in set(df["rule"]):
        raise ReportError(f"{out}: the grid has no 'frozen' rule; the report compares every rule with frozen on the "
                          "same seeds (add `frozen = []` to [rules] and run the grid into a new DIR)")
    rows, excluded = stats.row_stats(df, level=level)
    head = _head_lines(out, summary, incomplete, running, (recorded, expected), unloaded)
    base = Analysis(out, kl_budget, level, df, summary, head, incomplete, excluded)
    if rows.empty or not rows["rule"].ne("frozen").any() or not rows["n_pairs"].fillna(0).gt(0).any():
        return base
    cells = stats.label_cells(rows, kl_budget=kl_budget)
    ev = claims.Evidence(df, rows, cells, level, kl_budget, _actors(summary))
    decided = {} if incomplete else {"claims": claims.evaluate(ev), "curve": claims.degradation_curve(ev),
                                     "ratios": claims.shift_ratios(ev)}
    offp, off_notes = offpolicy.read_scores(out) if "delta_pi_upper" in df else (None, [])
    return base._replace(
        rows=rows, cells=cells, aggregate=_aggregate(df, cells), tracking=stats.tracking(df, level=level),
        offpolicy=offp, offpolicy_notes=off_notes, deviation=stats.deviation(df) if "delta_pi_upper" in df else None,
        support=stats.mean_keep_nan(df, ["rule"], [f"support_violation_{e}" for e in metrics.SUPPORT_EPS]),
        metrics=_metric_means(df), checkpoints=stats.across_checkpoints(df, rows, level),
        calibration=_calibration_table(summary, rows), **decided)


def _metric_means(df: pd.DataFrame) -> pd.DataFrame:
    """Each registered per-step metric's mean over episodes, per (goal, prior, shift, rule, param): every
    ``mean`` signal that is not part of the episode's accounting (a user's registered metric included)."""
    cols = [c for c, r in metrics.columns().items() if r == "mean" and c not in metrics.EPISODE_SIGNALS and c in df]
    keys = ["goal", "prior", "shift", "rule", "param"]
    return stats.mean_keep_nan(df, keys, cols).reset_index()


def render(a: Analysis) -> Path:
    """Write the report of :func:`analyze`'s result: ``report.md``, its tables and figures (only inside the run
    folder, each file atomically). Returns the path of ``report.md``."""
    out, df, cells, rows, level, kl_budget = a.out, a.df, a.cells, a.rows, a.level, a.kl_budget
    if rows is None:
        return _nothing_to_compare(out, df, a.head, a.incomplete, a.excluded)
    _csv(stats.labels_table(rows, cells), out / "labels.csv")
    _csv(rows.drop(columns=["guarded", "sd_diff"]), out / "rows.csv")
    figs = _figures(rows, cells, out / "figures")
    lines = list(a.head)
    lines += [_RULES_TEXT.format(level=level, budget=kl_budget, effect=stats.EFFECT), ""]
    for point, col in (("cross-fitted oracle", "oracle_label"), ("KL-budget selector", "selector_label")):
        counts = cells[col].value_counts()
        lines.append(f"**{point} operating point:** " + ", ".join(
            f"{lab} {int(counts.get(lab, 0))}" for lab in stats.LABELS) + f" of {len(cells)} (cell, rule) pairs.")
    same = rows[rows["same_as"].ne("")]
    if len(same):
        lines.append(f" {len(same)} rows execute the same policy as another row of their cell (e.g. `kl_reg` at "
                     "β beside `poe` at α = β/(1+β) with the mean executed); they are tested once, under the other "
                     "row's name (`same_as` in `rows.csv`), and not counted above.")
    if df.attrs.get("duplicate_lanes_dropped"):
        lines.append(f" **Note:** {df.attrs['duplicate_lanes_dropped']} episodes were stored twice under the same lane "
                     "(two runs wrote into this DIR at once); each lane is counted once.")
    if df.attrs.get("prior_blind_recorded"):
        lines.append(" Rules that ignore the prior (`frozen`, the critic-only rules) ran once per (goal, shift, "
                     "seed, episode); the same episodes are the baseline under every prior quality, and aggregates "
                     "count each of them once per quality.")
    n_fall = int((cells["oracle_label"] == "FALL").sum())
    lines.append(f"FALL: {n_fall} (cell, rule) pairs at the oracle were significantly better than frozen only with "
                 "shorter episodes; they are not counted as HELP (`labels.csv` has `length` and `frozen_length`).")
    lines += ["", _episodes_line(df, a.excluded), ""]
    lines += _split_lines(cells)
    lines += _adversarial_lines(rows)
    if a.claims is None:
        (out / "claims.csv").unlink(missing_ok=True)  # a verdict from an earlier, complete report would mislead
        lines += ["## The study's claims", "", "Not decided: the run is INCOMPLETE (see the top). Finish it and "
                  "report again.", ""]
    else:
        _csv(a.claims, out / "claims.csv")
        lines += _claims_lines(a.claims)
        lines += _curve_lines(a.curve, out)
        lines += _shift_lines(a.ratios, out)
    lines += _checkpoint_lines(a.checkpoints, out)
    cal_lines, cal_fig = _calibration_section(a.calibration, out)
    lines += cal_lines
    figs += [cal_fig] if cal_fig else []
    agg_lines, agg_fig = _aggregate_section(a.aggregate, out)
    lines += agg_lines
    figs += [agg_fig] if agg_fig else []
    if a.tracking is not None and len(a.tracking):
        _csv(a.tracking, out / "tracking.csv")
        lines += _tracking_lines(a.tracking, level)
    offp = a.offpolicy
    critic = {}
    if offp is not None:
        _csv(offp, out / "offpolicy.csv")
        critic = {tuple(r[k] for k in ("grid", "goal", "prior", "rule", "param")): r["delta_q"]
                  for _, r in offp.iterrows()}

    lines += ["## Per cell and rule", "",
              "The cross-fitted oracle: `α (A→B / B→A)` are the coefficients each half of the seeds chose for the "
              "other; mean, difference from frozen (95% CI) and p are on the held-out seeds (one test per row). The "
              "selector's label is from its row's family (the cell's coefficients of that rule). `critic ΔQ`: the "
              "off-policy scorer at half A's coefficient (see below).", "",
              "| grid | goal | prior | shift | rule | oracle α (A→B / B→A) | mean (held out) | frozen | Δ [95% CI] | MDE | "
              "p | label | selector coef | regret | selector label | critic ΔQ |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, c in cells.iterrows():
        dq = critic.get((c.grid, c.goal, c.prior, c.rule, c.oracle_param), np.nan)
        lines.append(f"| {c.grid} | {c.goal} | {c.prior} | {c['shift']} | {c.rule} | {c.oracle_param:g} / "
                     f"{c.oracle_param_b:g} | {_fmt(c.oracle_mean)} | {_fmt(c.oracle_frozen_mean)} | "
                     f"{_fmt(c.oracle_diff)} [{_fmt(c.oracle_diff_low)}, {_fmt(c.oracle_diff_high)}] | "
                     f"{_fmt(c.oracle_mde)} | {_p(c.oracle_p)} | **{c.oracle_label}** | {c.selector_param:g} | "
                     f"{_fmt(c.regret)} | {c.selector_label} | {_fmt(dq, 2)} |")
    lines += _selector_lines(rows, cells, kl_budget)
    if a.deviation is not None:
        _csv(a.deviation, out / "deviation.csv")
        lines += _deviation_lines(a.deviation)
    lines += _offpolicy_lines(df, offp, a.offpolicy_notes, level)
    lines += _success_lines(df)
    lines += ["", "## Support violation (fraction of executed actions with actor density < ε)", "",
              "| rule | " + " | ".join(f"ε = {e}" for e in metrics.SUPPORT_EPS) + " |",
              "|---|" + "---|" * len(metrics.SUPPORT_EPS)]
    for rule, r in a.support.iterrows():
        lines.append(f"| {rule} | " + " | ".join(_fmt(float(v), 3) for v in r.to_numpy()) + " |")
    lines += _metric_lines(a.metrics, out)
    lines += ["", "## Figures", ""] + [f"![{f}](figures/{f})" for f in figs]
    summary = a.summary
    lines += ["", "## Spec and versions", "", "```json", json.dumps({"spec": _portable(summary.get("spec")),
              "versions": summary.get("versions"), "backend": summary.get("backend"),
              "devices": summary.get("devices"), "host": summary.get("host"), "wall_s": summary.get("wall_s")},
              indent=2), "```", ""]
    path = out / "report.md"
    store.write_file(path, "\n".join(lines), out)
    return path


def _calibration_table(summary: dict, rows: pd.DataFrame) -> pd.DataFrame | None:
    """Per (grid, goal, prior quality, poe α): the prior's calibration (E[z²], NLL per action entry; the run
    summary's, read as data: non-numbers are dropped) beside PoE's change from frozen, as a % of frozen's mean
    with its 95% CI. ``None`` when no grid measured its prior."""
    found = []
    for grid, sub in _grid_summaries(summary, dict.fromkeys(rows["grid"])).items():
        cal = sub.get("calibration")
        entries = cal.get("entries") if isinstance(cal, dict) else None
        prior = (sub.get("prior") or {}).get("name") if isinstance(sub.get("prior"), dict) else None
        for e in entries if isinstance(entries, list) else []:
            if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("goal", "quality")):
                continue
            ez2, nll = e.get("ez2"), e.get("nll")
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (ez2, nll)):
                found.append({"grid": grid, "prior_checkpoint": str(prior or ""), "goal": e["goal"],
                              "prior": e["quality"], "ez2": float(ez2), "nll": float(nll)})
    if not found:
        return None
    cal = pd.DataFrame(found)
    poe = rows[(rows["rule"] == "poe") & (rows["shift"] == rows["shift"].iloc[0])]
    poe = poe[["grid", "env", "actor", "goal", "prior", "param", "mean", "frozen_mean", "diff", "diff_low", "diff_high"]]
    out = cal.merge(poe, on=["grid", "goal", "prior"], how="inner")
    base = out["frozen_mean"].abs().where(out["frozen_mean"].abs() > 0)
    for col, src in (("change_pct", "diff"), ("change_low_pct", "diff_low"), ("change_high_pct", "diff_high")):
        out[col] = 100 * out[src] / base
    return out.sort_values(["grid", "goal", "param", "ez2"], kind="stable").reset_index(drop=True) if len(out) else None


def _calibration_section(table: pd.DataFrame | None, out: Path) -> tuple[list[str], str | None]:
    """``calibration.csv``, its section and ``figures/prior_calibration.png``: PoE's change from frozen against
    the prior's calibration, one point per (prior checkpoint, quality), a series per α."""
    if table is None or table.empty:
        return [], None
    _csv(table, out / "calibration.csv")
    lines = ["## Prior calibration", "",
             "How well each prior, at each quality, covers held-out actions of its data: E[z²] with z = (a − μ)/σ "
             "over action entries inside the bounds (1: calibrated; above: overconfident, its errors exceed its std; "
             "below: too vague), and the Gaussian NLL per entry. Beside it, PoE's change in goal return from frozen, as "
             "a % of frozen's mean [95% CI]. `calibration.csv` has every row.", "",
             "| grid | prior | goal | quality | E[z²] | NLL | " + "poe change from frozen, by α |", "|---|---|---|---|---|---|---|"]
    for (grid, goal, q), g in table.groupby(["grid", "goal", "prior"], sort=False):
        r0 = g.iloc[0]
        change = ", ".join(f"α {p:g}: {c:+.0f}% [{lo:+.0f}, {hi:+.0f}]" for p, c, lo, hi in
                           zip(g["param"], g["change_pct"], g["change_low_pct"], g["change_high_pct"]))
        lines.append(f"| {grid} | {r0.prior_checkpoint} | {goal} | {q} | {r0.ez2:.2f} | {r0.nll:.2f} | {change} |")
    lines.append("")

    def draw(ax, g):
        for p, r in g.groupby("param", sort=True):
            r = r.sort_values("ez2")
            yerr = np.vstack([r["change_pct"] - r["change_low_pct"], r["change_high_pct"] - r["change_pct"]])
            ax.errorbar(r["ez2"], r["change_pct"], yerr=np.nan_to_num(yerr), fmt="o", capsize=2, label=f"poe α = {p:g}")
            if p == g["param"].max():
                for _, x in r.iterrows():
                    name = x["prior"] if g["prior_checkpoint"].nunique() == 1 else f"{x['prior_checkpoint']}/{x['prior']}"
                    ax.annotate(name, (x["ez2"], x["change_pct"]), fontsize=6, textcoords="offset points",
                                xytext=(3, 3))
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", ls=":", lw=1)
        ax.axhline(0.0, color="k", ls="--", lw=1)

    panels = table.assign(grid=table["actor"])  # one panel per actor and goal: a checkpoint set's grids share it
    fig = _panel_figure(out / "figures" / "prior_calibration.png", panels.assign(rule="poe"), draw,
                        "PoE against the prior's calibration (1 = calibrated; right: overconfident; left: too vague)",
                        "E[z²] of held-out actions under the prior (log scale)",
                        f"poe's change from frozen, % of frozen ({CI_NOTE})")
    return lines, fig


def _metric_lines(table: pd.DataFrame | None, out: Path) -> list[str]:
    """``metrics.csv`` and its section: each registered per-step metric's episode mean per rule."""
    if table is None or table.empty:
        return []
    _csv(table, out / "metrics.csv")
    cols = [c for c in table.columns if c not in ("goal", "prior", "shift", "rule", "param")]
    per_rule = stats.mean_keep_nan(table, ["rule"], cols)
    lines = ["", "## Per-step metrics (episode means, averaged over cells; `metrics.csv` has every row)", "",
             "| rule | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for rule, r in per_rule.iterrows():
        lines.append(f"| {rule} | " + " | ".join("–" if not np.isfinite(v) else f"{v:.3g}" for v in r.to_numpy())
                     + " |")
    return lines


def _episodes_line(df: pd.DataFrame, excluded: dict) -> str:
    rows = excluded.get("nonfinite_action_rows") or []
    return (f"Episodes: {len(stats.distinct(df))} recorded (each counted once). Exclusions: "
            f"{excluded['non_finite_episodes']} episodes had a non-finite goal return; "
            f"{excluded.get('nonfinite_action_episodes', 0)} executed a NaN or inf action (MuJoCo resets its state "
            "on one, so their returns mean nothing)" + (": " + ", ".join(rows[:20]) if rows else "") + ".")


def _head_lines(out: Path, summary: dict, incomplete: bool, running: bool, counts, unloaded) -> list[str]:
    """The report's title, and what the reader must know first: an unfinished run, plugins not loaded."""
    lines = [f"# poe_jax report: {summary.get('spec', {}).get('name') or out.name}", ""]
    if incomplete:
        lines += [f"**INCOMPLETE: {counts[0]} of {counts[1]} episodes"
                  + (", and a run was writing into the folder" if running else "")
                  + ".** Every number below is of the episodes recorded so far; no claim is decided.", ""]
    lines += _provenance_lines(summary)
    if unloaded:
        lines += [f"**Plugins not loaded:** the run was made with {unloaded}; the report imports nothing named in a "
                  "run folder. Rules, goals and metrics of these plugins are reported by name only; pass them with "
                  "`poe-jax report DIR --plugin ...` to load them.", ""]
    return lines


def _grid_summaries(summary: dict, grids) -> dict:
    """Each grid's summary (``summary["grids"]`` of a run of several grids, else the run's own for each of
    ``grids``), read as data: entries that are not objects are dropped."""
    subs = summary.get("grids")
    subs = subs if isinstance(subs, dict) and subs else {g: summary for g in grids}
    return {str(k): v for k, v in subs.items() if isinstance(v, dict)}


def _actors(summary: dict) -> dict:
    """Each actor's provenance (name -> its card's data, scores, expert level), from the run's summary."""
    subs = _grid_summaries(summary, [""])
    found = (sub.get("actor") for sub in subs.values())
    return {a["name"]: a for a in found if isinstance(a, dict) and isinstance(a.get("name"), str)}


def _provenance_lines(summary: dict) -> list[str]:
    """What the actors were trained on and how they score, beside the published score of the same algorithm on
    the D4RL dataset of that name (from the run's summary: the cards it ran with)."""
    lines = []
    for a in _actors(summary).values():
        sc = checkpoints.score_ci(a)
        score = (f"; frozen score {sc}, mean [95% CI] (D4RL-normalised with D4RL's reference returns, the same "
                 "dynamics)") if sc else ""
        pub = checkpoints.published(a)
        pub = f"; published {pub[0]} on {pub[1]}: {pub[2]:g}" if pub else ""
        level = f"; medium-expert data with a {a['expert_level']}" if a.get("expert_level") else ""
        seed = f"; training seed {a['seed']}, a replica of `{a['replica_of']}`" if a.get("replica_of") else ""
        lines.append(f"- `{a.get('name')}` ({a.get('dataset') or 'no dataset'}): "
                     f"{a.get('data_source') or 'data source not recorded'}{score}{pub}{level}{seed}")
    return (["**Data.** The actors and what they were trained on (their cards):", "", *lines, ""]) if lines else []


def _nothing_to_compare(out: Path, df: pd.DataFrame, head: list[str], incomplete: bool, excluded: dict) -> Path:
    """The report of a run in which no rule has episodes beside frozen's on the same cell and seed (yet)."""
    for stale in ("claims.csv", "labels.csv", "rows.csv"):
        (out / stale).unlink(missing_ok=True)
    lines = list(head)
    lines += ["Nothing to compare: no rule has episodes beside frozen's on the same cell and seed. "
              + ("Finish the run and report again." if incomplete else
                 "Add rules to the grid (the report compares each with frozen)."), "", _episodes_line(df, excluded), ""]
    path = out / "report.md"
    store.write_file(path, "\n".join(lines), out)
    return path


def _check_outputs(out: Path) -> None:
    """The report writes only inside ``out``: a link in the folder (or in ``figures/``) that leads outside it is
    refused before anything is written."""
    top = out.resolve()
    for p in [*out.iterdir(), *((out / "figures").iterdir() if (out / "figures").is_dir() else ())]:
        if p.is_symlink():
            real = p.resolve()
            if real != top and top not in real.parents:
                raise ReportError(f"{p}: a link to {real}, outside the run folder; the report writes only inside "
                                  f"{out}: remove the link")


def _csv(df: pd.DataFrame, path: Path) -> None:
    """A table of the report, written atomically (a link or hard link at ``path`` is replaced, not written through)."""
    store.write_file(path, df.to_csv(index=False), path.parent)


def _png(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    store.write_file(path, buf.getvalue(), path.parent)


def _summary(out: Path) -> dict:
    """``out/summary.json`` (for names, versions and timing only), or ``{}`` when absent or unreadable."""
    if not (out / "summary.json").is_file():
        return {}
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _unloaded_plugins(out: Path, plugins) -> list[str]:
    """The plugins the run's grids were made with (their spec.json) that the caller did not give."""
    given = {plugin_key(p) for p in plugins}
    named = []
    for d in store.grid_dirs(out):
        sp = store.read_spec(d)
        refs = sp.get("plugins") or []
        base = sp.get("base_dir", ".") if isinstance(sp.get("base_dir"), str) else "."
        named += [str(r) for r in refs if isinstance(r, str) and plugin_key(r, base) not in given]
    return list(dict.fromkeys(named))


def _portable(spec):
    """The spec without ``base_dir`` (a path on the machine that ran it), at any depth."""
    if isinstance(spec, dict):
        return {k: _portable(v) for k, v in spec.items() if k != "base_dir"}
    return spec


def _success_lines(df: pd.DataFrame) -> list[str]:
    """AntMaze: success rate (goal reached) per cell, rule and coefficient, with a 95% Wilson interval."""
    has = df[df["success"].notna()]
    if has.empty:
        return []
    from scipy.stats import binomtest

    lines = ["", "## Success rate (AntMaze: episodes that reached the goal)", "",
             "| grid | env | goal | prior | shift | rule | coef | episodes | success | 95% CI |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, g in has.groupby(["grid", "env", "goal", "prior", "shift", "rule", "param"], sort=False):
        k, n = int(g["success"].astype(bool).sum()), len(g)
        ci = binomtest(k, n).proportion_ci(method="wilson")
        lines.append("| " + " | ".join(str(v) if not isinstance(v, float) else f"{v:g}" for v in key)
                     + f" | {n} | {k / n:.2f} | [{ci.low:.2f}, {ci.high:.2f}] |")
    return lines


def _adversarial_lines(rows: pd.DataFrame) -> list[str]:
    """One paragraph on why PoE collapses under an adversarial prior, with this grid's numbers."""
    if "adversarial" not in set(rows["prior"]):
        return []
    r = rows[rows.rule == "poe"]
    nums = []
    for (env, goal), g in r.groupby(["env", "goal"], sort=False):
        best = g.groupby("prior")["mean"].max()
        if {"adversarial", "trained"} <= set(best.index):
            nums.append(f"{env} {goal}: best poe {best['adversarial']:.0f} adversarial vs {best['trained']:.0f} trained"
                        + (f", {best['random']:.0f} random" if "random" in best.index else ""))
    return ["## Why PoE collapses under an adversarial prior", "",
            "PoE weights each expert by its precision: per dimension the composed mean is "
            "`((1−α)λ_θ μ_θ + α λ_g μ_g) / ((1−α)λ_θ + α λ_g)`. An `adversarial` prior keeps the trained "
            "prior's std with a uniformly random mean, so wherever the trained prior is confident (small "
            "σ_g, large λ_g) PoE defers to a mean that is wrong, and it does so at the states where the data "
            "agreed most, e.g. saturated actions; a `random` (untrained network, σ ≈ 1) or `uniform` (σ = m) "
            "prior has low precision everywhere and PoE stays near the actor. Additive blending is "
            "precision-blind and moves by α(μ_g − μ_θ) under all three. In this grid: "
            + ("; ".join(nums) if nums else "no poe rows") + ".", ""]


def _checkpoint_lines(t: pd.DataFrame | None, out: Path) -> list[str]:
    """``checkpoints.csv`` and its section: per row of a checkpoint set, the answer of each checkpoint."""
    if t is None or t.empty:
        (out / "checkpoints.csv").unlink(missing_ok=True)
        return []
    _csv(t, out / "checkpoints.csv")
    counts = t["verdict"].str.split(":").str[0].value_counts()
    lines = ["## Across checkpoints", "",
             f"{t['family'].nunique()} checkpoint set(s) (`zoo:NAME@*` or a list; one grid per checkpoint). Episodes are "
             "nested in seeds and seeds in checkpoints: each checkpoint's label is its own grid's (seeds as units), "
             "`p (nested)` is a t-test of the checkpoints' differences from frozen with the checkpoint as the unit "
             "(K − 1 degrees of freedom), Holm across a rule's coefficients. With a few checkpoints only a large, "
             "consistent effect reaches it. Verdicts: " + ", ".join(f"{k} {int(v)}" for k, v in counts.items()) +
             f" of {len(t)} rows (`checkpoints.csv`).", "",
             "| family | goal | prior | shift | rule | coef | labels per checkpoint | Δ per checkpoint | Δ mean | "
             "SD between | p (nested, Holm) | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        lines.append(f"| {r.family} | {r.goal} | {r.prior} | {r['shift']} | {r.rule} | {r.param:g} | {r.labels} | "
                     f"{r.diffs} | {r['diff']:.4g} | {r.sd_between:.4g} | {_p(r.p_nested_holm)} | {r.verdict} |")
    return lines + [""]


def _tracking_lines(track: pd.DataFrame, level: float) -> list[str]:
    """Goals that track a target (G3's speed): does some steering rule move the tracked signal toward it?"""
    cols = list(track.columns)
    target, signal = cols[cols.index("n") - 1], cols[cols.index("n") + 1]  # stats.tracking's layout
    lines = [f"## Goal tracking: does steering move `{signal}` toward the target `{target}`?", "",
             f"Goals that track a target (G3: the forward speed). Error: |mean `{signal}` − target| per episode, "
             "averaged per seed; "
             f"p: paired permutation test of the seeds' errors against frozen's, Holm within the cell's coefficients of the rule; **closer**: p (Holm) "
             f"< {level}, smaller error, and mean length ≥ {stats.FALL_RATIO:g}× frozen's. Per rule, the coefficient "
             "with the smallest error.", "",
             f"| grid | goal | prior | shift | target | frozen {signal} | rule | coef | {signal} | error ± s.e. | frozen error | "
             "p (Holm) | length / frozen | closer |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    frozen = track[track.rule == "frozen"].set_index(stats.CELL)[signal]
    for _, g in track[track.rule != "frozen"].groupby([*stats.CELL, "rule"], sort=False):
        b = g.loc[g["error"].idxmin()]
        fv = frozen.get(tuple(b[c] for c in stats.CELL), np.nan)
        lines.append(f"| {b.grid} | {b.goal} | {b.prior} | {b['shift']} | {b[target]:g} | {_fmt(fv, 2)} | {b.rule} | "
                     f"{b.param:g} | {_fmt(b[signal], 2)} | {_fmt(b.error, 2)} ± {_fmt(b.se, 2)} | "
                     f"{_fmt(b.frozen_error, 2)} | {_p(b.p_holm)} | {_fmt(b.length / b.frozen_length, 2)} | "
                     f"{'**yes**' if b.closer else 'no'} |")
    return lines + [""]


def _split_lines(cells: pd.DataFrame) -> list[str]:
    """Label counts per (grid, prior quality, rule) at the cross-fitted oracle."""
    t = cells.assign(n=1).pivot_table(index=["grid", "prior", "rule"], columns="oracle_label", values="n",
                                      aggfunc="sum", fill_value=0, sort=False)
    lines = ["## Labels by grid, prior quality and rule (cross-fitted oracle, counts over goals and shifts)", "",
             "| grid | prior | rule | " + " | ".join(stats.LABELS) + " |", "|---|---|---|" + "---|" * len(stats.LABELS)]
    for (grid, prior, rule), r in t.iterrows():
        lines.append(f"| {grid} | {prior} | {rule} | " + " | ".join(str(int(r.get(k, 0))) for k in stats.LABELS) + " |")
    return lines + [""]


def _curve_lines(curve: pd.DataFrame, out: Path) -> list[str]:
    """Claim 2's matched-α curve: J/J_frozen per prior quality, rule and α, with 95% CIs."""
    if curve.empty:
        return []
    _csv(curve, out / "degradation.csv")
    lines = ["", "## Claim 2: J/J_frozen under broken priors, per rule and α (95% CI)", "",
             "Mean over cells of each cell's mean goal return divided by frozen's (medium actors, no shift, mean "
             "executed); intervals resample seeds within cells. `poe (selector α)`: poe at each cell's KL-budget "
             "coefficient. `degradation.csv` has every row.", "",
             "| prior | rule | α | J/J_frozen [95% CI] | cells |", "|---|---|---|---|---|"]
    for _, r in curve.iterrows():
        alpha = "–" if not np.isfinite(r["alpha"]) else f"{r['alpha']:g}"
        lines.append(f"| {r['prior']} | {r['rule']} | {alpha} | {r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}] | "
                     f"{r['cells']} |")
    return lines


def _shift_lines(ratios: pd.DataFrame, out: Path) -> list[str]:
    """Claim 9's per-policy return ratio under each shift."""
    if ratios.empty:
        return []
    _csv(ratios, out / "shift_ratios.csv")
    lines = ["", "## Claim 9: return under shift relative to no shift, per policy (95% CI)", "",
             "J_shift / J_none on the same seeds (trained prior); intervals resample seeds.", "",
             "| grid | goal | shift | rule | coef | J_shift/J_none [95% CI] | seeds |", "|---|---|---|---|---|---|---|"]
    for _, r in ratios.iterrows():
        lines.append(f"| {r['grid']} | {r['goal']} | {r['shift']} | {r['rule']} | {r['param']:g} | {r['ratio']:.2f} "
                     f"[{r['low']:.2f}, {r['high']:.2f}] | {r['seeds']} |")
    return lines


def _selector_lines(rows: pd.DataFrame, cells: pd.DataFrame, kl_budget: float) -> list[str]:
    sel = stats.selectors(rows, cells, kl_budget)
    if sel.empty:
        return []
    lines = ["", "## Selectors: choosing α without hindsight", "",
             f"For `poe`: the cross-fitted oracle (the best α of one half of the seeds, evaluated on the other half; "
             f"its mean is out of sample, so a selector can beat it), the KL-budget selector's α (largest mean "
             f"per-step KL within {kl_budget} nats), and adaptive α (`poe_adaptive`: per state, the largest α whose "
             f"KL stays within the budget). Regret = oracle mean − chosen mean (goal return).", ""]
    has_ad = "adaptive_regret" in sel
    lines.append(f"Mean regret over {len(sel)} cells: KL-budget selector {_fmt(sel['selector_regret'].mean())}"
                 + (f"; adaptive α {_fmt(sel['adaptive_regret'].mean())} (lower than the selector's in "
                    f"{int((sel['adaptive_regret'] < sel['selector_regret']).sum())} cells)" if has_ad else "") + ".")
    lines += ["", "| grid | goal | prior | shift | oracle α (A→B / B→A) | oracle mean | selector α | selector regret |"
              + (" adaptive ε | adaptive KL | adaptive regret |" if has_ad else ""),
              "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if has_ad else "")]
    for _, r in sel.iterrows():
        line = (f"| {r.grid} | {r.goal} | {r.prior} | {r['shift']} | {r.oracle_param:g} / {r.oracle_param_b:g} | "
                f"{_fmt(r.oracle_mean)} | {r.selector_param:g} | {_fmt(r.selector_regret)} |")
        if has_ad:
            line += (f" {r.adaptive_budget:g} | {_fmt(r.adaptive_kl, 3)} | {_fmt(r.adaptive_regret)} |"
                     if np.isfinite(r.get("adaptive_regret", np.nan)) else " – | – | – |")
        lines.append(line)
    return lines


def _deviation_lines(dev: pd.DataFrame) -> list[str]:
    lines = ["", "## Deviation from the frozen actor: δπ and the performance-difference bound", "",
             "δπ: expected total variation between the composed policy and the frozen actor under the composed "
             "policy's discounted state visitation (γ = 0.99), given as [lower, upper] bounds (squared Hellinger; "
             "min of Pinsker, Bretagnolle–Huber, Hellinger). Bound: |J_γ(rule) − J_γ(frozen)| ≤ 2 R_max δπ / (1−γ)², "
             "with R_max the largest |goal reward| seen in the cell; `scale` = R_max/(1−γ) is the largest possible "
             "|J_γ|, so a bound at or above it cannot fail (vacuous): that happens whenever δπ ≥ (1−γ)/2 = 0.005. "
             "`observed`: the measured |ΔJ_γ| (discounted goal return). Every row is in `deviation.csv`; per grid:",
             "", f"Vacuous in {int(dev['vacuous'].sum())} of {len(dev)} (cell, rule, coefficient) rows; the observed "
             f"change exceeded the bound in {int((dev['observed'] > dev['bound']).sum())}.", "",
             "| grid | rows | vacuous | δπ_upper median [min, max] | bound / scale, median | observed / scale, median |",
             "|---|---|---|---|---|---|"]
    for grid, g in dev.groupby("grid", sort=False):
        lines.append(f"| {grid} | {len(g)} | {int(g['vacuous'].sum())} | {g['delta_pi_upper'].median():.3g} "
                     f"[{g['delta_pi_upper'].min():.3g}, {g['delta_pi_upper'].max():.3g}] | "
                     f"{(g['bound'] / g['scale']).median():.3g} | {(g['observed'] / g['scale']).median():.3g} |")
    return lines


def _offpolicy_lines(df: pd.DataFrame, offp, notes: list[str], level: float) -> list[str]:
    from scipy import stats as sps

    lines = ["", "## Off-policy scorer: the actor's critic at the composed actions", "",
             "`critic ΔQ` = mean over dataset states of Q(s, composed action) − Q(s, frozen action), with the IQL "
             "critic shipped with the actor (task reward, critic units; `offpolicy.csv` has every row). Beside it, "
             "the rollouts' change in D4RL-normalised task score; ρ is the Spearman rank correlation between the two "
             "over the grid's (goal, rule, coefficient) rows."]
    lines += [f"- {n}" for n in notes]
    if offp is None:
        return lines + ["", "No off-policy scores (no critic or no dataset states)."]
    task, _ = stats.row_stats(df, value="normalized_score", level=level)
    task = task[task.rule != "frozen"][["grid", "env", "actor", "goal", "prior", "rule", "param", "diff"]]
    m = offp.merge(task, on=["grid", "env", "actor", "goal", "prior", "rule", "param"])
    lines += ["", "| env | actor | prior | rows | ρ(critic ΔQ, rollout Δ score) | p | states |", "|---|---|---|---|---|---|---|"]
    for (env, actor, prior), g in m.groupby(["env", "actor", "prior"], sort=False):
        ok = np.isfinite(g["diff"]) & np.isfinite(g["delta_q"])
        if ok.sum() >= 3 and g.loc[ok, "delta_q"].nunique() > 1 and g.loc[ok, "diff"].nunique() > 1:
            rho, p = sps.spearmanr(g.loc[ok, "delta_q"], g.loc[ok, "diff"])
        else:
            rho, p = np.nan, np.nan
        lines.append(f"| {env} | {actor} | {prior} | {int(ok.sum())} | {_fmt(rho, 2)} | {_p(p)} | "
                     f"{int(g['states'].iloc[0])} ({g['states_file'].iloc[0]}) |")
    return lines
