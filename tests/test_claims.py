"""The claims table on planted data: an anchored rule, collapsing rules, a HELP / FROZEN / HURT
split, AntMaze success changes and support violation, each verdict checked, and flipped when the
planted effect is removed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from poe_jax import claims, stats

SEEDS = range(10)
# (goal, prior, rule, param) -> multiplier of frozen's goal return
LOCO = {
    ("G1_speed", "trained", "poe", 0.5): 1.3,  # HELP
    ("G2_balanced", "trained", "poe", 0.5): 1.0,  # FROZEN
    ("G3_target", "trained", "poe", 0.5): 0.7,  # HURT
    **{(g, "random", "poe", 0.5): 0.97 for g in ("G1_speed", "G2_balanced", "G3_target")},  # anchored
    **{(g, "random", "additive", 0.5): 0.3 for g in ("G1_speed", "G2_balanced", "G3_target")},  # collapses
    **{(g, "random", "prior_only", 1.0): 0.1 for g in ("G1_speed", "G2_balanced", "G3_target")},
    **{(g, q, "kl_reg", 1.0): 1.0 for g in ("G1_speed", "G2_balanced", "G3_target") for q in ("trained", "random")},
}
# AntMaze: (prior, rule, param) -> success probability; frozen succeeds 90%
MAZE = {("trained", "poe", 0.5): 0.9, ("random", "prior_only", 1.0): 0.0}


def planted(poe_random: float = 0.97) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    base = {s: rng.normal(1000, 50) for s in SEEDS}
    common = {"env": "hopper", "actor": "hopper-medium-iql", "shift": "none", "episode": 0, "length": 1000,
              "success": pd.NA}
    for goal in ("G1_speed", "G2_balanced", "G3_target"):
        for s in SEEDS:
            rows.append({**common, "goal": goal, "prior": "any", "rule": "frozen", "param": 0.0, "seed": s,
                         "return_goal": base[s] + rng.normal(0, 5), "kl_to_frozen": 0.0, "support_violation": 0.0})
            rows.append({**common, "goal": goal, "prior": "any", "rule": "critic_greedy", "param": 0.0, "seed": s,
                         "return_goal": base[s] * 0.5, "kl_to_frozen": 3.0, "support_violation": 0.95})
    for (goal, prior, rule, param), mult in LOCO.items():
        mult = poe_random if (prior, rule) == ("random", "poe") else mult
        for s in SEEDS:
            rows.append({**common, "goal": goal, "prior": prior, "rule": rule, "param": param, "seed": s,
                         "return_goal": base[s] * mult + rng.normal(0, 5), "kl_to_frozen": 0.3,
                         "support_violation": 0.002 if rule in ("poe", "kl_reg") else 0.5})
    maze = {"env": "antmaze-umaze", "actor": "antmaze-umaze-scripted-bc", "goal": "G4_reach", "shift": "none",
            "kl_to_frozen": 0.2, "support_violation": 1.0}
    for s in SEEDS:
        for e in range(2):
            won = rng.uniform() < 0.9
            rows.append({**maze, "prior": "any", "rule": "frozen", "param": 0.0, "seed": s, "episode": e,
                         "success": won, "return_goal": float(won), "length": 300 if won else 700})
            for (prior, rule, param), p in MAZE.items():
                won = rng.uniform() < p
                rows.append({**maze, "prior": prior, "rule": rule, "param": param, "seed": s, "episode": e,
                             "success": won, "return_goal": float(won), "length": 300 if won else 700})
    df = pd.DataFrame(rows)
    df["success"] = df["success"].astype("boolean")
    blind = df.prior.eq("any")  # served once per prior quality, as poe_jax.store.read_episodes does
    return pd.concat([df[~blind], *(df[blind].assign(prior=q) for q in ("trained", "random"))], ignore_index=True)


def table(df: pd.DataFrame) -> pd.DataFrame:
    r, _ = stats.row_stats(df)
    return claims.evaluate(claims.Evidence(df, r, stats.label_cells(r), 0.05, 0.5)).set_index("claim")


def test_planted_claims_get_their_verdicts():
    t = table(planted())
    assert t.loc[1, "verdict"] == "reproduced"  # poe(0.5) and kl_reg(1.0): the closed forms
    # 2: poe anchored (0.97 of frozen) under the random prior, additive (0.3) and prior_only (0.1) collapse
    assert t.loc[2, "verdict"] == "reproduced"
    assert "random: poe 0.97, additive 0.30, prior_only 0.10" in t.loc[2, "effect"]
    # 4: HELP on G1, FROZEN on G2, HURT on G3 (the AntMaze cell is a fourth, FROZEN)
    assert t.loc[4, "verdict"] == "reproduced"
    assert t.loc[4, "effect"].startswith("HELP 1, FROZEN 2, HURT 1, FALL 0 of 4 cells")
    # 6: frozen succeeds, prior_only under the random prior never does: lowered, significantly
    assert t.loc[6, "verdict"] == "not reproduced (premise differs: frozen succeeds)"
    assert "lowered in 1 of 2 rows (random: prior_only)" in t.loc[6, "effect"]
    assert "frozen 85% of 20;" in t.loc[6, "effect"]  # each frozen episode counted once, not once per quality
    assert "raised in 0 of 2 rows" in t.loc[6, "effect"]
    # 8: poe below 1% (frozen executes its mean), critic_greedy ≥ 0.9; the AntMaze actor is left out
    assert t.loc[8, "verdict"] == "reproduced"
    assert "left out (frozen's own rate > 0.5): antmaze-umaze-scripted-bc 1.00" in t.loc[8, "effect"]


def test_a_collapsing_poe_is_not_reproduced():
    """The same grid with poe collapsing under the random prior (0.3 of frozen, as additive)."""
    t = table(planted(poe_random=0.2))
    assert t.loc[2, "verdict"] == "not reproduced"
    assert "random: poe 0.20" in t.loc[2, "effect"]
