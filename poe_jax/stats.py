"""Statistics of grid results: seed-level means, paired tests against ``frozen``, labels.

The unit of replication is the **seed**: episodes are averaged within each
(cell, rule, coefficient, seed) first, so the tests see one number per seed.

* Exclusions: an episode with a non-finite goal return is excluded (and counted);
  a seed with no finite episode left is dropped for that row.
* Per row (cell × rule × coefficient): mean over seeds, standard error
  (``std(ddof=1)/sqrt(n)``), and a 95% t-interval (``scipy.stats.t``).
* Paired test against ``frozen`` of the same cell on the seeds both have: a paired
  t-test (``scipy.stats.ttest_rel``) and, with at least 6 pairs, the Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon``; fewer pairs cannot reach p < 0.05).
  Holm's step-down correction is applied across every tested row of the grid
  (family = all non-frozen rows), to the t-test p-values, which decide labels.
* Label of a (cell, rule) at an operating point: ``HELP`` if its Holm-adjusted p
  < ``level`` and its mean exceeds frozen's, ``HURT`` if adjusted p < ``level`` and
  it is below, else ``FROZEN``. **Survival guard:** a row that would be ``HELP`` but
  whose episodes are shorter than frozen's -- significantly (one-sided paired t-test
  on the seeds' mean lengths, p < ``level``) or by more than 10% on average -- is
  ``FALL`` instead: its gain may come from ending episodes early, which no steering
  rule should be credited for. Where ending an episode is the goal (AntMaze, whose episodes
  end on reaching it: rows with a ``success`` column) shorter is better and the guard does not
  apply. Operating points: (a) ``oracle`` -- the coefficient
  with the best mean goal return; (b) ``kl_budget`` -- the largest-KL coefficient
  whose mean per-step KL to the frozen actor stays within the budget (ties and
  an empty budget fall back to the smallest-KL coefficient).

A cell is (grid, env, actor, goal, prior, shift): ``grid`` (the grid's folder, from
:func:`poe_jax.grid.read_episodes`) keeps apart grids that share an env and actor but differ in
their prior checkpoint or goal parameters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from poe_jax.metrics import GAMMA  # the discount the grid recorded delta_pi with (defined once)

__all__ = ["CELL", "FALL_RATIO", "GAMMA", "LABELS", "aggregate", "deviation", "holm", "iqm", "label_cells",
           "labels_table", "normalized_runs", "performance_profile", "row_stats", "seed_means", "selectors",
           "stratified_bootstrap", "tracking"]

LABELS = ("HELP", "FROZEN", "HURT", "FALL")
FALL_RATIO = 0.9  # a HELP row whose mean length is below this fraction of frozen's is FALL

CELL = ["grid", "env", "actor", "goal", "prior", "shift"]
ROW = [*CELL, "rule", "param"]


def _with_grid(df: pd.DataFrame) -> pd.DataFrame:
    """Frames without a ``grid`` column (built by hand, or one grid) are one grid."""
    return df if "grid" in df else df.assign(grid="")


def seed_means(df: pd.DataFrame, value: str = "return_goal") -> tuple[pd.DataFrame, dict]:
    """Per (row, seed) means of ``value`` and of ``kl_to_frozen``; plus exclusion counts."""
    df = _with_grid(df)
    finite = np.isfinite(df[value].to_numpy(dtype=float))
    excluded = {"non_finite_episodes": int((~finite).sum()), "episodes": int(len(df))}
    kept = df[finite]
    agg = {value: (value, "mean"), "episodes": (value, "size")}
    if "kl_to_frozen" in kept:
        agg["kl"] = ("kl_to_frozen", "mean")
    if "length" in kept and value != "length":
        agg["length"] = ("length", "mean")
    if "success" in kept:  # AntMaze's episodes end at the goal; NaN for envs without a success notion
        kept = kept.assign(success=kept["success"].astype("Float64").astype(float))
        agg["success"] = ("success", "mean")
    out = kept.groupby([*ROW, "seed"], sort=False, dropna=False).agg(**agg).reset_index()
    return out, excluded


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (monotone, capped at 1)."""
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def row_stats(df: pd.DataFrame, value: str = "return_goal", level: float = 0.05) -> tuple[pd.DataFrame, dict]:
    """One row per (cell, rule, coefficient): n, mean, se, CI, paired tests vs frozen, Holm."""
    sm, excluded = seed_means(df, value)
    has_len = "length" in sm
    frozen_all = sm[sm.rule == "frozen"].set_index([*CELL, "seed"]).sort_index()
    frozen = frozen_all[value]
    frozen_len = frozen_all["length"] if has_len else None
    rows = []
    for key, g in sm.groupby(ROW, sort=False, dropna=False):
        x = g[value].to_numpy(float)
        n = len(x)
        mean = float(x.mean())
        se = float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
        half = float(sps.t.ppf(0.975, n - 1) * se) if n > 1 else np.nan
        rec = dict(zip(ROW, key), n=n, mean=mean, se=se, ci_low=mean - half, ci_high=mean + half,
                   kl=float(g["kl"].mean()) if "kl" in g else np.nan,
                   length=float(g["length"].mean()) if has_len else np.nan,
                   guarded=not ("success" in g and g["success"].notna().any()))  # termination is a fall
        if rec["rule"] != "frozen":
            cell = tuple(rec[c] for c in CELL)
            try:
                base = frozen.loc[cell]
            except KeyError:
                base = pd.Series(dtype=float)
            pairs = pd.DataFrame({"x": g.set_index("seed")[value], "f": base}).dropna()
            rec["n_pairs"] = len(pairs)
            rec["frozen_mean"] = float(pairs["f"].mean()) if len(pairs) else np.nan
            rec["diff"] = float((pairs["x"] - pairs["f"]).mean()) if len(pairs) else np.nan
            if len(pairs) >= 2 and np.any(pairs["x"].to_numpy() != pairs["f"].to_numpy()):
                rec["p_t"] = float(sps.ttest_rel(pairs["x"], pairs["f"]).pvalue)
            else:
                rec["p_t"] = 1.0 if len(pairs) >= 2 else np.nan
            if len(pairs) >= 6 and np.any(pairs["x"].to_numpy() != pairs["f"].to_numpy()):
                rec["p_wilcoxon"] = float(sps.wilcoxon(pairs["x"], pairs["f"]).pvalue)
            else:
                rec["p_wilcoxon"] = np.nan
            rec["frozen_length"], rec["p_shorter"] = np.nan, np.nan
            if has_len:
                try:
                    fl = frozen_len.loc[cell]
                except KeyError:
                    fl = pd.Series(dtype=float)
                lp = pd.DataFrame({"x": g.set_index("seed")["length"], "f": fl}).dropna()
                if len(lp):
                    rec["frozen_length"] = float(lp["f"].mean())
                    d = (lp["x"] - lp["f"]).to_numpy()
                    if len(lp) >= 2 and np.ptp(d) > 0:
                        rec["p_shorter"] = float(sps.ttest_rel(lp["x"], lp["f"], alternative="less").pvalue)
                    else:  # no spread in the differences: shorter on every seed by the same amount, or not
                        rec["p_shorter"] = 0.0 if len(lp) >= 2 and d[0] < 0 else 1.0
        rows.append(rec)
    out = pd.DataFrame(rows)
    tested = out["rule"].ne("frozen") & out.get("p_t", pd.Series(np.nan, index=out.index)).notna()
    out["p_holm"] = np.nan
    if tested.any():
        out.loc[tested, "p_holm"] = holm(out.loc[tested, "p_t"].to_numpy())
    better = (out["p_holm"] < level) & (out["diff"] > 0)
    if "p_shorter" in out:
        shorter = ((out["p_shorter"] < level) | (out["length"] < FALL_RATIO * out["frozen_length"])) & out["guarded"]
    else:
        shorter = pd.Series(False, index=out.index)
    out["label"] = np.where(
        out["rule"].eq("frozen"), "",
        np.where(better & shorter, "FALL", np.where(better, "HELP",
                 np.where((out["p_holm"] < level) & (out["diff"] < 0), "HURT", "FROZEN"))))
    return out, excluded


def _kl_choice(g: pd.DataFrame, kl_budget: float) -> pd.Series:
    """The KL-budget selector's row: largest mean KL within the budget, else the smallest KL."""
    within = g[g["kl"] <= kl_budget]
    return within.loc[within["kl"].idxmax()] if len(within) else g.loc[g["kl"].idxmin()]


def labels_table(rows: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """``labels.csv``: one row per labelled (cell, rule, operating point) with its statistics."""
    rs = rows.set_index(ROW)
    out = []
    for _, c in cells.iterrows():
        for point, col in (("oracle", "oracle_param"), ("selector", "selector_param")):
            r = rs.loc[(*(c[k] for k in CELL), c["rule"], c[col])]
            out.append({**{k: c[k] for k in CELL}, "rule": c["rule"], "point": point, "param": c[col],
                        "mean": r["mean"], "se": r["se"], "frozen_mean": r.get("frozen_mean", np.nan),
                        "p_holm": r["p_holm"], "label": r["label"], "length": r.get("length", np.nan),
                        "frozen_length": r.get("frozen_length", np.nan), "p_shorter": r.get("p_shorter", np.nan)})
    return pd.DataFrame(out)


def label_cells(rows: pd.DataFrame, kl_budget: float = 0.5) -> pd.DataFrame:
    """Per (cell, rule): the oracle and KL-budget operating points, their labels, and the selector's regret."""
    out = []
    for key, g in rows[rows.rule != "frozen"].groupby([*CELL, "rule"], sort=False, dropna=False):
        oracle = g.loc[g["mean"].idxmax()]
        chosen = _kl_choice(g, kl_budget)
        out.append(dict(zip([*CELL, "rule"], key), oracle_param=oracle["param"], oracle_mean=oracle["mean"],
                        oracle_label=oracle["label"], oracle_p_holm=oracle["p_holm"],
                        selector_param=chosen["param"], selector_mean=chosen["mean"], selector_kl=chosen["kl"],
                        selector_label=chosen["label"], regret=oracle["mean"] - chosen["mean"]))
    return pd.DataFrame(out)


def deviation(df: pd.DataFrame, cells: pd.DataFrame, gamma: float = GAMMA) -> pd.DataFrame:
    """Per (cell, rule) at its oracle coefficient: δπ, the performance-difference bound, the observed change.

    δπ is the expected total variation between the composed policy and the frozen
    actor under the composed policy's discounted state visitation (grid columns
    ``delta_pi_lower`` / ``delta_pi_upper``: bounds, since TV between diagonal
    Gaussians has no closed form), averaged over episodes within a seed, then over
    seeds. The bound (performance-difference lemma, ``|A| <= osc Q <= 2 R_max/(1-γ)``):

        |J_γ(composed) - J_γ(frozen)| <= 2 R_max δπ / (1 - γ)^2,

    with ``R_max`` the largest |goal reward| seen in the cell (an empirical stand-in
    for the reward bound) and ``J_γ`` the discounted goal return (``observed``: the
    difference of the seed-averaged means). ``scale = R_max / (1 - γ)`` is the
    largest possible ``|J_γ|``; a bound above it says nothing.
    """
    df = _with_grid(df)
    kept = df[np.isfinite(df["return_goal"].to_numpy(float))]
    per_seed = kept.groupby([*ROW, "seed"], sort=False, dropna=False).agg(
        lo=("delta_pi_lower", "mean"), hi=("delta_pi_upper", "mean"), j=("discounted_goal", "mean")).reset_index()
    per_row = per_seed.groupby(ROW, sort=False, dropna=False)[["lo", "hi", "j"]].mean()
    r_max = kept.groupby(CELL, sort=False, dropna=False)["max_abs_goal_reward"].max()
    frozen = per_row.xs("frozen", level="rule").reset_index("param", drop=True)
    out = []
    for _, c in cells.iterrows():
        cell = tuple(c[k] for k in CELL)
        row = per_row.loc[(*cell, c["rule"], c["oracle_param"])]
        j_frozen = float(frozen.loc[cell, "j"]) if cell in frozen.index else np.nan
        rm = float(r_max.loc[cell])
        bound = 2.0 * rm * float(row["hi"]) / (1.0 - gamma) ** 2
        out.append(dict(zip([*CELL, "rule"], [*cell, c["rule"]]), param=c["oracle_param"],
                        delta_pi_lower=float(row["lo"]), delta_pi_upper=float(row["hi"]), r_max=rm,
                        bound=bound, scale=rm / (1.0 - gamma), observed=abs(float(row["j"]) - j_frozen)))
    return pd.DataFrame(out)


def selectors(rows: pd.DataFrame, kl_budget: float = 0.5, rule: str = "poe") -> pd.DataFrame:
    """Per cell: ``rule``'s oracle coefficient vs the KL-budget selector and adaptive α.

    * oracle: ``rule``'s coefficient with the best mean goal return (hindsight);
    * selector: the KL-budget selector's coefficient of ``rule`` (see :func:`label_cells`);
    * adaptive: ``poe_adaptive`` at the per-step budget ``kl_budget`` (or the largest
      budget below it in the grid), when the grid has it.

    Regrets are oracle mean minus each choice's mean (goal return; >= 0 for the selector).
    """
    out = []
    for key, g in rows.groupby(CELL, sort=False, dropna=False):
        r = g[g.rule == rule]
        if r.empty:
            continue
        oracle = r.loc[r["mean"].idxmax()]
        chosen = _kl_choice(r, kl_budget)
        rec = dict(zip(CELL, key), oracle_param=oracle["param"], oracle_mean=oracle["mean"],
                   selector_param=chosen["param"], selector_mean=chosen["mean"],
                   selector_regret=oracle["mean"] - chosen["mean"])
        ad = g[(g.rule == "poe_adaptive") & (g["param"] <= kl_budget + 1e-12)]
        if len(ad):
            a = ad.loc[ad["param"].idxmax()]
            rec.update(adaptive_budget=a["param"], adaptive_mean=a["mean"], adaptive_kl=a["kl"],
                       adaptive_regret=oracle["mean"] - a["mean"])
        out.append(rec)
    return pd.DataFrame(out)


def tracking(df: pd.DataFrame, level: float = 0.05) -> pd.DataFrame:
    """Does steering move the goal's own metric? For goals with a target speed (G3), one row per
    (cell, rule, coefficient): mean ``x_velocity``, the tracking error ``|x_velocity - target|``
    (per episode, averaged per seed) and frozen's on the same seeds, the paired t-test of the
    errors (``p_t``; Holm over the table's rows: ``p_holm``), the mean lengths, and ``closer``:
    significantly smaller error (Holm) with mean length at least ``FALL_RATIO`` x frozen's.
    Empty when the grid has no such goal (or was recorded before ``target_speed`` was)."""
    if "target_speed" not in df or not df["target_speed"].notna().any():
        return pd.DataFrame()
    df = _with_grid(df)
    d = df[df["target_speed"].notna()].assign(track_error=lambda x: (x["x_velocity"] - x["target_speed"]).abs())
    rows, _ = row_stats(d, value="track_error", level=level)
    speed, _ = seed_means(d, value="x_velocity")
    rows = rows.merge(speed.groupby(ROW, sort=False, dropna=False)["x_velocity"].mean().reset_index(), on=ROW)
    rows = rows.merge(d.groupby(ROW, sort=False, dropna=False)["target_speed"].first().reset_index(), on=ROW)
    rows = rows.rename(columns={"mean": "error", "frozen_mean": "frozen_error"})
    rows["closer"] = ((rows["p_holm"] < level) & (rows["diff"] < 0)
                      & (rows["length"] >= FALL_RATIO * rows["frozen_length"]))
    keep = [*ROW, "target_speed", "n", "x_velocity", "error", "se", "frozen_error", "p_t", "p_holm", "length",
            "frozen_length", "closer"]
    return rows[[c for c in keep if c in rows]]


# ---------------------------------------------------------------- aggregates across cells (rliable style)
def normalized_runs(df: pd.DataFrame, cells: pd.DataFrame, point: str = "selector",
                    value: str = "return_goal") -> tuple[pd.DataFrame, int]:
    """One row per (cell, rule, seed) at each rule's ``point`` coefficient (``selector``: the KL-budget
    selector's, what a deployment would pick; ``oracle``: the best), with ``score``: the seed's mean
    ``value`` divided by frozen's mean over the cell's seeds (frozen scores 1 on average). Cells whose
    frozen mean is not > 0 cannot be normalised and are left out; their count is returned."""
    sm, _ = seed_means(df, value)
    frozen = sm[sm.rule == "frozen"].groupby(CELL, dropna=False)[value].mean()
    keep = frozen[frozen > 0]
    chosen = cells[[*CELL, "rule", f"{point}_param"]].rename(columns={f"{point}_param": "param"})
    frozen_rows = sm[sm.rule == "frozen"]
    runs = pd.concat([sm.merge(chosen, on=[*CELL, "rule", "param"]), frozen_rows], ignore_index=True)
    idx = pd.MultiIndex.from_frame(runs[CELL])
    base = keep.reindex(idx).to_numpy()
    runs = runs.assign(score=runs[value].to_numpy(float) / base)
    runs = runs[np.isfinite(base)].reset_index(drop=True)
    return runs[[*CELL, "rule", "param", "seed", "score"]], int((frozen <= 0).sum())


def iqm(x) -> float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``)."""
    return float(sps.trim_mean(np.asarray(x, float).ravel(), 0.25))


def _strata(runs: pd.DataFrame) -> list[np.ndarray]:
    return [g["score"].to_numpy(float) for _, g in runs.groupby(CELL, sort=False, dropna=False)]


def stratified_bootstrap(strata: list[np.ndarray], statistic, reps: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float, float]:
    """``(point, low, high)``: ``statistic`` of the pooled strata, and a percentile interval from
    resampling each stratum (cell) with replacement, its size kept (rliable's stratified bootstrap:
    the cells are fixed, the seeds within each are the sample)."""
    rng = np.random.default_rng(seed)
    point = np.asarray(statistic(strata), float)
    draws = np.stack([np.asarray(statistic([s[rng.integers(0, len(s), len(s))] for s in strata]), float)
                      for _ in range(reps)])
    a = (1 - level) / 2
    lo, hi = np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)
    if point.ndim == 0:  # a scalar statistic; a vector one (e.g. a profile over thresholds) gives arrays
        return float(point), float(lo), float(hi)
    return point, lo, hi


def _prob_improvement(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over cells of P(X > Y) + P(X = Y)/2, X a run of the rule and Y one of frozen (Mann-Whitney U / nm)."""
    vals = [(np.sum(x[:, None] > y[None, :]) + 0.5 * np.sum(x[:, None] == y[None, :])) / (len(x) * len(y))
            for x, y in pairs]
    return float(np.mean(vals))


def aggregate(runs: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per rule, across the cells it ran in: IQM and mean of the normalised score with 95% stratified
    bootstrap intervals, and the probability of improvement over frozen (rliable's, with its interval
    from resampling seeds within each cell for both rules)."""
    out = []
    frozen = {k: g["score"].to_numpy(float) for k, g in runs[runs.rule == "frozen"].groupby(CELL, dropna=False)}
    for rule, r in runs.groupby("rule", sort=False):
        strata = _strata(r)
        rec = {"rule": rule, "cells": len(strata), "runs": int(sum(len(s) for s in strata))}
        for name, fn in (("iqm", iqm), ("mean", np.mean)):
            p, lo, hi = stratified_bootstrap(strata, lambda ss, fn=fn: fn(np.concatenate(ss)), reps, seed)
            rec.update({name: p, f"{name}_low": lo, f"{name}_high": hi})
        if rule != "frozen":
            keys = [k for k, _ in r.groupby(CELL, sort=False, dropna=False)]
            pairs = [(g["score"].to_numpy(float), frozen[k]) for k, (_, g) in
                     zip(keys, r.groupby(CELL, sort=False, dropna=False)) if k in frozen]
            n = len(pairs)
            flat = [a for x, y in pairs for a in (x, y)]
            p, lo, hi = stratified_bootstrap(flat, lambda ss: _prob_improvement(list(zip(ss[0::2], ss[1::2]))) if n
                                             else np.nan, reps, seed)
            rec.update(p_improve=p, p_improve_low=lo, p_improve_high=hi)
        out.append(rec)
    return pd.DataFrame(out)


def performance_profile(runs: pd.DataFrame, taus: np.ndarray, reps: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per rule and threshold ``tau``: the fraction of runs (cell, seed) with normalised score > tau,
    averaged over cells (each cell weighs the same), with a 95% stratified bootstrap band."""
    taus = np.asarray(taus, float)
    rows = []
    for rule, r in runs.groupby("rule", sort=False):
        def fractions(ss):
            return np.mean([np.mean(s[:, None] > taus[None, :], axis=0) for s in ss], axis=0)

        p, lo, hi = stratified_bootstrap(_strata(r), fractions, reps, seed)
        rows += [{"rule": rule, "tau": float(t), "fraction": float(a), "low": float(b), "high": float(c)}
                 for t, a, b, c in zip(taus, p, lo, hi)]
    return pd.DataFrame(rows)
