"""Statistics of grid results: seed-level means, paired tests against ``frozen``, labels.

The unit of replication is the **seed** (an initial state): episodes are averaged within each
(cell, rule, coefficient, seed) first, so every test sees one number per seed.

* Exclusions: an episode with a non-finite goal return is excluded (and counted); a seed with
  no finite episode left is dropped for that row.
* Per row (cell × rule × coefficient): mean over seeds, standard error, 95% t-interval.
* Effect first: against ``frozen`` of the same cell on the seeds both have, the paired
  difference ``diff`` with its 95% t-interval (``diff_low``, ``diff_high``).
* Test: a paired **sign-flip permutation test** of the mean difference (``p_perm``; exact over
  every sign pattern up to 16 seeds, else 20,000 fixed patterns): valid where returns are
  bimodal (falls, flips), where a t-test is not. The t-test (``p_t``) and Wilcoxon's
  signed-rank test (``p_wilcoxon``, from 6 pairs) are reported beside it.
* **Holm family: one cell's tests of one rule across its coefficients** (:data:`FAMILY`),
  never the whole run, so a row's label does not change when another grid, goal or rule is
  added. ``family_size`` says how many tests share it. Policies that execute identical actions
  are tested once: a rule whose mean is another's (``Rule.mean_of``: ``kl_reg`` is ``poe`` at
  α = β/(1+β)) run deterministically is marked ``same_as`` that row and takes its label.
* ``mde``: the minimum detectable effect, the |difference| a paired t-test at the family's
  first Holm step detects with 80% power given the observed spread.
* Labels (stated before looking): ``HELP`` if Holm-adjusted p < ``level`` and diff > 0,
  ``HURT`` if adjusted p < ``level`` and diff < 0. Otherwise the interval decides:
  ``FROZEN`` (no change) only if the 95% interval of the difference lies inside
  ±``EFFECT`` × |frozen's mean| (no change that matters is compatible with the data), else
  ``UNDERPOWERED`` (the interval covers both "no change" and a change that matters).
  **Survival guard:** a would-be ``HELP`` whose episodes are shorter than frozen's
  (one-sided paired t-test on the seeds' mean lengths, or by more than 10% on average) is
  ``FALL``. Where ending the episode is the goal (AntMaze, rows with a ``success`` column)
  the guard does not apply.
* Operating points per (cell, rule), :func:`label_cells`: the **cross-fitted oracle** (the
  best coefficient chosen on one half of the seeds and evaluated on the other, both ways: each
  seed's value comes from the coefficient the *other* half chose; one paired test per (cell,
  rule)), and the **KL-budget selector** (the largest-KL coefficient whose mean per-step KL
  stays within the budget; no return is looked at).

A cell is (grid, env, actor, goal, prior, shift): ``grid`` (the grid's folder, from
:func:`poe_jax.grid.read_episodes`) keeps apart grids that share an env and actor but differ in
their prior checkpoint, goal parameters or execution mode.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pandas as pd
from scipy import stats as sps

from poe_jax.kernels import rules as kernels
from poe_jax.grid import store
from poe_jax.grid.metrics import GAMMA  # the discount the grid recorded delta_pi with (defined once)

__all__ = ["CELL", "CONCLUSIVE", "EFFECT", "across_checkpoints", "checkpoint_sets", "FALL_RATIO", "FAMILY", "GAMMA", "LABELS", "aggregate", "crossfit", "deviation",
           "distinct", "holm", "iqm", "label_cells", "label_of", "labels_table", "min_p", "normalized_runs", "paired",
           "performance_profile", "row_stats", "seed_means", "seeds_of", "selectors", "shorter", "sign_flip_p",
           "stratified_bootstrap", "tracking"]

LABELS = ("HELP", "FROZEN", "HURT", "FALL", "UNDERPOWERED")
FALL_RATIO = 0.9  # a HELP row whose mean length is below this fraction of frozen's is FALL
EFFECT = 0.1  # the smallest change that matters: 10% of frozen's mean |goal return| (FROZEN vs UNDERPOWERED)
POWER = 0.8  # the power of the minimum detectable effect
PERM_EXACT = 16  # up to this many pairs the permutation test enumerates every sign pattern
PERM_DRAWS = 20_000  # else this many fixed random patterns (one set per n: p depends on the data only)

CELL = ["grid", "env", "actor", "goal", "prior", "shift"]
ROW = [*CELL, "rule", "param"]
FAMILY = [*CELL, "rule"]  # the Holm family of a row: one cell's tests of one rule across its coefficients


def _with_grid(df: pd.DataFrame) -> pd.DataFrame:
    """Frames without a ``grid`` column (built by hand, or one grid) are one grid; without ``sample``, the
    grid executed the composed mean."""
    df = df if "grid" in df else df.assign(grid="")
    return df if "sample" in df else df.assign(sample=False)


def distinct(df: pd.DataFrame) -> pd.DataFrame:
    """Each recorded episode once: the episodes of rules that ignore the prior (``frozen``, the critic-only
    rules), which :func:`poe_jax.grid.store.read_episodes` serves once per prior quality, are kept under the
    first quality only (by ``lane`` where the frame has it)."""
    df = _with_grid(df)
    blind = df["rule"].map(lambda r: r in kernels.RULES and not kernels.RULES[r].uses_prior).astype(bool)
    if not blind.any():
        return df
    key = ["grid", "lane"] if "lane" in df else ["grid", "env", "actor", "goal", "shift", "rule", "param", "seed",
                                                   "episode"]
    keep = ~blind | ~df[key].duplicated(keep="first")
    return df[keep]


def seed_means(df: pd.DataFrame, value: str = "return_goal") -> tuple[pd.DataFrame, dict]:
    """Per (row, seed) means of ``value`` and of ``kl_to_frozen``; plus exclusion counts."""
    df = _with_grid(df)
    finite = np.isfinite(df[value].to_numpy(dtype=float))
    # an episode that executed a NaN or inf action: MuJoCo reset its state, so its returns mean nothing
    acted = store.acted(df)
    bad = df[finite & ~acted]
    excluded = {"non_finite_episodes": int((~finite).sum()), "episodes": int(len(df)),
                "nonfinite_action_episodes": int(len(bad)),
                "nonfinite_action_rows": sorted({f"{r.grid}/{r.goal}/{r.prior}/{r.rule}({r.param:g})"
                                                 for r in bad.itertuples()})}
    kept = df[finite & acted]
    agg = {value: (value, "mean"), "episodes": (value, "size"), "sample": ("sample", "first")}
    if "kl_to_frozen" in kept:  # NaN where any episode's is (pandas' mean would skip it: one of two was "n=2")
        kept = kept.assign(_kl_nan=kept["kl_to_frozen"].isna())
        agg["kl"] = ("kl_to_frozen", "mean")
        agg["_kl_nan"] = ("_kl_nan", "any")
    if "length" in kept and value != "length":
        agg["length"] = ("length", "mean")
    if "success" in kept:  # AntMaze's episodes end at the goal; NaN for envs without a success notion
        kept = kept.assign(success=kept["success"].astype("Float64").astype(float))
        agg["success"] = ("success", "mean")
    out = kept.groupby([*ROW, "seed"], sort=False, dropna=False).agg(**agg).reset_index()
    if "_kl_nan" in out:
        out.loc[out.pop("_kl_nan").to_numpy(bool), "kl"] = np.nan
    return out, excluded


def mean_keep_nan(df: pd.DataFrame, keys: list[str], cols: list[str]) -> pd.DataFrame:
    """Means of ``cols`` per group of ``keys``, NaN where a value in the group is NaN: pandas' mean skips NaN,
    so one NaN metric of two episodes became the other's value, a plausible number."""
    m = df.groupby(keys, sort=False, dropna=False)[cols].mean()
    bad = df[cols].isna().groupby([df[k] for k in keys], sort=False, dropna=False).any()
    return m.mask(bad)


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


@functools.lru_cache(maxsize=64)
def _signs(n: int) -> np.ndarray:
    """``[patterns, n]`` of ±1: every pattern for ``n <= PERM_EXACT``, else the identity and ``PERM_DRAWS``
    fixed draws (seeded by ``n``, so a p-value depends on the data only, not on what else is tested)."""
    if n <= PERM_EXACT:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        return (1 - 2 * bits).astype(float)
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(f"signs{n}".encode(), digest_size=4).digest(), "little"))
    return np.vstack([np.ones((1, n)), rng.choice([-1.0, 1.0], size=(PERM_DRAWS, n))])


def sign_flip_p(d) -> float:
    """Two-sided p of a paired sign-flip permutation test of ``mean(d) = 0`` (``d``: paired differences).
    Exact for up to :data:`PERM_EXACT` pairs; NaN with fewer than 2; 1 when every difference is 0."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return np.nan
    if not np.any(d):
        return 1.0
    obs = abs(d.mean())
    null = np.abs(_signs(len(d)) @ d) / len(d)
    tol = 1e-9 * np.abs(d).mean()  # the identity pattern reproduces obs up to summation order
    return float(np.sum(null >= obs - tol) / len(null))  # the identity pattern is among them: p > 0


def min_p(n: int) -> float:
    """The smallest p :func:`sign_flip_p` can give with ``n`` pairs: a family of ``m`` such tests can reject
    at ``level`` only if ``m * min_p(n) < level`` (10 seeds: 0.002, so Holm over 25 tests never rejects)."""
    if n < 2:
        return 1.0
    return 2.0 / 2**n if n <= PERM_EXACT else 1.0 / (PERM_DRAWS + 1)


def _mde(sd: float, n: int, m: int, level: float) -> float:
    """The |mean difference| a paired t-test at level/m (Holm's first step in a family of m) detects with
    :data:`POWER` power, for differences of spread ``sd`` over ``n`` pairs."""
    if n < 2 or not np.isfinite(sd):
        return np.nan
    return float((sps.t.ppf(1 - level / (2 * max(m, 1)), n - 1) + sps.t.ppf(POWER, n - 1)) * sd / np.sqrt(n))


def paired(x: pd.Series, f: pd.Series) -> dict:
    """Effect and tests of ``x`` against ``f`` on the seeds both have (indexed by seed)."""
    pairs = pd.DataFrame({"x": x, "f": f}).dropna()
    n = len(pairs)
    out = {"n_pairs": n, "frozen_mean": np.nan, "diff": np.nan, "diff_low": np.nan, "diff_high": np.nan,
           "p_t": np.nan, "p_wilcoxon": np.nan, "p_perm": np.nan, "sd_diff": np.nan}
    if not n:
        return out
    d = (pairs["x"] - pairs["f"]).to_numpy(float)
    out.update(frozen_mean=float(pairs["f"].mean()), diff=float(d.mean()))
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = float(sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n))
        out.update(diff_low=out["diff"] - half, diff_high=out["diff"] + half, sd_diff=sd,
                   p_t=float(sps.ttest_rel(pairs["x"], pairs["f"]).pvalue) if np.any(d) else 1.0,
                   p_perm=sign_flip_p(d))
        if n >= 6 and np.any(d):
            out["p_wilcoxon"] = float(sps.wilcoxon(pairs["x"], pairs["f"]).pvalue)
    return out


def shorter(x_len: pd.Series, f_len: pd.Series) -> dict:
    lp = pd.DataFrame({"x": x_len, "f": f_len}).dropna()
    if not len(lp):
        return {"frozen_length": np.nan, "p_shorter": np.nan}
    d = (lp["x"] - lp["f"]).to_numpy()
    if len(lp) >= 2 and np.ptp(d) > 0:
        p = float(sps.ttest_rel(lp["x"], lp["f"], alternative="less").pvalue)
    else:  # no spread in the differences: shorter on every seed by the same amount, or not
        p = 0.0 if len(lp) >= 2 and d[0] < 0 else 1.0
    return {"frozen_length": float(lp["f"].mean()), "p_shorter": p}


def label_of(p_adj, diff, lo, hi, frozen_mean, length, frozen_length, p_shorter, guarded, level, effect) -> str:
    """The label of one test (see the module docstring)."""
    if np.isfinite(p_adj) and p_adj < level and diff > 0:
        shorter = guarded and ((np.isfinite(p_shorter) and p_shorter < level)
                               or (np.isfinite(frozen_length) and length < FALL_RATIO * frozen_length))
        return "FALL" if shorter else "HELP"
    if np.isfinite(p_adj) and p_adj < level and diff < 0:
        return "HURT"
    margin = effect * abs(frozen_mean) if np.isfinite(frozen_mean) else np.nan
    if np.isfinite(lo) and np.isfinite(hi) and np.isfinite(margin) and -margin < lo and hi < margin:
        return "FROZEN"
    if np.isfinite(lo) and lo == hi == diff == 0:  # identical on every seed
        return "FROZEN"
    return "UNDERPOWERED"


def row_stats(df: pd.DataFrame, value: str = "return_goal", level: float = 0.05,
              effect: float = EFFECT) -> tuple[pd.DataFrame, dict]:
    """One row per (cell, rule, coefficient): n, mean, se, CI; against frozen the paired difference with its
    CI, the permutation, t and Wilcoxon p, the MDE, Holm within :data:`FAMILY`, and the label. The
    seed-level means travel with the rows (:func:`seeds_of`, for :func:`label_cells`)."""
    sm, excluded = seed_means(df, value)
    has_len = "length" in sm
    frozen_all = sm[sm.rule == "frozen"].set_index([*CELL, "seed"]).sort_index()
    rows = []
    for key, g in sm.groupby(ROW, sort=False, dropna=False):
        x = g[value].to_numpy(float)
        n = len(x)
        mean = float(x.mean())
        se = float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
        half = float(sps.t.ppf(0.975, n - 1) * se) if n > 1 else np.nan
        rec = dict(zip(ROW, key), n=n, mean=mean, se=se, ci_low=mean - half, ci_high=mean + half,
                   kl=float(g["kl"].mean(skipna=False)) if "kl" in g else np.nan,
                   length=float(g["length"].mean()) if has_len else np.nan,
                   sample=bool(g["sample"].iloc[0]),
                   guarded=not ("success" in g and g["success"].notna().any()))  # termination is a fall
        if rec["rule"] != "frozen":
            cell = tuple(rec[c] for c in CELL)
            try:
                base = frozen_all.loc[cell]
            except KeyError:
                base = pd.DataFrame(columns=frozen_all.columns)
            rec.update(paired(g.set_index("seed")[value], base[value]))
            if has_len:
                rec.update(shorter(g.set_index("seed")["length"], base["length"]))
        rows.append(rec)
    out = pd.DataFrame(rows, columns=[*ROW, "n", "mean", "se", "ci_low", "ci_high", "kl", "length", "sample",
                                      "guarded"] if not rows else None)
    for c in ("n_pairs", "frozen_mean", "diff", "diff_low", "diff_high", "p_t", "p_wilcoxon", "p_perm", "sd_diff",
              "frozen_length", "p_shorter"):
        if c not in out:
            out[c] = np.nan
    twin = _twins(out)
    out["same_as"] = [f"{out['rule'].iat[j]}({out['param'].iat[j]:g})" if j >= 0 else "" for j in twin]
    tested = out["rule"].ne("frozen") & out["p_perm"].notna() & out["same_as"].eq("")
    out["p_holm"], out["family_size"] = np.nan, 0
    for _, idx in out[tested].groupby(FAMILY, sort=False, dropna=False).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_perm"].to_numpy())
        out.loc[idx, "family_size"] = len(idx)
    out["mde"] = [_mde(sd, n, m, level) for sd, n, m in zip(out["sd_diff"], out["n_pairs"], out["family_size"])]
    out["label"] = [
        "" if r == "frozen" else label_of(p, d, lo, hi, fm, ln, fl, ps, gd, level, effect)
        for r, p, d, lo, hi, fm, ln, fl, ps, gd in zip(out["rule"], out["p_holm"], out["diff"], out["diff_low"],
                                                        out["diff_high"], out["frozen_mean"], out["length"],
                                                        out["frozen_length"], out["p_shorter"], out["guarded"])]
    for i in np.flatnonzero(twin >= 0):  # a policy tested once: its twin takes the tested row's result
        for c in ("p_holm", "label", "family_size", "mde"):
            out.iat[i, out.columns.get_loc(c)] = out.iat[twin[i], out.columns.get_loc(c)]
    out.attrs["seeds"] = _Held(sm)
    out.attrs["level"] = level
    return out, excluded


class _Held:
    """A frame kept in ``rows.attrs``, compared by identity (pandas compares attrs when it merges frames)."""

    __slots__ = ("frame",)

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame


CONCLUSIVE = ("HELP", "HURT", "FALL", "FROZEN")


def checkpoint_sets(df: pd.DataFrame) -> dict[str, list[str]]:
    """The run's checkpoint sets: family (one ``zoo:NAME@*`` or list) -> its grids in run order, for every
    family of two or more grids. A grid outside a set is its own family (the store names it after the grid)
    and is in none, even when a set is named like it."""
    if df.empty or "family" not in df:
        return {}
    members: dict[str, list[str]] = {}
    for g, f in df.drop_duplicates("grid")[["grid", "family"]].itertuples(index=False):
        if isinstance(f, str) and f and f != str(g):
            members.setdefault(f, []).append(str(g))
    return {f: gs for f, gs in members.items() if len(gs) >= 2}


def across_checkpoints(df: pd.DataFrame, rows: pd.DataFrame, level: float = 0.05) -> pd.DataFrame:
    """Whether each row's answer holds across the checkpoints of a set (``zoo:NAME@*``): one row per
    (family, env, goal, prior, shift, rule, coefficient) of every family with two or more grids.

    Episodes are nested in seeds, seeds in checkpoints: the per-checkpoint answer is that grid's row
    (:func:`row_stats`: its label and paired difference, seeds as units), and the pooled test takes the
    **checkpoint** as the unit: a one-sample t-test of the K checkpoints' differences (K − 1 degrees of
    freedom; ``p_nested``), Holm-adjusted across one (family, cell, rule)'s coefficients (``p_nested_holm``)
    as :data:`FAMILY` is within a grid. ``sd_between`` is the spread of the differences between checkpoints.

    ``verdict``: ``holds: LABEL`` when every checkpoint has that label; ``differs`` when two checkpoints
    have different conclusive labels (:data:`CONCLUSIVE`); ``partly: LABEL (k of K)`` when one conclusive
    label and the rest ``UNDERPOWERED``; ``underpowered`` when none is conclusive."""
    key = ["family", "env", "goal", "prior", "shift", "rule", "param"]
    cols = [*key, "checkpoints", "grids", "labels", "diffs", "diff", "sd_between", "p_nested", "p_nested_holm",
            "verdict"]
    if "family" not in df or rows.empty:
        return pd.DataFrame(columns=cols)
    family = {g: f for f, gs in checkpoint_sets(df).items() for g in gs}
    r = rows[rows["rule"].ne("frozen") & rows["grid"].isin(family)].assign(family=lambda x: x["grid"].map(family))
    sizes = r.groupby("family")["grid"].nunique()
    r = r[r["family"].isin(sizes[sizes >= 2].index)]
    out = []
    for k, g in r.groupby(key, sort=False, dropna=False):
        d = g["diff"].to_numpy(float)
        labels = list(g["label"])
        conclusive = sorted({lab for lab in labels if lab in CONCLUSIVE})
        if len(set(labels)) == 1 and labels[0] in CONCLUSIVE:
            verdict = f"holds: {labels[0]}"
        elif len(conclusive) > 1:
            verdict = "differs"
        elif conclusive:
            verdict = f"partly: {conclusive[0]} ({labels.count(conclusive[0])} of {len(labels)})"
        else:
            verdict = "underpowered"
        fin = d[np.isfinite(d)]
        p = float(sps.ttest_1samp(fin, 0.0).pvalue) if len(fin) >= 2 and np.ptp(fin) > 0 else np.nan
        out.append(dict(zip(key, k), checkpoints=len(g), grids=" ".join(g["grid"]), labels=" / ".join(labels),
                        diffs=" / ".join(f"{x:.4g}" for x in d), diff=float(np.mean(fin)) if len(fin) else np.nan,
                        sd_between=float(np.std(fin, ddof=1)) if len(fin) >= 2 else np.nan, p_nested=p,
                        verdict=verdict))
    t = pd.DataFrame(out, columns=[c for c in cols if c != "p_nested_holm"])
    t["p_nested_holm"] = np.nan
    for _, idx in t[t["p_nested"].notna()].groupby(key[:-1], sort=False, dropna=False).groups.items():
        t.loc[idx, "p_nested_holm"] = holm(t.loc[idx, "p_nested"].to_numpy())
    return t[cols]


def seeds_of(rows: pd.DataFrame) -> pd.DataFrame:
    """The seed-level means behind ``rows`` (from :func:`row_stats`): one row per (cell, rule, coefficient, seed)."""
    held = rows.attrs.get("seeds")
    if held is None:
        raise ValueError("rows: not from stats.row_stats (no seed-level means attached); pass seeds= explicitly")
    return held.frame


def _twins(rows: pd.DataFrame) -> np.ndarray:
    """Per row, the position of the row whose policy it executes (a deterministic ``Rule.mean_of`` twin at the
    same PoE-equivalent α in the same cell), else -1."""
    pos = {(tuple(r[CELL]), r["rule"], round(float(r["param"]), 6)): i for i, (_, r) in enumerate(rows.iterrows())}
    out = np.full(len(rows), -1)
    for i, (_, r) in enumerate(rows.iterrows()):
        rule = kernels.RULES.get(r["rule"])
        twin = rule.twin(r["param"]) if rule is not None and not r["sample"] else None
        if twin is not None:
            out[i] = pos.get((tuple(r[CELL]), *twin), -1)
    return out


def _kl_choice(g: pd.DataFrame, kl_budget: float) -> pd.Series:
    """The KL-budget selector's row: largest mean KL within the budget, else the smallest KL."""
    within = g[g["kl"] <= kl_budget]
    return within.loc[within["kl"].idxmax()] if len(within) else g.loc[g["kl"].idxmin()]


def labels_table(rows: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """``labels.csv``: one row per labelled (cell, rule, operating point): the effect with its interval first,
    then the test, its family and the label. The oracle point is cross-fitted (``param``: the coefficient half A
    chose, ``param_b``: half B's)."""
    rs = rows.set_index(ROW)
    out = []
    for _, c in cells.iterrows():
        base = {**{k: c[k] for k in CELL}, "rule": c["rule"]}
        o = rs.loc[(*(c[k] for k in CELL), c["rule"], c["oracle_param"])]
        out.append({**base, "point": "oracle (cross-fitted)", "param": c["oracle_param"], "param_b": c["oracle_param_b"],
                    "n": c["oracle_n"], "mean": c["oracle_mean"], "frozen_mean": c["oracle_frozen_mean"],
                    "diff": c["oracle_diff"], "diff_low": c["oracle_diff_low"], "diff_high": c["oracle_diff_high"],
                    "mde": c["oracle_mde"], "p": c["oracle_p"], "p_holm": c["oracle_p"], "family": "this test alone",
                    "family_size": 1, "label": c["oracle_label"], "length": o.get("length", np.nan),
                    "frozen_length": o.get("frozen_length", np.nan)})
        r = rs.loc[(*(c[k] for k in CELL), c["rule"], c["selector_param"])]
        out.append({**base, "point": "selector", "param": c["selector_param"], "param_b": np.nan, "n": r["n_pairs"],
                    "mean": r["mean"], "frozen_mean": r["frozen_mean"], "diff": r["diff"], "diff_low": r["diff_low"],
                    "diff_high": r["diff_high"], "mde": r["mde"], "p": r["p_perm"], "p_holm": r["p_holm"],
                    "family": "the cell's coefficients of this rule", "family_size": r["family_size"],
                    "label": r["label"], "length": r.get("length", np.nan),
                    "frozen_length": r.get("frozen_length", np.nan)})
    return pd.DataFrame(out)


def _halves(seeds) -> tuple[np.ndarray, np.ndarray]:
    """The cross-fitting split of a cell's seeds: alternate seeds in sorted order (A: 1st, 3rd, ...)."""
    s = np.sort(np.asarray(list(seeds)))
    return s[0::2], s[1::2]


def crossfit(per_param: pd.DataFrame) -> dict:
    """The cross-fitted best column of ``per_param`` (``[seed, coefficient]`` of values, complete rows only):
    the coefficient with the best mean on half A of the seeds scores half B, and vice versa. Returns the two
    choices, ``choice`` (by seed: the coefficient the half it is not in chose) and ``values`` (by seed: its
    value under that choice)."""
    per_param = per_param.dropna()
    a, b = _halves(per_param.index)
    if len(a) < 2 or len(b) < 2 or per_param.shape[1] < 2:  # too few seeds to split: the one choice, in-sample
        pa = pb = per_param.mean().idxmax()
    else:
        pa, pb = per_param.loc[a].mean().idxmax(), per_param.loc[b].mean().idxmax()
    choice = pd.Series(pb, index=per_param.index)
    choice[choice.index.isin(b)] = pa
    return {"a": pa, "b": pb, "choice": choice, "values": _pick(per_param, choice),
            "crossfit": len(a) >= 2 and len(b) >= 2 and per_param.shape[1] >= 2}


def _pick(table: pd.DataFrame, choice: pd.Series) -> pd.Series:
    """Per seed (``choice``'s index), ``table``'s value in the column ``choice`` names."""
    return pd.Series([table.at[s, p] for s, p in choice.items()], index=choice.index, dtype=float)


def label_cells(rows: pd.DataFrame, kl_budget: float = 0.5, seeds: pd.DataFrame | None = None,
                value: str = "return_goal", effect: float = EFFECT) -> pd.DataFrame:
    """Per (cell, rule): the cross-fitted oracle (its coefficients, mean, paired test vs frozen on the same
    seeds, label) and the KL-budget selector's coefficient and label, and the regret between them.
    ``seeds``: the seed-level means (default ``rows.attrs["seeds"]`` from :func:`row_stats`)."""
    sm = seeds_of(rows) if seeds is None else seeds
    level = rows.attrs.get("level", 0.05)
    frozen = sm[sm.rule == "frozen"].set_index([*CELL, "seed"]).sort_index()
    by_row = {k: g.set_index("seed") for k, g in sm[sm.rule != "frozen"].groupby(ROW, sort=False, dropna=False)}
    out = []
    tested = rows[(rows.rule != "frozen") & rows["same_as"].eq("")]
    for key, g in tested.groupby(FAMILY, sort=False, dropna=False):
        cell = key[:-1]
        table = pd.DataFrame({p: by_row[(*key, p)][value] for p in g["param"]})
        try:
            base = frozen.loc[cell]
        except KeyError:
            base = pd.DataFrame(columns=[value, "length"])
        table = table[table.index.isin(base.index)] if len(base) else table
        cf = crossfit(table)
        test = paired(cf["values"], base[value])
        lengths = pd.DataFrame({p: by_row[(*key, p)].get("length", pd.Series(dtype=float)) for p in g["param"]})
        if "length" in base and lengths.notna().any().any():
            ln = _pick(lengths, cf["choice"])
            sh, length = shorter(ln, base["length"]), float(ln.mean())
        else:
            sh, length = {"frozen_length": np.nan, "p_shorter": np.nan}, np.nan
        guarded = bool(g["guarded"].iloc[0])
        label = label_of(test["p_perm"], test["diff"], test["diff_low"], test["diff_high"], test["frozen_mean"],
                       length, sh["frozen_length"], sh["p_shorter"], guarded, level, effect)
        chosen = _kl_choice(g, kl_budget)
        oracle_mean = float(cf["values"].mean())
        out.append(dict(zip(FAMILY, key), oracle_param=cf["a"], oracle_param_b=cf["b"], crossfit=cf["crossfit"],
                        oracle_n=test["n_pairs"], oracle_mean=oracle_mean, oracle_frozen_mean=test["frozen_mean"],
                        oracle_diff=test["diff"], oracle_diff_low=test["diff_low"], oracle_diff_high=test["diff_high"],
                        oracle_p=test["p_perm"], oracle_mde=_mde(test["sd_diff"], test["n_pairs"], 1, level),
                        oracle_label=label, selector_param=chosen["param"], selector_mean=chosen["mean"],
                        selector_kl=chosen["kl"], selector_label=chosen["label"], regret=oracle_mean - chosen["mean"]))
    return pd.DataFrame(out)


def deviation(df: pd.DataFrame, gamma: float = GAMMA) -> pd.DataFrame:
    """Per (cell, rule, coefficient): δπ, the performance-difference bound, the observed change.

    δπ is the expected total variation between the composed policy and the frozen
    actor under the composed policy's discounted state visitation (grid columns
    ``delta_pi_lower`` / ``delta_pi_upper``: bounds, since TV between diagonal
    Gaussians has no closed form), averaged over episodes within a seed, then over
    seeds. The bound (performance-difference lemma, ``|A| <= osc Q <= 2 R_max/(1-γ)``):

        |J_γ(composed) - J_γ(frozen)| <= 2 R_max δπ / (1 - γ)^2,

    with ``R_max`` the largest |goal reward| seen in the cell (an empirical stand-in
    for the reward bound) and ``J_γ`` the discounted goal return (``observed``: the
    difference of the seed-averaged means). ``scale = R_max / (1 - γ)`` is the
    largest possible ``|J_γ|``: a bound at or above it cannot fail (``vacuous``), which
    happens whenever δπ ≥ (1 − γ)/2.
    """
    df = _with_grid(df)
    kept = df[np.isfinite(df["return_goal"].to_numpy(float))]
    per_seed = kept.groupby([*ROW, "seed"], sort=False, dropna=False).agg(
        lo=("delta_pi_lower", "mean"), hi=("delta_pi_upper", "mean"), j=("discounted_goal", "mean")).reset_index()
    per_row = per_seed.groupby(ROW, sort=False, dropna=False)[["lo", "hi", "j"]].mean()
    r_max = kept.groupby(CELL, sort=False, dropna=False)["max_abs_goal_reward"].max()
    out = []
    if "frozen" not in per_row.index.get_level_values("rule"):  # nothing to compare with (a run without frozen)
        return pd.DataFrame(out)
    frozen = per_row.xs("frozen", level="rule").reset_index("param", drop=True)
    frozen = frozen[~frozen.index.duplicated()]
    for key, row in per_row.iterrows():
        cell, rule, param = key[:len(CELL)], key[-2], key[-1]
        if rule == "frozen" or cell not in frozen.index:
            continue
        rm = float(r_max.loc[cell])
        bound = 2.0 * rm * float(row["hi"]) / (1.0 - gamma) ** 2
        scale = rm / (1.0 - gamma)
        out.append(dict(zip(CELL, cell), rule=rule, param=param, delta_pi_lower=float(row["lo"]),
                        delta_pi_upper=float(row["hi"]), r_max=rm, bound=bound, scale=scale, vacuous=bound >= scale,
                        observed=abs(float(row["j"]) - float(frozen.loc[cell, "j"]))))
    return pd.DataFrame(out)


def selectors(rows: pd.DataFrame, cells: pd.DataFrame, kl_budget: float = 0.5, rule: str = "poe") -> pd.DataFrame:
    """Per cell: ``rule``'s cross-fitted oracle (:func:`label_cells`) vs the KL-budget selector and adaptive α.

    * oracle: the cross-fitted best coefficient's mean (chosen on the other half of the seeds);
    * selector: the KL-budget selector's coefficient of ``rule``;
    * adaptive: ``poe_adaptive`` at the per-step budget ``kl_budget`` (or the largest budget below
      it in the grid), when the grid has it.

    Regrets are the oracle's mean minus each choice's mean (goal return; may be negative: the oracle
    is estimated out of sample).
    """
    out = []
    c = cells[cells.rule == rule]
    for _, r in c.iterrows():
        cell = tuple(r[k] for k in CELL)
        rec = dict(zip(CELL, cell), oracle_param=r["oracle_param"], oracle_param_b=r["oracle_param_b"],
                   oracle_mean=r["oracle_mean"], selector_param=r["selector_param"], selector_mean=r["selector_mean"],
                   selector_regret=r["oracle_mean"] - r["selector_mean"])
        g = rows[rows[CELL].eq(pd.Series(dict(zip(CELL, cell)))).all(axis=1)]
        ad = g[(g.rule == "poe_adaptive") & (g["param"] <= kl_budget + 1e-12)]
        if len(ad):
            a = ad.loc[ad["param"].idxmax()]
            rec.update(adaptive_budget=a["param"], adaptive_mean=a["mean"], adaptive_kl=a["kl"],
                       adaptive_regret=r["oracle_mean"] - a["mean"])
        out.append(rec)
    return pd.DataFrame(out)


def tracking(df: pd.DataFrame, level: float = 0.05, tracks: tuple[str, str] | None = None) -> pd.DataFrame:
    """Does steering move the goal's own metric? For goals that track a continuous target (``GoalDef.tracks``
    = ``(signal, param)``: G3's ``(x_velocity, target_speed)``), one row per (cell, rule, coefficient): the
    signal's mean, the tracking error ``|signal - target|`` (per episode, averaged per seed) and frozen's on
    the same seeds, the paired tests of the errors (``p_t``, ``p_perm``; Holm within a cell's coefficients of
    a rule: ``p_holm``), the mean lengths, and ``closer``: significantly smaller error (Holm) with mean length
    at least ``FALL_RATIO`` x frozen's. Empty when the grid has no such goal. ``tracks``: which declaration
    (default: the first registered one whose columns the episodes have)."""
    from poe_jax.envs.goals import GOALS

    if tracks is None:
        declared = [d.tracks for d in GOALS.values() if d.tracks and set(d.tracks) <= set(df.columns)]
        if not declared:
            return pd.DataFrame()
        tracks = declared[0]
    signal, target = tracks
    if target not in df or not df[target].notna().any():
        return pd.DataFrame()
    df = _with_grid(df)
    d = df[df[target].notna()].assign(track_error=lambda x: (x[signal] - x[target]).abs())
    rows, _ = row_stats(d, value="track_error", level=level)
    speed, _ = seed_means(d, value=signal)
    rows = rows.merge(speed.groupby(ROW, sort=False, dropna=False)[signal].mean().reset_index(), on=ROW)
    rows = rows.merge(d.groupby(ROW, sort=False, dropna=False)[target].first().reset_index(), on=ROW)
    rows = rows.rename(columns={"mean": "error", "frozen_mean": "frozen_error"})
    rows["closer"] = ((rows["p_holm"] < level) & (rows["diff"] < 0)
                      & (rows["length"] >= FALL_RATIO * rows["frozen_length"]))
    keep = [*ROW, target, "n", signal, "error", "se", "frozen_error", "p_t", "p_perm", "p_holm", "length",
            "frozen_length", "closer"]
    return rows[[c for c in keep if c in rows]]


# ---------------------------------------------------------------- aggregates across cells (rliable style)
def normalized_runs(df: pd.DataFrame, cells: pd.DataFrame, point: str = "selector",
                    value: str = "return_goal") -> tuple[pd.DataFrame, int]:
    """One row per distinct (cell, rule, seed) at each rule's ``point`` coefficient (``selector``: the
    KL-budget selector's, what a deployment would pick), with ``score``: the seed's mean ``value`` divided by
    frozen's mean over the cell's seeds (frozen scores 1 on average), and ``frozen_score``: frozen's own score
    on the same seed (for paired statistics). Each recorded episode counts once (:func:`distinct`); frozen
    appears once per cell and prior quality, since aggregates are per prior quality. Cells whose frozen mean
    is not > 0 cannot be normalised and are left out; their count is returned."""
    sm, _ = seed_means(df, value)
    fz = sm[sm.rule == "frozen"]
    frozen = fz.groupby(CELL, dropna=False)[value].mean()
    keep = frozen[frozen > 0]
    chosen = cells[[*CELL, "rule", f"{point}_param"]].rename(columns={f"{point}_param": "param"})
    runs = pd.concat([sm.merge(chosen, on=[*CELL, "rule", "param"]), fz], ignore_index=True)
    base = keep.reindex(pd.MultiIndex.from_frame(runs[CELL])).to_numpy()
    fz_seed = fz.set_index([*CELL, "seed"])[value]
    fz_seed = fz_seed[~fz_seed.index.duplicated()]
    paired = fz_seed.reindex(pd.MultiIndex.from_frame(runs[[*CELL, "seed"]])).to_numpy()
    runs = runs.assign(score=runs[value].to_numpy(float) / base, frozen_score=paired / base)
    runs = runs[np.isfinite(base)].reset_index(drop=True)
    return runs[[*CELL, "rule", "param", "seed", "sample", "score", "frozen_score"]], int((frozen <= 0).sum())


def iqm(x) -> float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``)."""
    return float(sps.trim_mean(np.asarray(x, float).ravel(), 0.25))


def _strata(runs: pd.DataFrame, columns=("score",)) -> list[np.ndarray]:
    return [g[list(columns)].to_numpy(float).squeeze(-1) if len(columns) == 1 else g[list(columns)].to_numpy(float)
            for _, g in runs.groupby(CELL, sort=False, dropna=False)]


def stratified_bootstrap(strata: list[np.ndarray], statistic, reps: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float, float]:
    """``(point, low, high)``: ``statistic`` of the strata, and a percentile interval from resampling each
    stratum (cell) with replacement along its first axis, its size kept (rliable's stratified bootstrap: the
    cells are fixed, the seeds within each are the sample; a stratum of ``[seed, 2]`` pairs keeps its pairs)."""
    rng = np.random.default_rng(seed)
    point = np.asarray(statistic(strata), float)
    draws = np.stack([np.asarray(statistic([s[rng.integers(0, len(s), len(s))] for s in strata]), float)
                      for _ in range(reps)])
    a = (1 - level) / 2
    lo, hi = np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)
    if point.ndim == 0:  # a scalar statistic; a vector one (e.g. a profile over thresholds) gives arrays
        return float(point), float(lo), float(hi)
    return point, lo, hi


def _prob_improvement(pairs: list[np.ndarray]) -> float:
    """Paired probability of improvement: per cell, over its seeds, P(rule's run > frozen's run on the same
    seed) + P(equal)/2 (``pairs``: one ``[seed, 2]`` array per cell, columns rule and frozen); mean over cells."""
    return float(np.mean([np.mean((p[:, 0] > p[:, 1]) + 0.5 * (p[:, 0] == p[:, 1])) for p in pairs]))


def aggregate(runs: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per prior quality, execution mode and rule, across the cells it ran in: IQM and mean of the normalised
    score with 95% stratified bootstrap intervals, and the paired probability of improvement over frozen (seeds
    resampled within each cell with their pairs). Qualities are never pooled (a broken prior is not averaged
    with the trained one), nor sampled execution with the executed mean."""
    out = []
    runs = runs if "sample" in runs else runs.assign(sample=False)
    for (prior, sample, rule), r in runs.groupby(["prior", "sample", "rule"], sort=False):
        strata = _strata(r)
        rec = {"prior": prior, "execution": "sampled" if sample else "mean", "rule": rule, "cells": len(strata),
               "runs": int(sum(len(s) for s in strata))}
        for name, fn in (("iqm", iqm), ("mean", np.mean)):
            p, lo, hi = stratified_bootstrap(strata, lambda ss, fn=fn: fn(np.concatenate(ss)), reps, seed)
            rec.update({name: p, f"{name}_low": lo, f"{name}_high": hi})
        if rule != "frozen":
            pairs = [s[np.isfinite(s).all(axis=1)] for s in _strata(r, ("score", "frozen_score"))]
            pairs = [s for s in pairs if len(s)]
            if pairs:
                p, lo, hi = stratified_bootstrap(pairs, _prob_improvement, reps, seed)
                rec.update(p_improve=p, p_improve_low=lo, p_improve_high=hi)
        out.append(rec)
    out = pd.DataFrame(out)
    order = {k: {v: i for i, v in enumerate(dict.fromkeys(runs[k]))} for k in ("prior", "rule")}
    return out.sort_values(["prior", "execution", "rule"], key=lambda c: c.map(order[c.name]) if c.name in order else c,
                           kind="stable").reset_index(drop=True)


def performance_profile(runs: pd.DataFrame, taus: np.ndarray, reps: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per rule and threshold ``tau``: the fraction of runs (cell, seed) with normalised score > tau,
    averaged over cells (each cell weighs the same), with a 95% stratified bootstrap band. Pass one prior
    quality's runs."""
    taus = np.asarray(taus, float)
    rows = []
    for rule, r in runs.groupby("rule", sort=False):
        def fractions(ss):
            return np.mean([np.mean(s[:, None] > taus[None, :], axis=0) for s in ss], axis=0)

        p, lo, hi = stratified_bootstrap(_strata(r), fractions, reps, seed)
        rows += [{"rule": rule, "tau": float(t), "fraction": float(a), "low": float(b), "high": float(c)}
                 for t, a, b, c in zip(taus, p, lo, hi)]
    return pd.DataFrame(rows)
