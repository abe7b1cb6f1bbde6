"""Statistics on a synthetic results table with planted effects, checked independently."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from poe_jax.analysis import stats

SEEDS = range(8)
EPISODES = 3
# (goal, rule, param) -> (planted shift of the goal return, kl per step)
PLANTED = {
    ("G1_speed", "poe", 0.25): (0.0, 0.1),
    ("G1_speed", "poe", 0.5): (10.0, 0.4),
    ("G1_speed", "additive", 0.5): (-10.0, 0.3),
    ("G2_balanced", "poe", 0.25): (0.0, 0.1),
    ("G2_balanced", "poe", 0.5): (0.0, 0.4),
    ("G2_balanced", "additive", 0.5): (0.0, 0.3),
}


@pytest.fixture(scope="module")
def table():
    return make_table()


def make_table():
    # Fixed seed. A true null is labelled HELP/HURT with probability <= 5% (family-wise, Holm);
    # over 300 draws the null rejection rate was 4.3% at 0.05, so the tests are calibrated.
    rng = np.random.default_rng(3)
    rows = []
    for goal in ("G1_speed", "G2_balanced"):
        base = {s: rng.normal(100, 20) for s in SEEDS}  # seed effect shared by all rules: pairing matters
        cases = [("frozen", 0.0, 0.0, 0.0)] + [(r, p, *PLANTED[(goal, r, p)]) for (g, r, p) in PLANTED if g == goal]
        for rule, param, shift, kl in cases:
            for s in SEEDS:
                for e in range(EPISODES):
                    rows.append(dict(env="hopper", actor="a", goal=goal, prior="trained", shift="none", rule=rule,
                                     param=param, seed=s, episode=e, kl_to_frozen=kl,
                                     return_goal=base[s] + shift + rng.normal(0, 2)))
    df = pd.DataFrame(rows)
    df.loc[5, "return_goal"] = np.nan  # one non-finite episode (frozen, G1, seed 1)
    return df


def _independent(df):
    """Seed means, CIs, paired t p-values and Holm, computed from first principles."""
    d = df[np.isfinite(df.return_goal)]
    sm = d.groupby(["goal", "rule", "param", "seed"]).return_goal.mean()
    out, ps = {}, {}
    for (goal, rule, param), x in sm.groupby(level=[0, 1, 2]):
        x = x.droplevel([0, 1, 2])
        n = len(x)
        se = x.std(ddof=1) / np.sqrt(n)
        t975 = sps.t.ppf(0.975, n - 1)
        rec = {"mean": x.mean(), "ci": (x.mean() - t975 * se, x.mean() + t975 * se)}
        if rule != "frozen":
            f = sm.loc[(goal, "frozen", 0.0)]
            diff = (x - f).dropna()
            t = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff)))
            rec["p"] = 2 * sps.t.sf(abs(t), len(diff) - 1)
            # the sign-flip permutation test by enumeration: every +-1 pattern of the differences
            d = diff.to_numpy()
            null = [abs(np.dot(signs, d)) / len(d) for signs in itertools.product((1.0, -1.0), repeat=len(d))]
            rec["p_perm"] = np.mean(np.asarray(null) >= abs(d.mean()) - 1e-9)
            rec["diff"] = diff.mean()
            ps.setdefault((goal, rule), []).append(((goal, rule, param), rec["p_perm"]))
        out[(goal, rule, param)] = rec
    # Holm by its definition within each family (one goal's coefficients of one rule):
    # adj_(i) = max_{j<=i} min(1, (m-j+1) p_(j)) over sorted p
    for fam in ps.values():
        fam.sort(key=lambda kv: kv[1])
        m = len(fam)
        best = 0.0
        for j, (key, p) in enumerate(fam, start=1):
            best = max(best, min(1.0, (m - j + 1) * p))
            out[key]["p_holm"] = best
    return out


def test_row_stats_match_independent_computation(table):
    rows, excluded = stats.row_stats(table)
    assert excluded == {"non_finite_episodes": 1, "episodes": len(table), "nonfinite_action_episodes": 0,
                        "nonfinite_action_rows": []}
    ref = _independent(table)
    assert len(rows) == len(ref)
    for _, r in rows.iterrows():
        want = ref[(r.goal, r.rule, r.param)]
        assert r["mean"] == pytest.approx(want["mean"], rel=1e-12)
        assert (r.ci_low, r.ci_high) == pytest.approx(want["ci"], rel=1e-12)
        if r.rule != "frozen":
            assert r.p_t == pytest.approx(want["p"], rel=1e-9)
            assert r.p_perm == pytest.approx(want["p_perm"], rel=1e-12)
            assert r.p_holm == pytest.approx(want["p_holm"], rel=1e-12)
            assert r.family_size == (2 if (r.goal, r.rule) in {("G1_speed", "poe"), ("G2_balanced", "poe")} else 1)
            assert r.n_pairs == 8 and np.isfinite(r.p_wilcoxon) and r.mde > 0
            assert r["diff_low"] < r["diff"] < r["diff_high"]


def test_planted_effects_get_their_labels(table):
    rows, _ = stats.row_stats(table)
    lab = {(r.goal, r.rule, r.param): r.label for _, r in rows.iterrows() if r.rule != "frozen"}
    assert lab[("G1_speed", "poe", 0.5)] == "HELP"
    assert lab[("G1_speed", "additive", 0.5)] == "HURT"
    assert lab[("G1_speed", "poe", 0.25)] == "FROZEN"
    assert all(lab[("G2_balanced", r, p)] == "FROZEN" for r, p in [("poe", 0.25), ("poe", 0.5), ("additive", 0.5)])


def test_oracle_and_kl_budget_operating_points(table):
    rows, _ = stats.row_stats(table)
    cells = stats.label_cells(rows, kl_budget=0.2).set_index(["goal", "rule"])
    g1 = cells.loc[("G1_speed", "poe")]
    assert g1.oracle_param == 0.5 and g1.oracle_label == "HELP"
    assert g1.selector_param == 0.25 and g1.selector_label == "FROZEN"
    means = rows.set_index(["goal", "rule", "param"])["mean"]
    assert g1.regret == pytest.approx(means[("G1_speed", "poe", 0.5)] - means[("G1_speed", "poe", 0.25)])
    assert cells.loc[("G1_speed", "additive")].oracle_label == "HURT"


def test_holm_properties():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    adj = stats.holm(p)
    np.testing.assert_allclose(adj, [0.04, 0.09, 0.09, 0.5])
    assert np.all(adj >= p) and np.all(adj <= 1)


def test_survival_guard_a_rule_that_wins_by_falling_early_is_not_help(table):
    """A planted rule with a higher goal return but episodes a third shorter is FALL, not HELP;
    the same gain at frozen's length stays HELP. labels.csv carries the lengths."""
    df = table.copy()
    df["length"] = 1000
    faller = df[(df.rule == "poe") & (df.param == 0.5) & (df.goal == "G1_speed")].copy()
    faller["rule"], faller["length"] = "falls_early", 650 + (faller["seed"] % 3) * 10
    df = pd.concat([df, faller], ignore_index=True)
    rows, _ = stats.row_stats(df)
    lab = {(r.goal, r.rule, r.param): r.label for _, r in rows.iterrows() if r.rule != "frozen"}
    assert lab[("G1_speed", "falls_early", 0.5)] == "FALL"
    assert lab[("G1_speed", "poe", 0.5)] == "HELP"
    cells = stats.label_cells(rows)
    labels = stats.labels_table(rows, cells)
    for col in ("env", "actor", "goal", "prior", "shift", "rule", "point", "param", "mean", "frozen_mean", "diff",
                "diff_low", "diff_high", "mde", "p", "p_holm", "family", "family_size", "label", "length",
                "frozen_length"):
        assert col in labels
    assert set(labels["point"]) == {"oracle (cross-fitted)", "selector"}
    assert len(labels) == 2 * len(cells)
    assert not ((labels.label == "HELP") & (labels.length < 0.9 * labels.frozen_length)).any()
    fall = labels[(labels.rule == "falls_early") & (labels.point == "oracle (cross-fitted)")].iloc[0]
    assert fall.label == "FALL" and fall.length < 0.7 * fall.frozen_length


def test_survival_guard_does_not_apply_where_ending_the_episode_is_the_goal(table):
    """AntMaze episodes end at the goal: a rule that reaches it sooner (shorter episodes, success
    recorded) is HELP, while the same rows without a success notion are FALL."""
    df = table[table.goal == "G1_speed"].copy()
    df["length"] = np.where((df.rule == "poe") & (df.param == 0.5), 400 + df["seed"] % 3, 700)
    maze = df.assign(env="antmaze-umaze", success=pd.array(df["rule"] != "frozen", dtype="boolean"))
    loco = df.assign(success=pd.array([pd.NA] * len(df), dtype="boolean"))
    label = {}
    for name, d in (("maze", maze), ("loco", loco)):
        rows, _ = stats.row_stats(d)
        label[name] = rows.set_index(["rule", "param"]).loc[("poe", 0.5), "label"]
    assert label == {"maze": "HELP", "loco": "FALL"}


def test_tracking_credits_steering_toward_the_target_not_falling_or_noise():
    """G3's own metric: a rule whose speed moves toward the target on every seed is 'closer';
    one that gets there with episodes 30% shorter is not; one with the same speed as frozen is
    not; goals without a target are left out."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(10):
        v0 = 2.3 + rng.normal(0, 0.05)
        for rule, param, dv, length in (("frozen", 0.0, 0.0, 1000), ("poe", 0.9, -0.6, 990),
                                        ("poe", 0.5, 0.0, 1000), ("additive", 0.5, -0.6, 700)):
            for goal, target in (("G3_target", 1.2), ("G1_speed", np.nan)):
                rows.append(dict(env="hopper", actor="a", goal=goal, prior="trained", shift="none", rule=rule,
                                 param=param, seed=s, episode=0, return_goal=1.0, kl_to_frozen=0.0, length=length,
                                 x_velocity=v0 + dv + rng.normal(0, 0.02), target_speed=target))
    t = stats.tracking(pd.DataFrame(rows)).set_index(["rule", "param"])
    assert set(t["goal"]) == {"G3_target"} and (t["target_speed"] == 1.2).all()
    assert t.loc[("poe", 0.9), "closer"] and t.loc[("poe", 0.9), "error"] < t.loc[("poe", 0.9), "frozen_error"]
    assert not t.loc[("poe", 0.5), "closer"]
    assert not t.loc[("additive", 0.5), "closer"] and t.loc[("additive", 0.5), "p_holm"] < 0.05  # closer, by falling
    np.testing.assert_allclose(t.loc[("frozen", 0.0), "x_velocity"], np.mean([r["x_velocity"] for r in rows
                               if r["rule"] == "frozen" and r["goal"] == "G3_target"]))
    assert stats.tracking(pd.DataFrame(rows).drop(columns="target_speed")).empty


def test_aggregates_iqm_bootstrap_and_probability_of_improvement():
    """IQM is scipy's 25% trimmed mean; the stratified bootstrap keeps each cell's size, and with one
    cell its interval agrees with scipy.stats.bootstrap's percentile interval; the probability of
    improvement is the Mann-Whitney U / (n m), averaged over cells."""
    from scipy import stats as sps

    from poe_jax.analysis import stats

    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.5, 40)
    assert stats.iqm(x) == pytest.approx(sps.trim_mean(x, 0.25))
    p, lo, hi = stats.stratified_bootstrap([x], lambda ss: np.mean(np.concatenate(ss)), reps=4000, seed=1)
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=1).confidence_interval
    assert p == pytest.approx(x.mean()) and lo == pytest.approx(ref.low, abs=0.02) and hi == pytest.approx(ref.high, abs=0.02)
    sizes = []
    stats.stratified_bootstrap([np.arange(3.0), np.arange(7.0)], lambda ss: sizes.append([len(s) for s in ss]) or 0.0,
                               reps=5)
    assert all(s == [3, 7] for s in sizes)
    a, b = rng.normal(1, 1, 12), rng.normal(0, 1, 12)
    pair = np.stack([a, b], axis=1)  # paired: the rule's and frozen's run on the same seed
    assert stats._prob_improvement([pair]) == pytest.approx(np.mean(a > b))
    assert stats._prob_improvement([pair, pair[:, ::-1]]) == pytest.approx(0.5)
    tied = np.stack([a, a], axis=1)
    assert stats._prob_improvement([tied]) == 0.5


def test_normalized_runs_and_aggregate_on_a_grid():
    """frozen's normalised score averages 1 per cell; a rule that doubles the goal return scores ~2,
    with probability of improvement 1; a cell where frozen earns nothing is left out and counted."""
    from poe_jax.analysis import stats

    rows = []
    for goal, base in (("G1_speed", 100.0), ("G3_target", 0.0)):
        for seed in range(8):
            for rule, param, mult in (("frozen", 0.0, 1.0), ("poe", 0.5, 2.0)):
                rows.append({"env": "hopper", "actor": "a", "goal": goal, "prior": "trained", "shift": "none",
                             "rule": rule, "param": param, "seed": seed, "episode": 0,
                             "return_goal": base * mult * (1 + 0.01 * seed), "kl_to_frozen": 0.1 * (rule != "frozen"),
                             "length": 1000})
    df = pd.DataFrame(rows)
    r, _ = stats.row_stats(df)
    cells = stats.label_cells(r)
    runs, dropped = stats.normalized_runs(df, cells)
    assert dropped == 1 and set(runs.goal) == {"G1_speed"}
    agg = stats.aggregate(runs, reps=200).set_index("rule")
    assert agg.loc["frozen", "mean"] == pytest.approx(1.0) and agg.loc["poe", "iqm"] == pytest.approx(2.0, rel=0.05)
    assert agg.loc["poe", "p_improve"] == pytest.approx(1.0, abs=0.1)
    prof = stats.performance_profile(runs, np.array([0.5, 1.5, 2.5]), reps=50)
    poe = prof[prof.rule == "poe"].set_index("tau")["fraction"]
    assert poe.loc[0.5] == 1.0 and poe.loc[1.5] == 1.0 and poe.loc[2.5] == 0.0


def test_claims_say_what_a_grid_does_not_cover():
    """A grid with only frozen and additive covers no claim about poe/kl_reg, antmaze or shifts, and
    says what each would need instead of guessing."""
    from poe_jax.analysis import claims

    rows = []
    for seed in range(4):
        for rule, param, mult in (("frozen", 0.0, 1.0), ("additive", 0.5, 0.8)):
            rows.append({"env": "hopper", "actor": "hopper-medium-iql", "goal": "G1_speed", "prior": "trained",
                         "shift": "none", "rule": rule, "param": param, "seed": seed, "episode": 0,
                         "return_goal": 100.0 * mult + seed, "kl_to_frozen": 0.2 * (rule != "frozen"), "length": 1000,
                         "support_violation": 0.0, "success": np.nan})
    df = pd.DataFrame(rows)
    r, _ = stats.row_stats(df)
    table = claims.evaluate(claims.Evidence(df, r, stats.label_cells(r), 0.05, 0.5)).set_index("claim")
    for c in (2, 3, 4, 5, 6, 8, 9):
        assert table.loc[c, "verdict"] == claims.NOT_COVERED and table.loc[c, "effect"].startswith("needs "), c
    assert table.loc[1, "verdict"] == "reproduced"  # the closed forms need no episodes


def test_a_nan_metric_is_never_averaged_away(table):
    """Review finding: pandas' mean skips NaN, so a row whose episodes' KL were (NaN, 0.26) showed 0.26 with
    n = 2, and a NaN support violation vanished from its rule's mean. A NaN now stays NaN ("–")."""
    t = table.copy()
    t["kl_to_frozen"] = 0.25
    t["support_violation_0.01"] = 0.0
    hit = t.index[(t["rule"] != "frozen") & np.isfinite(t["return_goal"])][0]
    t.loc[hit, ["kl_to_frozen", "support_violation_0.01"]] = np.nan
    sm, _ = stats.seed_means(t)
    who = t.loc[hit]
    mine = sm[(sm["rule"] == who["rule"]) & (sm["param"] == who["param"]) & (sm["goal"] == who["goal"])
              & (sm["seed"] == who["seed"])]
    assert len(mine) == 1 and np.isnan(mine["kl"].iloc[0])
    others = sm.drop(mine.index)
    assert np.isfinite(others["kl"]).all()
    rows, _ = stats.row_stats(t)
    r = rows[(rows["rule"] == who["rule"]) & (rows["param"] == who["param"]) & (rows["goal"] == who["goal"])]
    assert np.isnan(r["kl"].iloc[0])
    m = stats.mean_keep_nan(t, ["rule"], ["support_violation_0.01", "kl_to_frozen"])
    assert m.loc[who["rule"]].isna().all() and m.drop(who["rule"]).notna().all().all()
