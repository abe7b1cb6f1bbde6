"""The study's claims, each tested the study's way on its own population: one row each in ``claims.csv``.

Each claim is registered with :func:`register_claim` and is ``fn(ctx: Evidence) -> Verdict``.
A verdict names the **population** it read (grids, cells, coefficients, prior qualities,
execution mode, seeds), the test, the measured effect with its interval, and one of
:data:`VERDICTS`. Each claim's family of tests is its own (Holm within the claim), so a verdict
does not change when an unrelated grid is added to the run. A claim the run cannot test says
what it would need (``not covered``); it never guesses.

=====  ====================================================================================
claim  the study's statement (the test here)
=====  ====================================================================================
1      ``poe(α)`` and ``kl_reg(α/(1−α))`` have the same mean; variances differ by (1−α)
       (the float32 kernels against float64 references that do not use the engine's formulas)
2      under degraded or random priors PoE stays anchored to frozen; additive and prior-only
       collapse (J/J_frozen per rule and α, decided at α ≤ 0.75 and the selector's α)
3      a KL-budget selector often recovers a near-oracle α (regret beside never steering and a
       fixed α; the oracle cross-fitted; counted where the oracle beats frozen significantly)
4      HELP / FROZEN / HURT over the 12 (env, goal) cells of the medium actors (study: 4/5/3)
5      medium-expert actors are hurt in every harder cell at every α (trained prior)
6      a BC AntMaze actor succeeds 0 times under every rule ("premise not met" if it succeeds)
7      the performance-difference bound with δπ holds ("vacuous" when it cannot fail)
8      PoE's support violation stays below frozen's own; critic-greedy violates almost
       everywhere (sampled execution)
9      the rules' ordering is stable under shift (no significant pairwise difference reverses)
=====  ====================================================================================
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from poe_jax import checkpoints
from poe_jax.kernels import rules as kernels
from poe_jax.analysis import stats

__all__ = ["ANCHORED", "CLAIMS", "COLLAPSE", "Claim", "Evidence", "FIXED_ALPHA", "NEAR_ORACLE", "NO_SET",
           "NOT_COVERED", "VERDICTS", "Verdict", "checkpoint_slices", "degradation_curve", "evaluate",
           "register_claim", "shift_ratios"]

VERDICTS = ("reproduced", "partly", "not reproduced", "vacuous", "premise not met", "underpowered", "not covered")
NOT_COVERED = "not covered"
NO_SET = "no set in its population"  # claims.csv across_checkpoints: the claim read no checkpoint set
ANCHORED = 0.9  # claim 2: PoE anchored = median J/J_frozen over cells >= this, at every alpha of the decision set
COLLAPSE = 0.5  # claim 2: a rule collapses = its median J/J_frozen <= this (additive: at some alpha of the set)
DECISION_ALPHA = 0.75  # claim 2: the decision set is the grid's alphas <= this, and the selector's alpha
NEAR_ORACLE = 0.1  # claim 3: a choice is near-oracle when its regret is <= 10% of the oracle's mean
FIXED_ALPHA = 0.5  # claim 3: the fixed-alpha baseline
ALMOST_EVERYWHERE = 0.9  # claim 8: critic_greedy "violates almost everywhere" = mean rate >= this
PREMISE_SUCCESS = 0.05  # claim 6: the BC actor fails (the study's premise) when its success rate is <= this
STUDY_SPLIT = (4, 5, 3)  # claim 4: the study's HELP / FROZEN / HURT counts over its 12 cells


class Evidence(NamedTuple):
    """What the claims read: the episodes, the per-row statistics (with ``rows.attrs["seeds"]``, the
    seed-level means, :func:`poe_jax.analysis.stats.seeds_of`) and the per-(cell, rule) operating points (:mod:`poe_jax.analysis.stats`)."""

    df: pd.DataFrame
    rows: pd.DataFrame
    cells: pd.DataFrame
    level: float
    kl_budget: float
    actors: dict = {}  # checkpoint name -> what its card says (the run summary's provenance: scores, expert level)


class Verdict(NamedTuple):
    test: str  # the test used, with its multiple-testing family
    effect: str  # the measured effect, with its 95% interval where it has one
    verdict: str  # one of VERDICTS
    population: str = ""  # what the test read: grids, cells, coefficients, priors, execution mode, seeds
    grids: frozenset = frozenset()  # the grids whose episodes the test read (none for the closed forms)


class Claim(NamedTuple):
    id: int
    statement: str
    rule: str  # how the verdict is decided (stated before looking)
    fn: Callable[[Evidence], Verdict]


CLAIMS: dict[int, Claim] = {}


def register_claim(cid: int, statement: str, rule: str):
    """Decorator: register ``fn(ctx: Evidence) -> Verdict`` as claim ``cid``."""

    def deco(fn):
        if cid in CLAIMS:
            raise ValueError(f"claim {cid} is already registered")
        CLAIMS[cid] = Claim(cid, statement, rule, fn)
        return fn

    return deco


def _verdicts(ctx: Evidence, ids=None) -> dict[int, Verdict]:
    out = {}
    for c in sorted(CLAIMS.values()):
        if ids is not None and c.id not in ids:
            continue
        v = c.fn(ctx)
        if v.verdict not in VERDICTS:
            raise ValueError(f"claim {c.id}: verdict {v.verdict!r} is not one of {VERDICTS}")
        out[c.id] = v
    return out


def evaluate(ctx: Evidence) -> pd.DataFrame:
    """One row per registered claim: statement, population, test, effect, verdict and the verdict's rule;
    then ``per_checkpoint`` and ``across_checkpoints``. In a run with checkpoint sets (``zoo:NAME@*``) a
    claim whose test read a set's grids is decided again on each checkpoint alone
    (:func:`checkpoint_slices`), with its own test and family: ``per_checkpoint`` joins those verdicts
    (" / ", slice order; as many slices as the smallest set the claim read), ``across_checkpoints`` is
    ``holds: VERDICT`` when they agree and ``differs`` when not. A claim that read no set says
    :data:`NO_SET`. Both are empty in a run without sets and for a claim the run does not cover."""
    full = _verdicts(ctx)
    slices, in_sets = checkpoint_slices(ctx.df)
    per = {cid: "" for cid in full}
    across = dict(per)
    if slices:
        sizes = {g: len(gs) for gs in stats.checkpoint_sets(ctx.df).values() for g in gs}
        reads = {cid: min(sizes[g] for g in v.grids & in_sets) for cid, v in full.items()
                 if v.verdict != NOT_COVERED and v.grids & in_sets}
        on_slice = [_verdicts(_restrict(ctx, grids), {c for c, k in reads.items() if k > i})
                    for i, grids in enumerate(slices)]
        for cid, v in full.items():
            if v.verdict == NOT_COVERED:
                continue
            if cid not in reads:
                across[cid] = NO_SET
                continue
            vs = [on_slice[i][cid].verdict for i in range(reads[cid])]
            per[cid] = " / ".join(vs)
            across[cid] = f"holds: {vs[0]}" if len(set(vs)) == 1 else "differs"
    return pd.DataFrame([{"claim": cid, "statement": CLAIMS[cid].statement, "population": v.population,
                          "test": v.test, "effect": v.effect, "verdict": v.verdict, "rule": CLAIMS[cid].rule,
                          "per_checkpoint": per[cid], "across_checkpoints": across[cid]}
                         for cid, v in full.items()])


def checkpoint_slices(df: pd.DataFrame) -> tuple[list[set[str]], set[str]]:
    """The run seen one checkpoint at a time. Slice k holds the k-th grid of every checkpoint set
    (:func:`poe_jax.analysis.stats.checkpoint_sets`; members in run order: seed 0 first; for an actor set × a
    prior set, the k-th (actor, prior) pair) and the grids outside sets: each in every slice, except a grid
    that runs a checkpoint that tells a set's members apart (a seed-0 actor's shift grid beside that actor's
    set), which is in that member's slice only. Returns the slices (none when the run has no set) and the
    grids that are in a set. A set shorter than another is absent from the later slices."""
    sets = list(stats.checkpoint_sets(df).values())
    if not sets:
        return [], set()
    first = df.drop_duplicates("grid").reindex(columns=["grid", "actor", "prior_checkpoint"])
    names = {str(g): {x for x in (a, pc) if isinstance(x, str) and x} for g, a, pc in first.itertuples(index=False)}
    slices = [set() for _ in range(max(map(len, sets)))]
    home: dict[str, int] = {}  # a checkpoint that only one member of a set runs -> that member's slice
    for grids in sets:
        common = set.intersection(*(names[g] for g in grids))
        for k, g in enumerate(grids):
            slices[k].add(g)
            for name in names[g] - common:
                home.setdefault(name, k)
    in_sets = set().union(*slices)
    for g in names.keys() - in_sets:
        ks = sorted({home[n] for n in names[g] if n in home})
        for k in ks[:1] or range(len(slices)):
            slices[k].add(g)
    return slices, in_sets


def _restrict(ctx: Evidence, grids: set[str]) -> Evidence:
    """The evidence of ``grids`` only (rows keep their seed-level means: claims select by row)."""
    rows = ctx.rows[ctx.rows["grid"].isin(grids)].copy()
    rows.attrs = dict(ctx.rows.attrs)
    return ctx._replace(df=ctx.df[ctx.df["grid"].isin(grids)], rows=rows,
                        cells=ctx.cells[ctx.cells["grid"].isin(grids)])


# ---------------------------------------------------------------- populations
def _missing(test: str, need: str, population: str = "") -> Verdict:
    return Verdict(test, f"needs {need}", NOT_COVERED, population or "none in this run")


def _medium(actor: str) -> bool:
    """A medium actor (the study's main population): ``medium`` in its name, not medium-expert/-replay."""
    return re.search(r"medium(?!-expert|-replay)", str(actor)) is not None


def _expert(actor: str) -> bool:
    return "medium-expert" in str(actor)


def _card_score(ctx: Evidence, actor: str) -> str:
    """`` (card: 0.0 [0.0, 16.1] (20 ep))``: the actor's score on its card, from the run's summary, or ''."""
    a = ctx.actors.get(actor)
    score = checkpoints.score_ci(a) if isinstance(a, dict) else None
    return f" (card: {score})" if score else ""


def _seeds_of(ctx: Evidence, rows: pd.DataFrame) -> pd.DataFrame:
    sm = stats.seeds_of(ctx.rows)
    keys = rows[stats.ROW].drop_duplicates()
    return sm.merge(keys, on=stats.ROW)


def _pop(rows: pd.DataFrame, ctx: Evidence, extra: str = "") -> tuple[str, frozenset]:
    """A verdict's population: the line (:func:`_describe`) and the grids it read."""
    return _describe(rows, ctx, extra), frozenset(map(str, rows["grid"]))


def _describe(rows: pd.DataFrame, ctx: Evidence, extra: str = "") -> str:
    """The population line: grids, actors, cells, rules and coefficients, priors, shifts, execution, seeds."""
    if rows.empty:
        return "none in this run"
    per_row = _seeds_of(ctx, rows).groupby(stats.ROW, dropna=False).agg(n=("seed", "nunique"), e=("episodes", "sum"))
    n_seeds, eps = per_row["n"], per_row["e"] / per_row["n"]
    rules = []
    for rule, g in rows.groupby("rule", sort=False):
        r = kernels.RULES.get(rule)
        ps = sorted(set(g["param"]))
        rules.append(rule if (r is not None and r.param is None) else f"{rule} {{{', '.join(f'{p:g}' for p in ps)}}}")
    execution = sorted(set(np.where(rows["sample"], "sampled", "mean executed")))
    cells = rows[["grid", "env", "actor", "goal", "shift"]].drop_duplicates()
    seeds = f"{int(n_seeds.min())}" + (f"–{int(n_seeds.max())}" if n_seeds.max() != n_seeds.min() else "")
    per = f"{eps.min():g}" if eps.min() == eps.max() else f"{eps.min():g}–{eps.max():g}"
    return (f"grids {', '.join(dict.fromkeys(rows['grid']))}; {len(cells)} cells (env, actor, goal, shift); "
            f"rules {'; '.join(rules)}; priors {', '.join(dict.fromkeys(rows['prior']))}; "
            f"shifts {', '.join(dict.fromkeys(rows['shift']))}; {' + '.join(execution)}; {seeds} seeds × {per} "
            f"episodes per row" + (f"; {extra}" if extra else ""))


def _select(ctx: Evidence, *, actors=None, priors=None, shift: str | None = "none", sample: bool | None = False,
            rules=None, dedupe: bool = True) -> pd.DataFrame:
    """Rows of the population: locomotion cells (not goal-reaching ones, whose episodes end at the goal),
    ``actors`` a predicate on the actor's name, ``priors`` a set of qualities, ``shift`` one shift (None:
    any), ``sample`` the execution mode (None: any), ``rules`` a set of rules. Rows that repeat another
    policy (``same_as``) are left out; ``dedupe``: a cell repeated in several grids is read once."""
    r = ctx.rows
    keep = r["guarded"].astype(bool)  # the survival guard applies: episodes do not end at a goal
    if actors is not None:
        keep &= r["actor"].map(actors).astype(bool)
    if priors is not None:
        keep &= r["prior"].isin(priors)
    if shift is not None:
        keep &= r["shift"].eq(shift)
    if sample is not None:
        keep &= r["sample"].eq(sample)
    if rules is not None:
        keep &= r["rule"].isin(rules)
    r = r[keep & r["same_as"].eq("")]
    if not dedupe:
        return r
    # a cell repeated in several grids (the shift grids' 'none' beside the main grids) is read once: from the
    # grid with the most coefficients of the rule, the first such in run order. Grids with other prior
    # checkpoints (a set of priors) are other cells, not repeats.
    pc = ctx.df.groupby("grid")["prior_checkpoint"].first().to_dict() if "prior_checkpoint" in ctx.df else {}
    r = r.assign(prior_checkpoint=[str(pc.get(g, "")) for g in r["grid"]])
    key = ["env", "actor", "prior_checkpoint", "goal", "prior", "shift", "sample", "rule"]
    n = r.groupby(["grid", *key], sort=False, dropna=False).size().rename("n").reset_index()
    best = n.sort_values("n", ascending=False, kind="stable").drop_duplicates(key, keep="first")
    keep = pd.MultiIndex.from_frame(r[["grid", *key]]).isin(pd.MultiIndex.from_frame(best[["grid", *key]]))
    return r[keep].drop(columns="prior_checkpoint")


def _labels(r: pd.DataFrame, p_col: str, level: float) -> list[str]:
    """Each row's label (:func:`poe_jax.analysis.stats.label_of`) with the claim's adjusted p in ``p_col``."""
    return [stats.label_of(p, d, lo, hi, fm, ln, fl, ps, gd, level, stats.EFFECT)
            for p, d, lo, hi, fm, ln, fl, ps, gd in zip(r[p_col], r["diff"], r["diff_low"], r["diff_high"],
                                                        r["frozen_mean"], r["length"], r["frozen_length"],
                                                        r["p_shorter"], r["guarded"])]


def _unreachable(m: int, n: int, level: float) -> str:
    """Why a family of ``m`` permutation tests on ``n`` seeds cannot reject at ``level`` ("" when it can)."""
    floor = m * stats.min_p(n)
    return "" if floor < level else (f"{m} tests on {n} seeds: the smallest attainable Holm-adjusted p is "
                                     f"{floor:.3g} ≥ {level}, so no test could be significant")


def _ci(x) -> str:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return f"{x.mean():.3g}" if len(x) else "–"
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return f"{x.mean():.3g} [{x.mean() - half:.3g}, {x.mean() + half:.3g}]"


# ---------------------------------------------------------------- claim 1
@register_claim(1, "poe(α) and kl_reg(α/(1−α)) execute the same mean; covariances differ by the factor (1−α)",
                "reproduced: the float32 kernels match float64 references that do not use the engine's formulas "
                "(quadrature of π_θ^(1−α) π_g^α; a numerical maximiser of β·E_π[log π_g] − KL(π‖π_θ) over "
                "Gaussians) to 1e-4 relative, and kl_reg's variance is (1−α)·poe's to 1e-4; not reproduced otherwise")
def _same_mean(ctx: Evidence) -> Verdict:
    grid_alphas = {round(float(a), 6) for a in ctx.rows.loc[ctx.rows.rule == "poe", "param"] if 0 < a < 1}
    return _closed_forms(tuple(sorted(grid_alphas | {0.1, 0.25, 0.5, 0.75, 0.9})), kernels.poe, kernels.kl_reg)


@functools.lru_cache(maxsize=8)
def _closed_forms(alphas: tuple[float, ...], poe, kl_reg) -> Verdict:
    """Claim 1's verdict at ``alphas`` for the kernels ``poe`` and ``kl_reg`` (cached: it reads no episodes)."""
    from scipy import optimize

    from poe_jax.kernels.gaussian import DiagGaussian

    rng = np.random.default_rng(0)
    k = 64
    mt, mg = rng.normal(0, 1, k), rng.normal(0, 1, k)
    st, sg = np.exp(rng.normal(-0.5, 0.5, k)), np.exp(rng.normal(-0.5, 0.5, k))
    worst = {"poe mean": 0.0, "poe var": 0.0, "kl_reg mean": 0.0, "kl_reg var": 0.0, "var ratio": 0.0}
    for al in alphas:
        beta = al / (1 - al)
        f32 = lambda *x: [np.asarray(v, np.float32) for v in x]  # noqa: E731
        a, g = DiagGaussian(*f32(mt, st)), DiagGaussian(*f32(mg, sg))
        p, q = poe(a, g, np.float32(al)), kl_reg(a, g, np.float32(beta))
        pm, pv = np.asarray(p.mean, float), np.asarray(p.std, float) ** 2
        qm, qv = np.asarray(q.mean, float), np.asarray(q.std, float) ** 2
        for i in range(k):
            # reference 1: the normalised density π_θ^(1−α) π_g^α by quadrature (float64)
            lo = min(mt[i] - 12 * st[i], mg[i] - 12 * sg[i])
            hi = max(mt[i] + 12 * st[i], mg[i] + 12 * sg[i])
            x = np.linspace(lo, hi, 40_001)
            logd = (1 - al) * sps.norm.logpdf(x, mt[i], st[i]) + al * sps.norm.logpdf(x, mg[i], sg[i])
            w = np.exp(logd - logd.max())
            w /= np.trapezoid(w, x)
            m_ref = np.trapezoid(w * x, x)
            v_ref = np.trapezoid(w * (x - m_ref) ** 2, x)

            # reference 2: maximise beta E_pi[log pi_g] - KL(pi || pi_t) over Gaussians pi = N(m, s^2)
            def neg(z, i=i):
                m, s = z[0], np.exp(z[1])
                e_log_g = -((s**2 + (m - mg[i]) ** 2) / (2 * sg[i] ** 2)) - np.log(sg[i])
                kl = np.log(st[i] / s) + (s**2 + (m - mt[i]) ** 2) / (2 * st[i] ** 2) - 0.5
                return -(beta * e_log_g - kl)

            opt = optimize.minimize(neg, [mt[i], np.log(st[i])], method="BFGS", options={"gtol": 1e-12})
            km, kv = opt.x[0], np.exp(2 * opt.x[1])
            scale = 1 + abs(m_ref)
            worst["poe mean"] = max(worst["poe mean"], abs(pm[i] - m_ref) / scale)
            worst["poe var"] = max(worst["poe var"], abs(pv[i] - v_ref) / v_ref)
            worst["kl_reg mean"] = max(worst["kl_reg mean"], abs(qm[i] - km) / (1 + abs(km)))
            worst["kl_reg var"] = max(worst["kl_reg var"], abs(qv[i] - kv) / kv)
            worst["var ratio"] = max(worst["var ratio"], abs(qv[i] / pv[i] - (1 - al)))
    ok = all(v < 1e-4 for v in worst.values())
    return Verdict("float32 kernels vs float64 references (40,001-point quadrature; BFGS over (m, log s))",
                   "worst relative error: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()),
                   "reproduced" if ok else "not reproduced",
                   f"the closed forms (no episodes): {k} random 1-D (actor, prior) pairs at each α ∈ "
                   f"{{{', '.join(f'{a:g}' for a in alphas)}}} (the grid's poe α and the study's five), β = α/(1−α)")


# ---------------------------------------------------------------- claim 2
def _ratios(ctx: Evidence, rows: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, rule, param, seed): the seed's goal return / frozen's mean in the cell."""
    sm = _seeds_of(ctx, rows)
    frozen = ctx.rows[ctx.rows.rule == "frozen"].set_index(stats.CELL)["mean"]
    frozen = frozen[~frozen.index.duplicated()]
    base = frozen.reindex(pd.MultiIndex.from_frame(sm[stats.CELL])).to_numpy()
    sm = sm.assign(ratio=sm["return_goal"].to_numpy(float) / base)
    return sm[np.isfinite(base) & (base > 0)]


def _curve_point(r: pd.DataFrame, reps: int = 1000) -> tuple[float, float, float, int]:
    """Median over cells of the cell's mean ratio, with a 95% stratified bootstrap interval (seeds within
    cells). The median: a cell where frozen earns almost nothing (a target it overshoots) has a ratio in the
    tens and would decide a mean alone."""
    strata = [g["ratio"].to_numpy(float) for _, g in r.groupby(stats.CELL, sort=False, dropna=False)]
    if not strata:
        return np.nan, np.nan, np.nan, 0
    p, lo, hi = stats.stratified_bootstrap(strata, lambda ss: np.median([s.mean() for s in ss]), reps=reps, seed=0)
    return p, lo, hi, len(strata)


def _claim2_population(ctx: Evidence) -> pd.DataFrame:
    return _select(ctx, actors=_medium, priors={"degraded", "random"}, rules={"poe", "additive", "prior_only"})


def degradation_curve(ctx: Evidence) -> pd.DataFrame:
    """Claim 2's matched-α curve: per prior quality (degraded, random), rule and α, the median over cells of
    J/J_frozen with its 95% stratified bootstrap interval (and ``poe`` at the KL-budget selector's α, ``param``
    NaN). Medium actors, no shift, mean executed."""
    rows = _claim2_population(ctx)
    if rows.empty:
        return pd.DataFrame()
    ratios = _ratios(ctx, rows)
    out = []
    for (q, rule), g in ratios.groupby(["prior", "rule"], sort=False):
        for p, gp in g.groupby("param", sort=True):
            m, lo, hi, n = _curve_point(gp)
            out.append({"prior": q, "rule": rule, "alpha": p, "ratio": m, "low": lo, "high": hi, "cells": n})
    sel = ctx.cells[ctx.cells.rule.eq("poe") & ctx.cells.prior.isin(set(rows.prior)) & ctx.cells["shift"].eq("none")]
    sel = sel.merge(rows[stats.CELL].drop_duplicates(), on=stats.CELL)
    if len(sel):
        pick = ratios.merge(sel[[*stats.CELL, "selector_param"]], on=stats.CELL)
        pick = pick[(pick.rule == "poe") & np.isclose(pick["param"], pick["selector_param"])]
        for q, g in pick.groupby("prior", sort=False):
            m, lo, hi, n = _curve_point(g)
            out.append({"prior": q, "rule": "poe (selector α)", "alpha": np.nan, "ratio": m, "low": lo, "high": hi,
                        "cells": n})
    return pd.DataFrame(out)


@register_claim(2, "under degraded or random priors PoE stays anchored to the frozen actor, while additive and "
                   "prior-only collapse",
                f"per prior quality in {{degraded, random}}: PoE is anchored if its median J/J_frozen over cells is ≥ "
                f"{ANCHORED} at every α ≤ {DECISION_ALPHA} of the grid and at the KL-budget selector's α; additive "
                f"collapses if its ratio is ≤ {COLLAPSE} at some α of that set, prior-only if its ratio is ≤ "
                f"{COLLAPSE}. reproduced: all three parts hold under both qualities; partly: some part holds under "
                "some quality; not reproduced: none does (α = 0.9 is shown, not decided on)")
def _anchored(ctx: Evidence) -> Verdict:
    rows = _claim2_population(ctx)
    test = "median over cells of J/J_frozen, 95% stratified bootstrap (seeds within cells)"
    if rows.empty or "poe" not in set(rows.rule):
        return _missing(test, "poe under a degraded or random prior for a medium actor, mean executed, no shift")
    curve = degradation_curve(ctx)
    parts, verdicts = [], []
    for q, c in curve.groupby("prior", sort=False):
        dec = c[(c["alpha"] <= DECISION_ALPHA + 1e-9) | c["alpha"].isna()]
        poe = dec[dec.rule.isin(["poe", "poe (selector α)"])]
        add = dec[dec.rule == "additive"]
        po = c[c.rule == "prior_only"]
        anchored = len(poe) > 0 and bool((poe["ratio"] >= ANCHORED).all())
        add_c = bool((add["ratio"] <= COLLAPSE).any()) if len(add) else None
        po_c = bool((po["ratio"] <= COLLAPSE).all()) if len(po) else None
        verdicts.append((anchored, add_c, po_c))

        def fmt(g):
            return "/".join(f"{r:.2f}" for r in g["ratio"])

        sel = poe[poe.rule == "poe (selector α)"]
        text = (f"{q}: poe {fmt(c[c.rule == 'poe'])} at α {'/'.join(f'{a:g}' for a in c[c.rule == 'poe']['alpha'])}"
                + (f", at the selector's α {sel['ratio'].iloc[0]:.2f} [{sel['low'].iloc[0]:.2f}, "
                   f"{sel['high'].iloc[0]:.2f}]" if len(sel) else "")
                + (f" (lowest in the set {poe['ratio'].min():.2f} [{poe.loc[poe['ratio'].idxmin(), 'low']:.2f}, "
                   f"{poe.loc[poe['ratio'].idxmin(), 'high']:.2f}])" if len(poe) else "")
                + (f"; additive {fmt(c[c.rule == 'additive'])}" if (c.rule == "additive").any() else "")
                + (f"; prior_only {po['ratio'].iloc[0]:.2f}" if len(po) else "")
                + f" → poe {'anchored' if anchored else 'NOT anchored'}"
                + ("" if add_c is None else f", additive {'collapses' if add_c else 'does not collapse'}")
                + ("" if po_c is None else f", prior_only {'collapses' if po_c else 'does not collapse'}"))
        parts.append(text)
    full = [a and ad is True and p is True for a, ad, p in verdicts]
    if verdicts and all(full) and len(verdicts) == 2:
        verdict = "reproduced"
    elif any(a or ad is True or p is True for a, ad, p in verdicts):
        verdict = "partly"
    else:
        verdict = "not reproduced"
    note = "" if len(verdicts) == 2 else "only one of degraded/random in the run"
    return Verdict(test, " | ".join(parts), verdict, *_pop(rows, ctx, note))


# ---------------------------------------------------------------- claims 3 and 4
def _main_cells(ctx: Evidence, actors) -> tuple[pd.DataFrame, pd.DataFrame]:
    """poe rows and poe's operating points for ``actors`` with the trained prior, no shift, mean executed."""
    rows = _select(ctx, actors=actors, priors={"trained"}, rules={"poe"})
    cells = ctx.cells[ctx.cells.rule.eq("poe")].merge(rows[stats.CELL].drop_duplicates(), on=stats.CELL)
    return rows, cells


@register_claim(3, "a KL-budget selector recovers a near-oracle α in many cells",
                f"among cells where the cross-fitted oracle α (chosen on half the seeds, evaluated on the other) beats "
                f"frozen significantly (permutation test, Holm over the claim's cells), a choice is near-oracle when its "
                f"regret is ≤ {NEAR_ORACLE:.0%} of the oracle's mean. reproduced: the selector is near-oracle in ≥ half of "
                f"them and more often than never steering (α = 0); partly: ≥ half but not more than never steering, or "
                f"≥ a quarter; not reproduced: fewer; premise not met: no such cell. Fixed α = {FIXED_ALPHA:g} beside")
def _selector(ctx: Evidence) -> Verdict:
    rows, cells = _main_cells(ctx, _medium)
    test = f"regret of the KL-budget selector ({ctx.kl_budget:g} nats/step), never steering and α = {FIXED_ALPHA:g}"
    cells = cells.merge(rows.groupby(stats.CELL)["param"].nunique().rename("n_alpha").reset_index(), on=stats.CELL)
    cells = cells[cells["n_alpha"] > 1]
    if cells.empty:
        return _missing(test, "poe at two or more α for a medium actor with the trained prior, mean executed")
    p = stats.holm(cells["oracle_p"].fillna(1.0).to_numpy())
    eligible = cells[(p < ctx.level) & (cells["oracle_diff"] > 0)]
    pop = _pop(rows, ctx, "oracle cross-fitted on alternate seeds")
    if eligible.empty:
        return Verdict(test, f"the cross-fitted oracle beats frozen significantly in 0 of {len(cells)} cells; nothing "
                       "to recover", "premise not met", *pop)
    rs = rows.set_index(stats.ROW)["mean"]
    fixed = min(set(rows["param"]), key=lambda a: abs(a - FIXED_ALPHA))
    near = {"selector": 0, "never steer": 0, f"α = {fixed:g}": 0}
    for _, c in eligible.iterrows():
        cell = tuple(c[k] for k in stats.CELL)
        om = c["oracle_mean"]
        choices = {"selector": c["selector_mean"], "never steer": c["oracle_frozen_mean"],
                   f"α = {fixed:g}": rs.get((*cell, "poe", fixed), np.nan)}
        for k, v in choices.items():
            near[k] += bool(om - v <= NEAR_ORACLE * abs(om))
    n = len(eligible)
    names = _cell_names([tuple(r[k] for k in stats.CELL) for _, r in cells.iterrows()])  # unambiguous in the claim
    lo, hi = sps.binomtest(near["selector"], n).proportion_ci(0.95)
    frac = near["selector"] / n
    if frac >= 0.5 and near["selector"] > near["never steer"]:
        verdict = "reproduced"
    elif frac >= 0.25:
        verdict = "partly"
    else:
        verdict = "not reproduced"
    effect = (f"{n} of {len(cells)} cells where the oracle beats frozen ("
              + ", ".join(names[tuple(r[k] for k in stats.CELL)] for _, r in eligible.iterrows())
              + "); near-oracle: "
              + ", ".join(f"{k} {v} of {n}" for k, v in near.items())
              + f" (selector {frac:.0%}, 95% CI {lo:.0%}–{hi:.0%}); mean regret of the selector "
              f"{(eligible['oracle_mean'] - eligible['selector_mean']).mean():.1f}")
    return Verdict(test, effect, verdict, *pop)


@register_claim(4, "a HELP / FROZEN / HURT split over the 12 (env, goal) cells of the medium actors "
                   f"(study: {'/'.join(map(str, STUDY_SPLIT))})",
                "labelling rule (stated before looking), per (env, goal) cell of poe with the trained prior: HELP if some α "
                "is significantly better than frozen, else HURT if some α is significantly worse (paired permutation "
                "tests, Holm over all the claim's cell × α tests, survival guard), else FROZEN if every α's 95% interval "
                "lies within ±10% of frozen's return, else UNDERPOWERED. reproduced: HELP, FROZEN and HURT all occur; "
                "partly: two of them; not reproduced: one; underpowered: most cells UNDERPOWERED. Beside it, the "
                "same at the KL-budget selector's α (Holm over the claim's cells)")
def _split(ctx: Evidence) -> Verdict:
    rows, cells = _main_cells(ctx, _medium)
    test = "paired sign-flip permutation tests vs frozen over seeds, Holm within the claim"
    if rows.empty or rows["p_perm"].isna().all():
        return _missing(test, "poe with the trained prior for a medium actor, mean executed, no shift")
    r = rows.copy()
    r["p_claim"] = np.nan
    ok = r["p_perm"].notna()
    r.loc[ok, "p_claim"] = stats.holm(r.loc[ok, "p_perm"].to_numpy())
    r["claim_label"] = _labels(r, "p_claim", ctx.level)
    per_cell = {}
    for key, g in r.groupby(stats.CELL, sort=False):
        labs = set(g["claim_label"])
        per_cell[key] = next((k for k in ("HELP", "HURT", "FALL") if k in labs),
                             "FROZEN" if labs == {"FROZEN"} else "UNDERPOWERED")
    sel_rows = r.merge(cells[[*stats.CELL, "selector_param"]], on=stats.CELL)
    sel_rows = sel_rows[np.isclose(sel_rows["param"], sel_rows["selector_param"])].copy()
    sel_rows["p_sel"] = stats.holm(sel_rows["p_perm"].fillna(1.0).to_numpy()) if len(sel_rows) else []
    sel = _labels(sel_rows, "p_sel", ctx.level)
    counts = pd.Series(list(per_cell.values())).value_counts()
    n = len(per_cell)
    seen = sum(counts.get(k, 0) > 0 for k in ("HELP", "FROZEN", "HURT"))
    why = _unreachable(int(ok.sum()), int(r.loc[ok, "n_pairs"].min()), ctx.level)
    if why or counts.get("UNDERPOWERED", 0) > n / 2:
        verdict = "underpowered"
    else:
        verdict = "reproduced" if seen == 3 else ("partly" if seen == 2 else "not reproduced")
    sc = pd.Series(sel).value_counts()
    order = ("HELP", "FROZEN", "HURT", "UNDERPOWERED", "FALL")
    names = _cell_names(per_cell)
    effect = (f"any α (Holm over {int(ok.sum())} tests): " + ", ".join(f"{k} {int(counts.get(k, 0))}" for k in order)
              + f" of {n} cells (study: HELP {STUDY_SPLIT[0]}, FROZEN {STUDY_SPLIT[1]}, HURT {STUDY_SPLIT[2]} of 12); "
              + f"selector's α (Holm over {len(sel)}): " + ", ".join(f"{k} {int(sc.get(k, 0))}" for k in order)
              + "; per cell: " + ", ".join(f"{names[k]} {v}" for k, v in per_cell.items()) + (f" ({why})" if why else ""))
    return Verdict(test, effect, verdict, *_pop(rows, ctx))


def _cell_names(keys) -> dict:
    """Short, unambiguous names of cells keyed by ``stats.CELL`` (grid, env, actor, goal, prior, shift):
    ``env/goal`` where that names one cell, ``actor/goal`` where one env has several actors (a checkpoint set),
    ``grid/goal`` where one actor runs in several grids (a set of priors)."""
    keys = list(keys)
    for fmt in (lambda k: f"{k[1]}/{k[3]}", lambda k: f"{k[2]}/{k[3]}", lambda k: f"{k[0]}/{k[3]}"):
        names = {k: fmt(k) for k in keys}
        if len(set(names.values())) == len(keys):
            return names
    return {k: "/".join(map(str, k)) for k in keys}


# ---------------------------------------------------------------- claim 5
@register_claim(5, "medium-expert frozen actors are hurt by composition in every harder cell, at every tested α",
                "per (cell, α) of poe for the medium-expert actors with the trained prior: paired permutation test vs "
                "frozen, Holm within the claim. reproduced: every (cell, α) is HURT; partly: none is HELP and at least "
                "half are HURT; underpowered: none is HELP and most are UNDERPOWERED; not reproduced: otherwise")
def _medium_expert(ctx: Evidence) -> Verdict:
    rows = _select(ctx, actors=_expert, priors={"trained"}, rules={"poe"})
    test = "paired sign-flip permutation tests vs frozen over seeds, Holm within the claim"
    if rows.empty or rows["p_perm"].isna().all():
        return _missing(test, "poe with the trained prior for a medium-expert actor, mean executed, no shift")
    r = rows[rows["p_perm"].notna()].copy()
    r["p_claim"] = stats.holm(r["p_perm"].to_numpy())
    labs = pd.Series(_labels(r, "p_claim", ctx.level), index=r.index)
    n = len(r)
    c = labs.value_counts()
    helped = int(c.get("HELP", 0))
    why = _unreachable(n, int(r["n_pairs"].min()), ctx.level)
    if why:
        verdict = "underpowered"
    elif c.get("HURT", 0) == n:
        verdict = "reproduced"
    elif not helped and c.get("HURT", 0) >= n / 2:
        verdict = "partly"
    elif not helped and c.get("UNDERPOWERED", 0) > n / 2:
        verdict = "underpowered"
    else:
        verdict = "not reproduced"
    score = ""
    if "normalized_score" in ctx.df:
        fz = stats.distinct(ctx.df)
        fz = fz[(fz.rule == "frozen") & fz["shift"].eq("none") & ~fz["sample"].astype(bool)]
        me = fz[fz["actor"].map(_expert)].groupby("env")["normalized_score"].mean()
        md = fz[fz["actor"].map(_medium)].groupby("env")["normalized_score"].mean()
        score = "; frozen's normalised score in this run, medium-expert vs medium: " + ", ".join(
            f"{e} {me[e]:.1f} vs {md.get(e, np.nan):.1f}" for e in me.index)
    cards = [f"{name}{_card_score(ctx, name)}" + (f", {a['expert_level']}" if a.get("expert_level") else "")
             for name, a in sorted(ctx.actors.items()) if _expert(name) and isinstance(a, dict)]
    if cards:
        score += "; medium-expert actors, card score mean [95% CI]: " + ", ".join(cards)
    worst = r.assign(rel=r["diff"] / r["frozen_mean"].abs())
    effect = (", ".join(f"{k} {int(c.get(k, 0))}" for k in ("HURT", "UNDERPOWERED", "FROZEN", "HELP", "FALL"))
              + f" of {n} (cell, α); mean below frozen in {int((r['diff'] < 0).sum())} of {n}; change relative to "
              f"frozen: median {worst['rel'].median():+.0%}, quartiles {worst['rel'].quantile(0.25):+.0%} to "
              f"{worst['rel'].quantile(0.75):+.0%}" + score + (f" ({why})" if why else ""))
    return Verdict(test, effect, verdict, *_pop(rows, ctx))


# ---------------------------------------------------------------- claim 6
@register_claim(6, "AntMaze with a behaviour-cloned frozen actor: zero success under every rule",
                f"premise: the BC actor itself fails (frozen's success rate ≤ {PREMISE_SUCCESS:.0%}); a competent actor "
                "gives 'premise not met', with its rate. Where the premise holds: reproduced if no rule succeeds; "
                "not reproduced if some rule raises success significantly (Fisher's exact test vs frozen, Holm over "
                "the claim's rows); partly: successes that are not significant")
def _antmaze(ctx: Evidence) -> Verdict:
    test = "success per episode, per (env, prior, rule, α): Fisher's exact test vs frozen, Holm within the claim"
    if "success" not in ctx.df:
        return _missing(test, "an env whose episodes end at the goal (AntMaze)")
    d = stats.distinct(ctx.df)
    d = d[d["success"].notna()]
    if d.empty:
        return _missing(test, "an env whose episodes end at the goal (AntMaze)")
    succ = d.assign(s=d["success"].astype(float))
    rates, tests = {}, []
    for (env, actor), e in succ.groupby(["env", "actor"], sort=False):
        frozen = e[e.rule == "frozen"]["s"]
        if frozen.empty:
            continue
        ci = sps.binomtest(int(frozen.sum()), len(frozen)).proportion_ci(method="wilson")
        rates[(env, actor)] = (frozen.mean(), len(frozen), ci.low, ci.high)
        for (prior, rule, param), g in e[e.rule != "frozen"].groupby(["prior", "rule", "param"], sort=False):
            table = [[g["s"].sum(), len(g) - g["s"].sum()], [frozen.sum(), len(frozen) - frozen.sum()]]
            tests.append((env, actor, prior, rule, param, g["s"].mean(), sps.fisher_exact(table).pvalue))
    if not rates:
        return _missing(test, "frozen on an env whose episodes end at the goal")
    pop = _pop(ctx.rows[ctx.rows.env.isin({k[0] for k in rates})], ctx)
    rate_text = "; ".join(f"{env} {actor}: frozen succeeds {r:.0%} of {n} [95% CI {lo:.0%}, {hi:.0%}]"
                          + _card_score(ctx, actor) for (env, actor), (r, n, lo, hi) in rates.items())
    met = {k for k, (r, *_) in rates.items() if r <= PREMISE_SUCCESS}
    if not met:
        return Verdict(test, rate_text + " (the study's BC actor succeeded 0 times)", "premise not met", *pop)
    mine = [t for t in tests if (t[0], t[1]) in met]
    p = stats.holm(np.array([t[-1] for t in mine])) if mine else np.array([])
    raised = [t for t, q in zip(mine, p) if q < ctx.level and t[5] > rates[(t[0], t[1])][0]]
    any_success = any(t[5] > 0 for t in mine)
    verdict = "not reproduced" if raised else ("partly" if any_success else "reproduced")
    effect = rate_text + f"; rows with any success {sum(t[5] > 0 for t in mine)} of {len(mine)}; raised "
    effect += f"significantly in {len(raised)}" + (" (" + ", ".join(f"{t[3]}({t[4]:g}) {t[5]:.0%}" for t in raised)
                                                    + ")" if raised else "")
    return Verdict(test, effect, verdict, *pop)


# ---------------------------------------------------------------- claim 7
@register_claim(7, "the performance-difference bound with δπ holds: the observed |ΔJ| never exceeds it",
                "per (cell, rule, α): observed |ΔJ_γ| vs 2 R_max δπ_upper / (1−γ)². vacuous: the bound is ≥ "
                "R_max/(1−γ) (the largest possible |J_γ|) in every row, so it cannot fail; reproduced: it holds in "
                "every row where it could fail; not reproduced otherwise")
def _bound(ctx: Evidence) -> Verdict:
    test = "observed |ΔJ_γ| against the bound, every (cell, rule, α)"
    if "delta_pi_upper" not in ctx.df:
        return _missing(test, "episodes recorded with delta_pi_upper")
    d = stats.deviation(ctx.df)
    if d.empty:
        return _missing(test, "frozen and another rule in a cell")
    live = d[~d["vacuous"]]
    pop = (f"{len(d)} (cell, rule, α) rows of every grid; R_max per cell from the episodes",
           frozenset(map(str, d["grid"])))
    base = (f"bound ≥ R_max/(1−γ) in {int(d['vacuous'].sum())} of {len(d)} rows; δπ_upper median "
            f"{d['delta_pi_upper'].median():.3g} (the bound can fail only below (1−γ)/2 = 0.005)")
    if live.empty:
        return Verdict(test, base, "vacuous", *pop)
    ok = live["observed"] <= live["bound"] + 1e-9
    return Verdict(test, base + f"; where it could fail, it held in {int(ok.sum())} of {len(live)}",
                   "reproduced" if ok.all() else "not reproduced", *pop)


# ---------------------------------------------------------------- claim 8
@register_claim(8, "support violation: PoE stays below the frozen actor's own violation rate, while critic-greedy "
                   "violates support almost everywhere",
                "sampled execution (frozen's own rate is 0 by construction when its mean is executed), trained prior, "
                "no shift; the per-episode rate of actions with actor density < 0.01. PoE part: no poe α or adaptive ε "
                "has a rate significantly above frozen's (paired permutation tests, Holm within the claim); critic "
                f"part: critic_greedy's mean rate ≥ {ALMOST_EVERYWHERE:.0%} (critic_greedy is a local ascent on Q from "
                "μ_θ, so 'everywhere' is not expected of it). reproduced: both; partly: one; not reproduced: neither; "
                "underpowered: too few seeds for any test to be significant. Actors whose own mean is outside the threshold (frozen's rate > 0.5) are left out and named")
def _support(ctx: Evidence) -> Verdict:
    test = "paired sign-flip permutation tests of the per-seed rate vs frozen, Holm within the claim"
    d = stats.distinct(ctx.df)
    if "support_violation" not in d:
        return _missing(test, "episodes recorded with support_violation")
    d = d[d["sample"].astype(bool) & d["shift"].eq("none") & d["prior"].isin(["trained", "any"])]
    if d.empty or "poe" not in set(d.rule) or "frozen" not in set(d.rule):
        return _missing(test, "a grid with sample = true, frozen and poe, the trained prior")
    own = d[d.rule == "frozen"].groupby(["env", "actor"])["support_violation"].mean()
    blind = own[own > 0.5]
    if len(blind):
        d = d[~pd.MultiIndex.from_frame(d[["env", "actor"]]).isin(blind.index)]
    d = d.assign(prior="trained")
    rows, _ = stats.row_stats(d, value="support_violation", level=ctx.level)
    steer = rows[rows.rule.isin(["poe", "poe_adaptive"]) & rows["p_perm"].notna()].copy()
    if steer.empty:
        return _missing(test, "poe with an actor the threshold can separate, sampled")
    steer["p_claim"] = stats.holm(steer["p_perm"].to_numpy())
    above = steer[(steer["p_claim"] < ctx.level) & (steer["diff"] > 0)]
    reachable = len(steer) * stats.min_p(int(steer["n_pairs"].min())) < ctx.level
    if above.empty and not reachable:  # no row could have been significant: silence is not evidence
        return Verdict(test, f"{len(steer)} tests with {int(steer['n_pairs'].min())} seeds: the smallest attainable "
                       f"Holm-adjusted p is {len(steer) * stats.min_p(int(steer['n_pairs'].min())):.3g} ≥ {ctx.level}",
                       "underpowered", *_pop(ctx.rows[ctx.rows["sample"]], ctx))
    poe_ok = above.empty
    parts = []
    for env, g in rows.groupby("env", sort=False):
        fz = g[g.rule == "frozen"]["mean"]
        txt = f"{env}: frozen {fz.iloc[0]:.4f}" if len(fz) else f"{env}:"
        for rule in ("poe", "poe_adaptive", "kl_reg", "critic_prior", "iql_guided", "critic_greedy"):
            gr = g[g.rule == rule]
            if len(gr):
                txt += f"; {rule} " + "/".join(f"{m:.4f}" for m in gr["mean"]) + (
                    f" ({'α' if rule in ('poe', 'critic_prior') else 'β' if rule == 'kl_reg' else 'ε' if rule == 'poe_adaptive' else 'η'} "
                    + "/".join(f"{p:g}" for p in gr["param"]) + ")" if rule != "critic_greedy" else "")
        parts.append(txt)
    cg = d[d.rule == "critic_greedy"]["support_violation"]
    ok = [poe_ok]
    if len(cg):
        ok.append(cg.mean() >= ALMOST_EVERYWHERE)
        parts.append(f"critic_greedy mean {_ci(cg.to_numpy())}")
    parts.insert(0, f"poe/adaptive significantly above frozen in {len(above)} of {len(steer)} rows"
                 + (" (" + ", ".join(f"{r.env} {r.rule}({r.param:g})" for r in above.itertuples()) + ")"
                    if len(above) else ""))
    if len(blind):
        parts.append("left out (frozen's own rate > 0.5): " + ", ".join(f"{a} {r:.2f}" for (_, a), r in blind.items()))
    verdict = "reproduced" if len(ok) == 2 and all(ok) else ("partly" if any(ok) else "not reproduced")
    pop = _pop(ctx.rows[ctx.rows["sample"] & ctx.rows["shift"].eq("none") & ctx.rows["env"].isin(set(d.env))
                        & ctx.rows["prior"].isin(["trained", "any"])], ctx)
    return Verdict(test, "; ".join(parts), verdict, *pop)


# ---------------------------------------------------------------- claim 9
def _shift_population(ctx: Evidence) -> pd.DataFrame:
    r = _select(ctx, priors={"trained"}, shift=None, dedupe=False)
    grids = r.groupby("grid")["shift"].agg(lambda s: "none" in set(s) and len(set(s)) > 1)
    return r[r["grid"].isin(grids[grids].index)]


def shift_ratios(ctx: Evidence, reps: int = 1000) -> pd.DataFrame:
    """Claim 9's per-policy return ratio J_shift / J_none (mean over seeds of each, same seeds) with a 95%
    bootstrap interval over seeds, per (grid, goal, shift, rule, α)."""
    rows = _shift_population(ctx)
    if rows.empty:
        return pd.DataFrame()
    sm = _seeds_of(ctx, rows)
    rng = np.random.default_rng(0)
    out = []
    base_cols = ["grid", "env", "actor", "goal", "prior", "rule", "param"]
    for key, g in sm.groupby(base_cols, sort=False, dropna=False):
        none = g[g["shift"] == "none"].set_index("seed")["return_goal"]
        for s, gs in g[g["shift"] != "none"].groupby("shift", sort=False):
            pair = pd.DataFrame({"x": gs.set_index("seed")["return_goal"], "n": none}).dropna()
            if len(pair) < 2 or pair["n"].mean() <= 0:
                continue
            x, n = pair["x"].to_numpy(), pair["n"].to_numpy()
            idx = rng.integers(0, len(x), (reps, len(x)))
            boot = x[idx].mean(1) / n[idx].mean(1)
            out.append({**dict(zip(base_cols, key)), "shift": s, "ratio": x.mean() / n.mean(),
                        "low": float(np.quantile(boot, 0.025)), "high": float(np.quantile(boot, 0.975)),
                        "seeds": len(x)})
    return pd.DataFrame(out)


@register_claim(9, "the ordering of rules is stable under the deployment shifts",
                "for every pair of distinct policies (rule, α) in a cell: paired permutation test of their difference "
                "without shift and under each shift, Holm within the claim; a reversal is a pair significant both "
                "without and with a shift, with opposite signs. reproduced: no reversal; partly: reversals in at most a "
                "quarter of the pairs significant without shift; not reproduced: more; vacuous: no pair differs "
                "significantly without shift. Per-policy ratios J_shift/J_none with 95% intervals in the report")
def _ordering(ctx: Evidence) -> Verdict:
    rows = _shift_population(ctx)
    test = "pairwise paired permutation tests, Holm within the claim; reversals of significant orderings"
    if rows.empty:
        return _missing(test, "a grid with 'none' and at least one shift, the trained prior")
    sm = _seeds_of(ctx, rows)
    sm = sm.assign(policy=sm["rule"] + "(" + sm["param"].map(lambda p: f"{p:g}") + ")")
    tests = []
    for key, g in sm.groupby(["grid", "env", "actor", "goal", "shift"], sort=False):
        wide = g.pivot_table(index="seed", columns="policy", values="return_goal", aggfunc="mean")
        pols = list(wide.columns)
        for i in range(len(pols)):
            for j in range(i + 1, len(pols)):
                d = (wide[pols[i]] - wide[pols[j]]).dropna().to_numpy()
                tests.append((*key[:4], key[4], pols[i], pols[j], float(d.mean()) if len(d) else np.nan,
                              stats.sign_flip_p(d)))
    t = pd.DataFrame(tests, columns=["grid", "env", "actor", "goal", "shift", "a", "b", "diff", "p"]).dropna()
    if t.empty:
        return _missing(test, "two or more policies per cell under 'none' and a shift")
    t["p_holm"] = stats.holm(t["p"].to_numpy())
    t["sig"] = t["p_holm"] < ctx.level
    base = t[t["shift"] == "none"].set_index(["grid", "env", "actor", "goal", "a", "b"])
    shifted = t[t["shift"] != "none"]
    sig_none = base[base["sig"]]
    reversals = []
    for _, r in shifted.iterrows():
        k = (r.grid, r.env, r.actor, r.goal, r.a, r.b)
        if k in sig_none.index and r.sig and np.sign(r["diff"]) != np.sign(sig_none.loc[k, "diff"]):
            reversals.append(f"{r.env} {r['shift']}: {r.a} vs {r.b}")
    ratios = shift_ratios(ctx)
    rtxt = ""
    if len(ratios):
        rtxt = " | J_shift/J_none: " + " | ".join(
            f"{env} {s}: " + ", ".join(f"{r.rule}({r.param:g}) {r.ratio:.2f}" for r in g.itertuples())
            for (env, s), g in ratios.groupby(["env", "shift"], sort=False))
    n_sig = len(sig_none)
    pairs_shift = int(shifted.merge(sig_none.reset_index()[["grid", "env", "actor", "goal", "a", "b"]],
                                    on=["grid", "env", "actor", "goal", "a", "b"]).shape[0])
    effect = (f"{n_sig} of {len(base)} pairs differ significantly without shift; {len(reversals)} of {pairs_shift} "
              f"(pair, shift) comparisons of those reverse significantly" + (
                  f" ({'; '.join(reversals[:12])}{f'; and {len(reversals) - 12} more' if len(reversals) > 12 else ''})"
                  if reversals else "") + rtxt)
    why = _unreachable(len(t), int(sm.groupby(["grid", "shift", "policy"])["seed"].nunique().min()), ctx.level)
    if why:
        verdict, effect = "underpowered", effect + f" ({why})"
    elif n_sig == 0:
        verdict = "vacuous"
    elif not reversals:
        verdict = "reproduced"
    else:
        verdict = "partly" if len(reversals) <= 0.25 * pairs_shift else "not reproduced"
    return Verdict(test, effect, verdict, *_pop(rows, ctx, "policies that execute the same actions counted once"))
