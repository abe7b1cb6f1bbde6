"""The claims table on planted data: each claim's population, and every verdict it can give reached by
planting the effect that should give it (reproduced, partly, not reproduced, vacuous, premise not met,
underpowered, not covered); and a grid added to a run changes no label of the others."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from poe_jax.analysis import claims, stats
from poe_jax import compose

ALPHAS = (0.1, 0.25, 0.5, 0.75, 0.9)
GOALS = ("G1_speed", "G2_balanced", "G3_target")
ENVS = ("hopper", "halfcheetah", "walker2d", "ant")


class Run:
    """A planted run: rows as poe_jax.grid.store.read_episodes gives them (frozen served once per quality)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.rows: list[dict] = []
        self.lane = 0

    def grid(self, name, env, actor, *, effects, goals=("G1_speed",), priors=("trained",), shifts=("none",),
             seeds=20, sample=False, noise=5.0, base=1000.0, success=None, violation=None, delta_pi=0.3):
        """``effects``: {(rule, param): multiplier of frozen's return, or f(goal, prior, shift, seed) -> it}.
        ``success``: {rule: probability} (AntMaze-like rows); ``violation``: {rule: rate}."""
        base_s = {s: self.rng.normal(base, 50) for s in range(seeds)}
        common = dict(grid=name, env=env, actor=actor, episode=0, length=1000, sample=sample,
                      max_abs_goal_reward=5.0, normalized_score=50.0)
        for goal, shift, s in itertools.product(goals, shifts, range(seeds)):
            self._add(common, priors, goal, shift, s, "frozen", 0.0, base_s[s] + self.rng.normal(0, noise), 0.0,
                      success, violation, delta_pi, blind=True)
            for (rule, param), m in effects.items():
                for q in (priors if compose.RULES[rule].uses_prior else [None]):
                    mult = m(goal, q, shift, s) if callable(m) else m
                    val = base_s[s] * mult + self.rng.normal(0, noise)
                    self._add(common, priors if q is None else [q], goal, shift, s, rule, param, val,
                              float(compose.RULES[rule].equiv(param)) if np.isfinite(compose.RULES[rule].equiv(param))
                              else 1.0, success, violation, delta_pi, blind=q is None)
        return self

    def _add(self, common, priors, goal, shift, seed, rule, param, value, kl, success, violation, delta_pi, blind):
        won = None
        if success is not None:
            won = bool(self.rng.uniform() < success.get(rule, 0.0))
            value = float(won)
        sv = (violation or {}).get(rule, 0.0)
        sv = sv(seed) if callable(sv) else sv
        rec = dict(common, goal=goal, shift=shift, seed=seed, rule=rule, param=param, return_goal=value,
                   kl_to_frozen=kl, support_violation=sv + self.rng.uniform(0, 1e-4), lane=self.lane,
                   success=won, delta_pi_upper=delta_pi * (rule != "frozen"), delta_pi_lower=0.0,
                   discounted_goal=value / 10)
        if success is not None:
            rec["length"] = 300 if won else 700
        self.lane += 1
        for q in priors:
            self.rows.append({**rec, "prior": q})

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        df["success"] = df["success"].astype("boolean")
        return df


def table(df: pd.DataFrame) -> pd.DataFrame:
    rows, _ = stats.row_stats(df)
    return claims.evaluate(claims.Evidence(df, rows, stats.label_cells(rows), 0.05, 0.5)).set_index("claim")


def verdict(df, cid):
    return table(df).loc[cid]


def steer(mult_poe, mult_add=None, po=None, alphas=ALPHAS):
    """poe (and additive, prior_only) effects; each a number or f(goal, prior, shift, seed)."""
    out = {("poe", a): (mult_poe(a) if callable(mult_poe) and mult_poe.__code__.co_argcount == 1 else mult_poe)
           for a in alphas}
    if mult_add is not None:
        out |= {("additive", a): (mult_add(a) if callable(mult_add) and mult_add.__code__.co_argcount == 1
                                  else mult_add) for a in alphas}
    if po is not None:
        out[("prior_only", 1.0)] = po
    return out


# ---------------------------------------------------------------- claim 1
def test_claim1_independent_references_and_a_wrong_kernel(monkeypatch):
    df = Run().grid("g", "hopper", "hopper-medium-iql", effects=steer(1.0), seeds=4).frame()
    c = verdict(df, 1)
    assert c.verdict == "reproduced" and "quadrature" in c.test and "0.75" in c.population
    from poe_jax.kernels import rules

    real = rules.kl_reg
    monkeypatch.setattr(rules, "kl_reg", lambda a, g, b: real(a, g, 2 * b))  # the wrong β in the kernel claim 1 reads
    assert verdict(df, 1).verdict == "not reproduced"


# ---------------------------------------------------------------- claim 2
def _degradation(poe_deg, poe_rand, add=lambda a: 1 - a, po=0.1):
    quality = {"trained": lambda a: 1.0, "degraded": poe_deg, "random": poe_rand}
    eff = {("poe", a): (lambda g, q, sh, s, a=a: quality[q](a)) for a in ALPHAS}
    eff |= {("additive", a): (lambda g, q, sh, s, a=a: 1.0 if q == "trained" else add(a)) for a in ALPHAS}
    eff[("prior_only", 1.0)] = lambda g, q, sh, s: 1.0 if q == "trained" else po
    run = Run()
    for env in ENVS[:2]:
        run.grid(f"{env}-medium", env, f"{env}-medium-iql", effects=eff, goals=GOALS[:2],
                 priors=("trained", "degraded", "random"), seeds=10)
    return run.frame()


@pytest.mark.parametrize("deg, rand, expect", [
    (lambda a: 0.97, lambda a: 0.98, "reproduced"),
    (lambda a: 0.6, lambda a: 0.98, "partly"),
    (lambda a: 0.6, lambda a: 0.5, "partly"),  # additive and prior-only still collapse
    (lambda a: 0.97 if a <= 0.75 else 0.3, lambda a: 0.98 if a <= 0.75 else 0.2, "reproduced"),  # α = 0.9 not decided on
])
def test_claim2_decided_on_degraded_and_random_at_the_stated_alphas(deg, rand, expect):
    c = verdict(_degradation(deg, rand), 2)
    assert c.verdict == expect, c.effect
    assert "priors degraded, random" in c.population and "mean executed" in c.population


def test_claim2_additive_that_does_not_collapse_is_only_partly():
    assert verdict(_degradation(lambda a: 0.97, lambda a: 0.97, add=lambda a: 0.95), 2).verdict == "partly"
    # no part holds: poe drifts, additive and prior-only keep their return
    none = _degradation(lambda a: 0.6, lambda a: 0.5, add=lambda a: 0.95, po=0.9)
    assert verdict(none, 2).verdict == "not reproduced"


# ---------------------------------------------------------------- claims 3 and 4
def _twelve(labels, noise=5.0, seeds=20, kl=None):
    """The 12 medium (env, goal) cells with poe effects: 'HELP' (1.3 at α >= 0.5), 'FROZEN' (1.0), 'HURT'
    (0.7 at every α); ``labels``: 12 in env-major order."""
    eff_of = {"HELP": lambda a: 1.3 if a >= 0.5 else 1.0, "FROZEN": lambda a: 1.0, "HURT": lambda a: 0.7}
    run = Run(1)
    it = iter(labels)
    for env in ENVS:
        per_goal = {g: eff_of[next(it)] for g in GOALS}
        eff = {("poe", a): (lambda g, q, sh, s, a=a, pg=per_goal: pg[g](a)) for a in ALPHAS}
        run.grid(f"{env}-medium", env, f"{env}-medium-iql", effects=eff, goals=GOALS, seeds=seeds, noise=noise)
    df = run.frame()
    if kl is not None:
        df.loc[df.rule == "poe", "kl_to_frozen"] = df.loc[df.rule == "poe", "param"].map(kl)
    return df


STUDY = ["HELP", "FROZEN", "HURT"] * 3 + ["HELP", "FROZEN", "FROZEN"]  # 4 / 5 / 3


def test_claim4_the_twelve_cells_with_the_study_split():
    c = verdict(_twelve(STUDY), 4)
    assert c.verdict == "reproduced"
    assert c.effect.startswith("any α (Holm over 60 tests): HELP 4, FROZEN 5, HURT 3, UNDERPOWERED 0, FALL 0 of 12 "
                               "cells (study: HELP 4, FROZEN 5, HURT 3 of 12)")
    assert "hopper/G1_speed HELP" in c.effect and "ant/G3_target FROZEN" in c.effect
    assert "12 cells" in c.population and "priors trained" in c.population


@pytest.mark.parametrize("labels, noise, expect", [
    (["HELP", "FROZEN"] * 6, 5.0, "partly"),
    (["FROZEN"] * 12, 5.0, "not reproduced"),
    (STUDY, 400.0, "underpowered"),
])
def test_claim4_other_verdicts(labels, noise, expect):
    assert verdict(_twelve(labels, noise=noise), 4).verdict == expect


def test_claim4_names_each_actor_of_a_checkpoint_set():
    """Over a set (one grid per actor checkpoint) the per-cell list names the actor, so the same (env, goal) of
    two checkpoints reads as two cells; over a set of priors (one actor, several grids) it names the grid."""
    run = Run(2)
    for actor, m in (("hopper-medium-iql", 1.3), ("hopper-medium-iql-seed1", 0.7)):
        run.grid(f"fam.{actor}", "hopper", actor, effects=steer(m), goals=("G1_speed",))
    c = verdict(run.frame(), 4)
    assert "per cell: hopper-medium-iql/G1_speed HELP, hopper-medium-iql-seed1/G1_speed HURT" in c.effect
    run = Run(3)
    for prior, m in (("p0", 1.3), ("p1", 0.7)):
        run.grid(f"fam.{prior}", "hopper", "hopper-medium-iql", effects=steer(m), goals=("G1_speed",))
    df = run.frame()
    df["prior_checkpoint"] = df["grid"].str.removeprefix("fam.")  # as the store records it
    assert "per cell: fam.p0/G1_speed HELP, fam.p1/G1_speed HURT" in verdict(df, 4).effect
    # without the record the two grids are one cell repeated (as a shift grid's 'none' repeats a main grid's)
    assert "of 1 cells" in verdict(run.frame(), 4).effect


def _set_run(mults, *, me_env="hopper", shift_grid=False):
    """A set of hopper medium actors (one grid each, family 'fam'), each with poe at ``mults[k]`` of frozen on
    every goal, beside a medium-expert grid (claim 5) and optionally a seed-0 shift grid outside the set."""
    run = Run(4)
    actors = ["hopper-medium-iql"] + [f"hopper-medium-iql-seed{k}" for k in range(1, len(mults))]
    for actor, m in zip(actors, mults):
        run.grid(f"fam.{actor}", "hopper", actor, effects=steer(m), goals=GOALS)
    run.grid("me", me_env, f"{me_env}-medium-expert-iql", effects=steer(0.7), goals=GOALS)
    if shift_grid:
        run.grid("shift", "hopper", "hopper-medium-iql", effects={("poe", 0.5): 0.7}, shifts=("none", "mass=1.25"))
    df = run.frame()
    df["family"] = df["grid"].where(~df["grid"].str.startswith("fam."), "fam")
    df["prior_checkpoint"] = "hopper-prior"
    return df


def test_a_claim_on_a_checkpoint_set_is_decided_per_checkpoint():
    """Two medium actors of one set that disagree (every cell HELP on one, HURT on the other): pooled, claim 4
    is 'partly'; each alone is 'not reproduced' (one label each), so the per-checkpoint verdicts agree. A
    claim whose test read no grid of the set says so, even when its text quotes the set (claim 5 prints the
    medium actor's score of its env); a claim the run does not cover leaves both columns empty."""
    t = table(_set_run([1.3, 0.7]))
    assert t.loc[4, "verdict"] == "partly"
    assert t.loc[4, "per_checkpoint"] == "not reproduced / not reproduced"
    assert t.loc[4, "across_checkpoints"] == "holds: not reproduced"
    assert t.loc[5, "verdict"] == "reproduced" and t.loc[5, "across_checkpoints"] == claims.NO_SET
    assert t.loc[1, "across_checkpoints"] == claims.NO_SET  # the closed forms read no episode
    assert t.loc[6, "across_checkpoints"] == t.loc[6, "per_checkpoint"] == ""  # not covered
    df = _set_run([1.3, 0.7])
    one = table(df.assign(family=df["grid"]))  # the same grids, no set: the store names a lone grid's family after it
    assert (one["across_checkpoints"] == "").all() and (one["per_checkpoint"] == "").all()
    assert one.loc[4, "effect"] == t.loc[4, "effect"]


def test_checkpoint_verdicts_that_differ_and_sets_of_unequal_size():
    """Claim 4 is 'partly' on an actor with HELP and HURT cells and 'not reproduced' on one with HURT only:
    'differs'. A claim reads as many slices as its smallest set; a lone grid of a set's seed-0 actor (a
    shift grid) joins slice 0 only, and a lone grid named like the set's family is not in the set."""
    mixed = lambda g, q, sh, s, a=0.5: 1.3 if g == "G3_target" else 0.7  # noqa: E731
    t = table(_set_run([mixed, 0.7]))
    assert t.loc[4, "per_checkpoint"] == "partly / not reproduced" and t.loc[4, "across_checkpoints"] == "differs"
    df = _set_run([1.3, 0.7, 0.7], shift_grid=True)
    slices, in_sets = claims.checkpoint_slices(df)
    assert in_sets == {"fam.hopper-medium-iql", "fam.hopper-medium-iql-seed1", "fam.hopper-medium-iql-seed2"}
    assert [sorted(x) for x in slices] == [["fam.hopper-medium-iql", "me", "shift"], ["fam.hopper-medium-iql-seed1", "me"],
                                           ["fam.hopper-medium-iql-seed2", "me"]]
    assert table(df).loc[4, "per_checkpoint"].count(" / ") == 2
    # a second set of two medium-expert actors: claim 5 reads 2 slices, claim 7 (every grid) the smaller set's 2
    me = df[df.grid == "me"]
    two = pd.concat([df[df.grid != "me"], me.assign(grid="fme.a", family="fme"),
                     me.assign(grid="fme.b", family="fme", actor="hopper-medium-expert-iql-seed1")])
    t = table(two)
    assert t.loc[5, "per_checkpoint"].count(" / ") == 1 and t.loc[7, "per_checkpoint"].count(" / ") == 1
    assert t.loc[4, "per_checkpoint"].count(" / ") == 2
    lone = df.assign(family=df["family"].where(df["grid"] != "me", "fam"))  # a lone grid whose family is a set's name
    assert claims.checkpoint_slices(lone.assign(grid=lone["grid"].replace("me", "fam")))[1] == in_sets


def test_claim4_and_5_leave_out_other_actors_priors_and_shifts():
    """Medium-expert, broken-prior and shifted rows do not enter claim 4's cells; claim 5 reads only the
    medium-expert actors."""
    df = _twelve(STUDY)
    extra = Run(5).grid("hopper-medium-expert", "hopper", "hopper-medium-expert-iql", effects=steer(0.7),
                        goals=GOALS).grid("hopper-shift", "hopper", "hopper-medium-iql", effects=steer(0.5),
                                          shifts=("none", "mass=1.25")).frame()
    both = pd.concat([df, extra], ignore_index=True)
    assert verdict(both, 4).effect.split(" | ")[0] == verdict(df, 4).effect.split(" | ")[0]
    c5 = verdict(both, 5)
    assert c5.verdict == "reproduced" and "grids hopper-medium-expert" in c5.population
    assert verdict(df, 5).verdict == claims.NOT_COVERED


def test_claim3_selector_against_never_steering_and_a_fixed_alpha():
    kl_good = {a: a for a in ALPHAS}  # budget 0.5: the selector picks α = 0.5, where HELP cells gain 1.3
    c = verdict(_twelve(STUDY, kl=kl_good), 3)
    assert c.verdict == "reproduced", c.effect
    assert c.effect.startswith("4 of 12 cells where the oracle beats frozen")
    assert "selector 4 of 4, never steer 0 of 4, α = 0.5 4 of 4" in c.effect
    kl_bad = {a: a / 10 + (10 if a > 0.1 else 0) for a in ALPHAS}  # only α = 0.1 within budget: no gain
    assert verdict(_twelve(STUDY, kl=kl_bad), 3).verdict == "not reproduced"
    assert verdict(_twelve(["FROZEN"] * 12, kl=kl_good), 3).verdict == "premise not met"


def test_claim3_oracle_is_cross_fitted():
    """An α that looks best only by chance on the seeds that chose it is scored on the other half."""
    df = _twelve(STUDY)
    rows, _ = stats.row_stats(df)
    cells = stats.label_cells(rows)
    c = cells[(cells.env == "hopper") & (cells.goal == "G1_speed")].iloc[0]
    assert c.crossfit and c.oracle_param >= 0.5 and c.oracle_param_b >= 0.5
    sm = stats.seeds_of(rows)
    mine = sm[(sm.env == "hopper") & (sm.goal == "G1_speed") & (sm.rule == "poe")]
    wide = mine.pivot(index="seed", columns="param", values="return_goal")
    a, b = wide.index[0::2], wide.index[1::2]
    want = pd.concat([wide.loc[b, wide.loc[a].mean().idxmax()], wide.loc[a, wide.loc[b].mean().idxmax()]]).mean()
    assert c.oracle_mean == pytest.approx(want)


# ---------------------------------------------------------------- claim 5
@pytest.mark.parametrize("mult, noise, expect", [
    (0.7, 5.0, "reproduced"),
    (lambda a: 0.7 if a >= 0.25 else 1.0, 5.0, "partly"),
    (lambda a: 1.2 if a == 0.1 else 0.7, 5.0, "not reproduced"),
    (0.9, 600.0, "underpowered"),
])
def test_claim5_medium_expert_verdicts(mult, noise, expect):
    run = Run(2)
    for env in ENVS[:3]:
        run.grid(f"{env}-medium-expert", env, f"{env}-medium-expert-iql", effects=steer(mult), goals=GOALS,
                 noise=noise)
    assert verdict(run.frame(), 5).verdict == expect


def test_claim5_prints_each_medium_expert_actors_card_score_and_expert_level():
    """Beside claim 5's verdict: the medium-expert actor's normalised score with its 95% interval from its card,
    and whether its data's expert half was near D4RL's expert, read from the run's summary (the cards it ran with)."""
    df = Run(2).grid("hopper-medium-expert", "hopper", "hopper-medium-expert-iql", effects=steer(0.7)).frame()
    rows, _ = stats.row_stats(df)
    actors = {"hopper-medium-expert-iql": {"name": "hopper-medium-expert-iql", "expert_level": "sub-expert (x)",
                                           "scores": [{"normalized_mean": 70.9, "normalized_se": 4.2, "episodes": 20}]},
              "hopper-medium-iql": {"name": "hopper-medium-iql", "scores": []}}
    ev = claims.Evidence(df, rows, stats.label_cells(rows), 0.05, 0.5, actors)
    effect = claims.evaluate(ev).set_index("claim").loc[5, "effect"]
    assert ("medium-expert actors, card score mean [95% CI]: hopper-medium-expert-iql (card: 70.9 [62.7, 79.1] "
            "(20 ep)), sub-expert (x)") in effect
    assert "hopper-medium-iql" not in effect.split("card score")[1]


# ---------------------------------------------------------------- claim 6
@pytest.mark.parametrize("success, expect", [
    ({"frozen": 0.9, "poe": 0.9, "additive": 0.8}, "premise not met"),
    ({"frozen": 0.0, "poe": 0.0, "additive": 0.0}, "reproduced"),
    ({"frozen": 0.0, "poe": 0.0, "additive": 0.6}, "not reproduced"),
    ({"frozen": 0.0, "poe": 0.05, "additive": 0.0}, "partly"),
])
def test_claim6_antmaze_premise_and_verdicts(success, expect):
    df = Run(3).grid("antmaze-umaze", "antmaze-umaze", "antmaze-umaze-bc", goals=("G4_reach",),
                     effects={("poe", 0.5): 1.0, ("additive", 0.9): 1.0}, seeds=20, success=success).frame()
    rows, _ = stats.row_stats(df)
    card = {"antmaze-umaze-bc": {"scores": [{"normalized_mean": 15.0, "episodes": 20,
                                              "normalized_by": "D4RL ref scores [0, 1]"}]}}
    c = claims.evaluate(claims.Evidence(df, rows, stats.label_cells(rows), 0.05, 0.5, card)).set_index("claim").loc[6]
    assert c.verdict == expect, c.effect
    assert "frozen succeeds" in c.effect and "(card: 15.0 [5.2, 36.0] (20 ep))" in c.effect  # Wilson, from the card
    if expect == "premise not met":
        assert "frozen succeeds 9" in c.effect or "frozen succeeds 8" in c.effect


# ---------------------------------------------------------------- claim 7
@pytest.mark.parametrize("delta_pi, mult, expect", [(0.3, 1.2, "vacuous"), (1e-4, 1.0, "reproduced"),
                                                     (1e-4, 3.0, "not reproduced")])
def test_claim7_bound_vacuous_or_tested(delta_pi, mult, expect):
    df = Run(4).grid("g", "hopper", "hopper-medium-iql", effects=steer(mult), seeds=6, delta_pi=delta_pi).frame()
    assert verdict(df, 7).verdict == expect


# ---------------------------------------------------------------- claim 8
@pytest.mark.parametrize("poe_rate, greedy_rate, sample, expect", [
    (0.002, 0.95, True, "reproduced"),
    (0.010, 0.95, True, "partly"),
    (0.002, 0.60, True, "partly"),
    (0.010, 0.60, True, "not reproduced"),
    (0.002, 0.95, False, claims.NOT_COVERED),  # frozen executes its mean: its rate says nothing
])
def test_claim8_sampled_execution(poe_rate, greedy_rate, sample, expect):
    eff = {("poe", a): 1.0 for a in ALPHAS} | {("critic_greedy", 0.0): 0.9}
    df = Run(5).grid("hopper-sampled", "hopper", "hopper-medium-iql", effects=eff, seeds=10, sample=sample,
                     violation={"frozen": 0.003, "poe": poe_rate, "critic_greedy": greedy_rate}).frame()
    c = verdict(df, 8)
    assert c.verdict == expect, c.effect
    if sample:
        assert "sampled" in c.population


# ---------------------------------------------------------------- claim 9
def _shifted(order_flip: bool, spread: float = 1.0):
    def poe(a):
        return lambda g, q, sh, s: (1 + spread * (0.2 - a / 2)) if (sh == "none" or not order_flip) else (
            1 - spread * (0.2 - a / 2))
    eff = {("poe", a): poe(a) for a in (0.25, 0.5, 0.75)} | {("kl_reg", 1.0): 1.0}
    return Run(6).grid("hopper-shift", "hopper", "hopper-medium-iql", effects=eff,
                       shifts=("none", "mass=1.25", "friction=0.5")).frame()


@pytest.mark.parametrize("flip, spread, expect", [(False, 1.0, "reproduced"), (True, 1.0, "not reproduced"),
                                                  (False, 0.0, "vacuous")])
def test_claim9_reversals_of_significant_orderings(flip, spread, expect):
    c = verdict(_shifted(flip, spread), 9)
    assert c.verdict == expect, c.effect
    assert "J_shift/J_none" in c.effect or spread == 0.0
    assert "kl_reg" not in c.population  # kl_reg(1) executes poe(0.5)'s means: one policy


# ---------------------------------------------------------------- families
def test_adding_an_unrelated_grid_changes_no_label():
    """Labels are tested within one cell's coefficients of a rule; a claim within its own population. A run
    with a second grid (another env, actor, priors, a sampled grid) keeps every label and verdict of the first."""
    base = _twelve(STUDY)
    extra = (Run(9).grid("walker2d-medium-expert", "walker2d", "walker2d-medium-expert-iql", effects=steer(0.6),
                         goals=GOALS, priors=("trained", "random"))
             .grid("hopper-sampled", "hopper", "hopper-medium-iql", effects=steer(1.0), seeds=10, sample=True)
             .frame())
    extra["lane"] += base["lane"].max() + 1
    both = pd.concat([base, extra], ignore_index=True)
    r1, _ = stats.row_stats(base)
    r2, _ = stats.row_stats(both)
    keys = stats.ROW
    m = r1.merge(r2, on=keys, suffixes=("", "_2"))
    assert len(m) == len(r1)
    assert (m["label"] == m["label_2"]).all() and np.allclose(m["p_holm"].fillna(-1), m["p_holm_2"].fillna(-1))
    c1, c2 = stats.label_cells(r1), stats.label_cells(r2)
    mc = c1.merge(c2, on=stats.FAMILY, suffixes=("", "_2"))
    assert len(mc) == len(c1) and (mc["oracle_label"] == mc["oracle_label_2"]).all()
    t1, t2 = table(base), table(both)
    for cid in (2, 3, 4):
        assert t1.loc[cid, "verdict"] == t2.loc[cid, "verdict"] and t1.loc[cid, "effect"] == t2.loc[cid, "effect"]


def test_every_verdict_is_one_of_the_stated_ones():
    assert set(claims.VERDICTS) == {"reproduced", "partly", "not reproduced", "vacuous", "premise not met",
                                    "underpowered", "not covered"}


def test_claim8_too_few_seeds_is_underpowered_not_a_pass():
    """With 5 seeds no permutation test can be significant: 'no row above frozen' is then no evidence."""
    eff = {("poe", a): 1.0 for a in ALPHAS} | {("critic_greedy", 0.0): 0.9}
    df = Run(5).grid("hopper-sampled", "hopper", "hopper-medium-iql", effects=eff, seeds=5, sample=True,
                     violation={"frozen": 0.003, "poe": 0.2, "critic_greedy": 0.95}).frame()
    c = verdict(df, 8)
    assert c.verdict == "underpowered" and "smallest attainable" in c.effect


def test_claim9_reads_the_shift_grid_beside_a_main_grid_with_the_same_cell():
    """The shift grid's 'none' cell repeats the main grid's; claims 3 and 4 read it once, claim 9 still
    compares it with the shifts of its own grid."""
    main_grid = _twelve(STUDY)
    shifted = _shifted(False)
    shifted["lane"] += main_grid["lane"].max() + 1
    both = pd.concat([main_grid, shifted], ignore_index=True)
    assert verdict(both, 9).verdict == "reproduced"
    assert "hopper-shift" not in verdict(both, 4).population
