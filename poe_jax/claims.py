"""The study's claims, tested on whatever a grid covers: one row each in the report's claims table.

Each claim is registered with :func:`register_claim` and is ``fn(ctx: Evidence) -> Verdict``. A
claim the grid cannot test says so (``"not covered by this grid"``, and what it would need); it
never guesses. The verdict rule of each claim is written beside it in the table.

=====  ====================================================================================
claim  the study's statement (and the test here)
=====  ====================================================================================
1      ``poe(α)`` and ``kl_reg(α/(1−α))`` execute the same mean; their variances differ by (1−α)
2      under degraded/random/uniform/adversarial priors PoE stays anchored to the frozen actor,
       while additive and prior-only collapse
3      the KL-budget selector recovers a near-oracle operating point in many cells
4      a HELP / FROZEN / HURT split across envs and goals (the study's: 4 / 5 / 3 of 12 cells)
5      medium-expert frozen actors are hurt by composition in every harder cell, at every α
6      AntMaze with a BC frozen actor: zero success under every rule
7      the performance-difference bound with δπ holds: observed |ΔJ| never exceeds it
8      support violation: PoE stays below the frozen actor's own rate; critic-greedy violates
       support almost everywhere
9      the ordering of rules is stable under the deployment shifts
=====  ====================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from poe_jax import stats

__all__ = ["CLAIMS", "Claim", "Evidence", "NOT_COVERED", "Verdict", "evaluate", "register_claim"]

NOT_COVERED = "not covered by this grid"
ANCHORED = 0.9  # claim 2: PoE "anchored" = its median normalised goal return >= this fraction of frozen's
NEAR_ORACLE = 0.1  # claim 3: selector regret within 10% of the oracle's mean


class Evidence(NamedTuple):
    """What the claims read: the episodes, the per-row statistics and the per-(cell, rule) operating points."""

    df: pd.DataFrame
    rows: pd.DataFrame
    cells: pd.DataFrame
    level: float
    kl_budget: float


class Verdict(NamedTuple):
    test: str  # the test used
    effect: str  # the measured effect, with its 95% interval where it has one
    verdict: str  # reproduced / partly / not reproduced / NOT_COVERED


class Claim(NamedTuple):
    id: int
    statement: str
    rule: str  # how the verdict is decided
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


def evaluate(ctx: Evidence) -> pd.DataFrame:
    """One row per registered claim: statement, test, effect, verdict and the verdict's rule."""
    out = []
    for c in sorted(CLAIMS.values()):
        v = c.fn(ctx)
        out.append({"claim": c.id, "statement": c.statement, "test": v.test, "effect": v.effect,
                    "verdict": v.verdict, "rule": c.rule})
    return pd.DataFrame(out)


def _missing(test: str, need: str) -> Verdict:
    return Verdict(test, f"needs {need}", NOT_COVERED)


def _ci(x: np.ndarray) -> str:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return f"{x.mean():.3g}" if len(x) else "–"
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return f"{x.mean():.3g} [{x.mean() - half:.3g}, {x.mean() + half:.3g}]"


@register_claim(1, "poe(α) and kl_reg(α/(1−α)) execute the same mean; covariances differ by the factor (1−α)",
                "reproduced: on 10,000 random float32 states at the grid's pairs, the means agree to 1e-5 and "
                "var_kl/var_poe = 1−α to 1e-5; not reproduced otherwise")
def _same_mean(ctx: Evidence) -> Verdict:
    import jax
    import jax.numpy as jnp

    from poe_jax import compose
    from poe_jax.gaussian import DiagGaussian

    rules = ctx.rows.groupby("rule")["param"].unique()
    if "poe" not in rules or "kl_reg" not in rules:
        return _missing("closed forms at the grid's (α, β) pairs", "both poe and kl_reg")
    alphas = [a for a in rules["poe"] if 0 < a < 1 and np.any(np.isclose(rules["kl_reg"], a / (1 - a), rtol=1e-6))]
    if not alphas:
        return _missing("closed forms at the grid's (α, β) pairs", "a kl_reg β = α/(1−α) for some poe α")
    k = jax.random.split(jax.random.key(0), 4)
    n = (10_000, 6)
    a = DiagGaussian(jax.random.normal(k[0], n), jnp.exp(0.5 * jax.random.normal(k[1], n)))
    g = DiagGaussian(jax.random.normal(k[2], n), jnp.exp(0.5 * jax.random.normal(k[3], n)))
    worst_mean, worst_var = 0.0, 0.0
    for al in alphas:
        p, q = compose.poe(a, g, al), compose.kl_reg(a, g, al / (1 - al))
        worst_mean = max(worst_mean, float(jnp.max(jnp.abs(p.mean - q.mean) / (1 + jnp.abs(p.mean)))))
        worst_var = max(worst_var, float(jnp.max(jnp.abs(q.std**2 / p.std**2 - (1 - al)))))
    ok = worst_mean < 1e-5 and worst_var < 1e-5
    return Verdict(f"closed forms at α ∈ {{{', '.join(f'{float(x):.6g}' for x in sorted(alphas))}}} (float32)",
                   f"max relative mean gap {worst_mean:.1e}; max |var ratio − (1−α)| {worst_var:.1e}",
                   "reproduced" if ok else "not reproduced")


@register_claim(2, "under degraded or random priors PoE stays anchored to the frozen actor, while additive and "
                   "prior-only collapse",
                f"reproduced: under every non-trained quality in the grid, poe's median normalised goal return "
                f"(J/J_frozen per cell, at the largest common α) is ≥ {ANCHORED} and above additive's and "
                "prior_only's; partly: some qualities; not reproduced: none")
def _anchored(ctx: Evidence) -> Verdict:
    rows = ctx.rows[~ctx.rows.prior.isin(["trained"])]
    qualities = [q for q in rows.prior.unique() if q != "any"]
    have = set(rows.rule)
    if not qualities or "poe" not in have or not ({"additive", "prior_only"} & have):
        return _missing("normalised goal return under non-trained priors", "poe with additive or prior_only under a "
                        "degraded/random/uniform/adversarial prior")
    frozen = ctx.rows[ctx.rows.rule == "frozen"].groupby([c for c in stats.CELL if c != "prior"])["mean"].mean()
    common = set(rows[rows.rule == "poe"].param) & (set(rows[rows.rule == "additive"].param) | {1.0})
    alpha = max(common) if common else None
    parts, ok_q = [], 0
    for q in qualities:
        r = rows[rows.prior == q]
        med = {}
        for rule in ("poe", "additive", "prior_only"):
            s = r[(r.rule == rule) & ((r.param == alpha) | (rule == "prior_only"))]
            if s.empty:
                continue
            base = frozen.reindex(pd.MultiIndex.from_frame(s[[c for c in stats.CELL if c != "prior"]])).to_numpy()
            ratio = s["mean"].to_numpy() / base
            med[rule] = float(np.nanmedian(ratio[np.isfinite(ratio)])) if np.isfinite(ratio).any() else np.nan
        others = [v for k, v in med.items() if k != "poe"]
        good = med.get("poe", np.nan) >= ANCHORED and all(med["poe"] > o for o in others)
        ok_q += bool(good)
        parts.append(f"{q}: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    verdict = "reproduced" if ok_q == len(qualities) else ("partly" if ok_q else "not reproduced")
    return Verdict(f"median over cells of J/J_frozen at α = {alpha:g} (prior_only: α = 1)", "; ".join(parts), verdict)


@register_claim(3, "a KL-budget selector recovers a near-oracle operating point in many cells",
                f"reproduced: in ≥ half the (cell, rule) pairs the selector's regret is ≤ {NEAR_ORACLE:.0%} of the "
                "oracle's mean; partly: in ≥ a quarter; not reproduced: fewer")
def _selector(ctx: Evidence) -> Verdict:
    c = ctx.cells[ctx.cells.rule.isin(["poe", "kl_reg", "additive"])]
    multi = ctx.rows[ctx.rows.rule.isin(["poe", "kl_reg", "additive"])].groupby([*stats.CELL, "rule"])["param"].nunique()
    c = c.merge(multi[multi > 1].rename("n").reset_index(), on=[*stats.CELL, "rule"])
    if c.empty:
        return _missing("selector regret", "a rule with two or more coefficients")
    near = (c["regret"] <= NEAR_ORACLE * np.abs(c["oracle_mean"])).to_numpy()
    frac = near.mean()
    lo, hi = sps.binomtest(int(near.sum()), len(near)).proportion_ci(0.95)
    verdict = "reproduced" if frac >= 0.5 else ("partly" if frac >= 0.25 else "not reproduced")
    return Verdict(f"selector at {ctx.kl_budget:g} nats/step vs the hindsight-best coefficient",
                   f"{near.sum()} of {len(near)} pairs near-oracle ({frac:.0%}, 95% CI {lo:.0%}–{hi:.0%})", verdict)


@register_claim(4, "a HELP / FROZEN / HURT split across environments and goals (study: 4 / 5 / 3 of 12 cells)",
                "reproduced: every one of HELP, FROZEN and HURT occurs among the (env, goal) cells at poe's oracle α; "
                "partly: two of them; not reproduced: one (counts beside the study's)")
def _split(ctx: Evidence) -> Verdict:
    c = ctx.cells[(ctx.cells.rule == "poe") & (ctx.cells.prior.isin(["trained"])) & (ctx.cells["shift"] == "none")]
    if c.empty:
        return _missing("labels of poe at its oracle α, trained prior, no shift", "poe with the trained prior")
    counts = c["oracle_label"].value_counts()
    seen = sum(counts.get(k, 0) > 0 for k in ("HELP", "FROZEN", "HURT"))
    effect = ", ".join(f"{k} {int(counts.get(k, 0))}" for k in stats.LABELS) + f" of {len(c)} cells (study: 4/5/3 of 12)"
    return Verdict("paired t-test vs frozen over seeds, Holm over the grid, survival guard", effect,
                   "reproduced" if seen == 3 else ("partly" if seen == 2 else "not reproduced"))


@register_claim(5, "medium-expert frozen actors are hurt by composition in every harder cell, at every tested α",
                "reproduced: every (cell, rule, α) of a medium-expert actor under a non-trained prior or a shift has a "
                "mean below frozen's; partly: most (≥ 75%); not reproduced: fewer")
def _medium_expert(ctx: Evidence) -> Verdict:
    r = ctx.rows[ctx.rows.actor.str.contains("medium-expert") & (ctx.rows.rule != "frozen")]
    r = r[(r.prior != "trained") | (r["shift"] != "none")]
    if r.empty or "frozen_mean" not in r:
        return _missing("medium-expert rows in harder cells", "a medium-expert actor with a non-trained prior or a shift")
    below = (r["mean"] < r["frozen_mean"]).to_numpy()
    frac = below.mean()
    hurt = int((r["label"] == "HURT").sum())
    return Verdict("mean goal return vs frozen's, per (cell, rule, α)",
                   f"{below.sum()} of {len(r)} rows below frozen ({frac:.0%}); {hurt} significantly (HURT)",
                   "reproduced" if frac == 1 else ("partly" if frac >= 0.75 else "not reproduced"))


@register_claim(6, "AntMaze with a behaviour-cloned frozen actor: zero success under every rule",
                "the premise differs when frozen succeeds (this package's BC actors follow a scripted navigator): "
                "then 'not reproduced', and the table says whether any rule changes success significantly "
                "(per env, prior quality, rule and α: Fisher's exact test vs frozen, Holm over them)")
def _antmaze(ctx: Evidence) -> Verdict:
    d = ctx.df[ctx.df.env.astype(str).str.startswith("antmaze")]
    if d.empty:
        return _missing("success rates", "an antmaze env")
    succ = d.assign(s=d["success"].astype(float))
    tests, frozen_rates = [], {}
    for (env, actor), e in succ.groupby(["env", "actor"], sort=False):
        frozen = e[e.rule == "frozen"]  # served once per prior quality: count each episode once
        frozen = frozen.drop_duplicates([c for c in ("grid", "goal", "shift", "seed", "episode") if c in frozen])["s"]
        if frozen.empty:
            continue
        frozen_rates[env] = (frozen.mean(), len(frozen))
        for (prior, rule, param), g in e[e.rule != "frozen"].groupby(["prior", "rule", "param"], sort=False):
            table = [[g["s"].sum(), len(g) - g["s"].sum()], [frozen.sum(), len(frozen) - frozen.sum()]]
            tests.append((env, prior, rule, param, g["s"].mean() - frozen.mean(), g["s"].mean(),
                          sps.fisher_exact(table).pvalue))
    if not tests:
        return _missing("success rates", "frozen and another rule on an antmaze env")
    p = stats.holm(np.array([t[-1] for t in tests]))
    parts = []
    for env, (rate, n) in frozen_rates.items():
        mine = [(t, q) for t, q in zip(tests, p) if t[0] == env]
        part = f"{env}: frozen {rate:.0%} of {n}"
        for word, sign in (("raised", 1), ("lowered", -1)):
            sig = [t for t, q in mine if q < ctx.level and np.sign(t[4]) == sign]
            by_prior = {}
            for t in sig:
                by_prior.setdefault(t[1], []).append(f"{t[2]}" + ("" if t[2] == "prior_only" else f"({t[3]:g})"))
            part += f"; {word} in {len(sig)} of {len(mine)} rows" + (
                " (" + "; ".join(f"{q}: {', '.join(dict.fromkeys(r))}" for q, r in by_prior.items()) + ")" if sig else "")
        parts.append(part)
    zero = all(r == 0 for r, _ in frozen_rates.values()) and all(t[5] == 0 for t in tests)
    return Verdict("success per episode, per (env, prior, rule, α): Fisher's exact test vs frozen, Holm",
                   " | ".join(parts), "reproduced" if zero else "not reproduced (premise differs: frozen succeeds)")


@register_claim(7, "the performance-difference bound with δπ holds: the observed |ΔJ| never exceeds it",
                "reproduced: observed |ΔJ_γ| ≤ 2 R_max δπ_upper / (1−γ)² in every (cell, rule); not reproduced otherwise")
def _bound(ctx: Evidence) -> Verdict:
    if "delta_pi_upper" not in ctx.df:
        return _missing("δπ and the bound", "episodes recorded with delta_pi_upper")
    d = stats.deviation(ctx.df, ctx.cells)
    ok = (d["observed"] <= d["bound"] + 1e-9).to_numpy()
    tight = (d["observed"] / d["bound"]).replace([np.inf], np.nan)
    return Verdict("per (cell, rule) at the oracle α", f"{ok.sum()} of {len(ok)} within the bound; observed/bound "
                   f"median {np.nanmedian(tight):.2g}, max {np.nanmax(tight):.2g}",
                   "reproduced" if ok.all() else "not reproduced")


@register_claim(8, "support violation: PoE stays below the frozen actor's own violation rate, while critic-greedy "
                   "violates support almost everywhere",
                "reproduced: poe's mean rate (ε = 0.01) ≤ frozen's (≤ 0.01 when frozen's is 0 by construction) and "
                "critic_greedy's ≥ 0.9; partly: one part holds, or only one is covered. Actors whose own mean "
                "action is 'outside' (frozen's rate > 0.5: the density threshold is below the actor's density at its "
                "mean, as for AntMaze's ±30 actions) are left out and named")
def _support(ctx: Evidence) -> Verdict:
    d = ctx.df
    if "support_violation" not in d or "poe" not in set(d.rule):
        return _missing("support violation rates", "poe (and critic_greedy)")
    own = d[d.rule == "frozen"].groupby(["env", "actor"])["support_violation"].mean()
    blind = own[own > 0.5]
    if len(blind):
        keep = ~pd.MultiIndex.from_frame(d[["env", "actor"]]).isin(blind.index)
        d = d[keep]
        if "poe" not in set(d.rule):
            return _missing("support violation rates", "poe with an actor the threshold can separate")
    rate = {r: g["support_violation"].to_numpy(float) for r, g in d.groupby("rule")}
    parts, ok = [], []
    frozen = rate.get("frozen", np.array([np.inf]))
    parts.append(f"poe {_ci(rate['poe'])}, frozen {_ci(rate.get('frozen', np.array([])))}")
    if frozen.mean() == 0:  # frozen executes its own mean (sample = false): 0 by construction, so compare with 1%
        parts[-1] += " (frozen executes its mean, so its rate is 0 by construction; poe compared with 0.01)"
        ok.append(rate["poe"].mean() <= 0.01)
    else:
        ok.append(rate["poe"].mean() <= frozen.mean())
    if "critic_greedy" in rate:
        parts.append(f"critic_greedy {_ci(rate['critic_greedy'])}")
        ok.append(rate["critic_greedy"].mean() >= 0.9)
    full = len(ok) == 2 and all(ok)
    if len(blind):
        parts.append("left out (frozen's own rate > 0.5): " + ", ".join(f"{a} {r:.2f}" for (_, a), r in blind.items()))
    return Verdict("mean per-episode rate, 95% t-interval over episodes", "; ".join(parts),
                   "reproduced" if full else ("partly" if any(ok) else "not reproduced"))


@register_claim(9, "the ordering of rules is stable under the deployment shifts",
                "reproduced: the median Kendall τ between the rules' order (oracle means) without and with each "
                "shift is ≥ 0.7; partly: ≥ 0.4; not reproduced: below")
def _ordering(ctx: Evidence) -> Verdict:
    shifts = [s for s in ctx.cells["shift"].unique() if s != "none"]
    if not shifts or "none" not in set(ctx.cells["shift"]):
        return _missing("rule order under shifts", "'none' and at least one shift")
    base_cols = [c for c in stats.CELL if c != "shift"]
    taus = []
    for key, g in ctx.cells.groupby(base_cols, dropna=False):
        ref = g[g["shift"] == "none"].set_index("rule")["oracle_mean"]
        for s in shifts:
            other = g[g["shift"] == s].set_index("rule")["oracle_mean"].reindex(ref.index)
            if len(ref) >= 3 and other.notna().all():
                taus.append(sps.kendalltau(ref.to_numpy(), other.to_numpy()).statistic)
    if not taus:
        return _missing("rule order under shifts", "three or more rules per cell")
    med = float(np.nanmedian(taus))
    return Verdict("Kendall τ of the rules' oracle means, each shift vs none", f"median τ {med:.2f} over {len(taus)} "
                   f"(cell, shift) pairs, range {np.nanmin(taus):.2f}–{np.nanmax(taus):.2f}",
                   "reproduced" if med >= 0.7 else ("partly" if med >= 0.4 else "not reproduced"))
