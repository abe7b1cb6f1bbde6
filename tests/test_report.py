"""poe-jax report on a smoke run: a readable report.md and real PNG figures."""

from __future__ import annotations

import json
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from poe_jax.analysis import claims
from poe_jax import grid
from poe_jax.cli import main


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "smoke"
    grid.run(grid.load_spec("preset:smoke"), out, progress=False)
    return out


def test_report_on_smoke_run(smoke_run, capsys):
    assert main(["report", str(smoke_run)]) == 0
    said = capsys.readouterr().out.splitlines()  # the console: headline, each claim's verdict, the files written
    assert said[0] == f"wrote {smoke_run / 'report.md'}"
    assert any(ln.startswith("  trained prior, at the cross-fitted oracle: ") for ln in said)
    for r in pd.read_csv(smoke_run / "claims.csv").itertuples():
        assert any(ln.startswith(f"  {r.claim}. {r.verdict.upper()}") for ln in said), r.claim
    files = said[-1].removeprefix("Files: ").split(", ")
    assert {"report.md", "claims.csv", "rows.csv", "labels.csv"} <= set(files)
    assert all((smoke_run / f).is_file() for f in files)
    text = (smoke_run / "report.md").read_text()
    for needle in ("HELP", "FROZEN", "HURT", "Holm", "Exclusions", "Support violation", '"versions"',
                   "| smoke | G1_speed | trained | none | poe |", "## Selectors", "adaptive α",
                   "performance-difference bound", "the observed change exceeded the bound in 0.",
                   "## Off-policy scorer", "hopper-medium.npz"):
        assert needle in text, needle
    assert "base_dir" not in text  # no path of the machine that ran it
    assert "**Data.**" in text and "not the D4RL dataset hopper-medium-v2" in text and "published IQL" in text
    assert "frozen score 65.6 [59.3, 72.0] (20 ep), mean [95% CI]" in text  # the card's score with its interval
    # The prior's calibration on its held-out rows, per goal and quality, beside poe's change from frozen.
    cal = pd.read_csv(smoke_run / "calibration.csv")
    assert set(cal["prior"]) == {"trained", "random"} and set(cal["goal"]) == {"G1_speed", "G3_target"}
    assert set(cal["param"]) == {0.5} and (cal.loc[cal.prior == "trained", "ez2"].between(0.5, 2.5)).all()
    assert "## Prior calibration" in text and "figures/prior_calibration.png" in files
    offp = pd.read_csv(smoke_run / "offpolicy.csv")
    assert (offp.loc[offp.rule == "frozen", "delta_q"] == 0).all()
    assert set(offp["rule"]) == {"frozen", "poe", "additive", "kl_reg", "poe_adaptive"}
    # Every non-frozen grid row is matched (params recorded in float32, e.g. 0.05, compare equal).
    assert "| hopper | hopper-medium-iql | trained | 8 |" in text
    # sample = false: kl_reg(1) executes poe(0.5)'s means, so it is one policy, tested once
    assert "they are tested once, under the other row's name" in text and "FALL" in text
    rows = pd.read_csv(smoke_run / "rows.csv")
    twin = rows[(rows.rule == "kl_reg")].iloc[0]
    assert twin.same_as == "poe(0.5)" and twin.label == rows[(rows.rule == "poe") & (rows.goal == twin.goal)
                                                             & (rows.prior == twin.prior)].iloc[0].label
    labels = pd.read_csv(smoke_run / "labels.csv")
    assert {"env", "actor", "goal", "prior", "shift", "rule", "point", "param", "mean", "frozen_mean", "diff",
            "diff_low", "diff_high", "mde", "p_holm", "family", "family_size", "label", "length",
            "frozen_length"} <= set(labels.columns)
    assert "kl_reg" not in set(labels.rule)
    assert not ((labels.label == "HELP") & (labels.length < 0.9 * labels.frozen_length)).any()
    eps = grid.read_episodes(smoke_run)
    assert np.isfinite(eps["x_velocity"]).all()
    # frozen ran once and served both prior qualities; G3's speed tracking has its own table
    assert "ran once per (goal, shift, seed, episode)" in text and "## Goal tracking" in text
    track = pd.read_csv(smoke_run / "tracking.csv")
    assert set(track["goal"]) == {"G3_target"} and set(track["prior"]) == {"trained", "random"}
    assert (track["target_speed"] == eps.loc[eps.goal == "G3_target", "target_speed"].iloc[0]).all()
    assert eps.loc[eps.goal == "G1_speed", "target_speed"].isna().all()
    figs = sorted(p.name for p in (smoke_run / "figures").glob("*.png"))
    # every prior quality has its figures (the first keeps the plain names); one CI convention
    assert figs == ["kl_frontier-random.png", "kl_frontier.png", "performance_profile.png", "prior_calibration.png",
                    "prior_quality.png",
                    "return_vs_coefficient-random.png", "return_vs_coefficient.png", "survival-random.png",
                    "survival.png"]
    assert "s.e.)" not in text
    # across cells: IQM / mean / P(improve) per rule, frozen's normalised mean is 1 by construction
    assert "## Across cells, per prior quality: IQM, mean and P(improvement)" in text
    # the study's claims: one row each, a verdict from the allowed set, and the untestable ones say so
    cl = pd.read_csv(smoke_run / "claims.csv").set_index("claim")
    assert list(cl.index) == list(range(1, 10)) and "## The study's claims, each on its own population" in text
    assert set(cl["verdict"]) <= set(claims.VERDICTS) and cl["population"].notna().all()
    assert cl.loc[6, "verdict"] == cl.loc[9, "verdict"] == claims.NOT_COVERED  # no antmaze, no shift
    assert cl.loc[1, "verdict"] == "reproduced"  # the closed forms against float64 references
    assert cl.loc[7, "verdict"] == "vacuous"  # δπ far above (1−γ)/2: the bound cannot fail
    agg = pd.read_csv(smoke_run / "aggregate.csv").set_index(["prior", "rule"])
    assert agg.loc[("trained", "frozen"), "mean"] == pytest.approx(1.0)
    assert set(agg.index) >= {("trained", "frozen"), ("trained", "poe"), ("random", "frozen"), ("random", "poe")}
    assert ((agg["iqm_low"] <= agg["iqm"]) & (agg["iqm"] <= agg["iqm_high"])).all()
    for f in (smoke_run / "figures").glob("*.png"):
        data = f.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_offpolicy_scores_are_the_critic_at_the_composed_mean():
    from poe_jax import compose
    from poe_jax.analysis import offpolicy

    spec = grid.GridSpec(env="hopper", actor="zoo:hopper-medium-iql", prior="zoo:hopper-prior",
                         rules={"frozen": [], "poe": [0.3, 0.9], "prior_only": []}, goals=("G1_speed", "G3_target"),
                         priors=("trained", "adversarial"), seeds=(0,), max_steps=10)
    plan = grid.resolve(spec)
    actor, prior = plan.actor_full, plan.prior
    states = offpolicy.load_states(offpolicy.find_states("hopper-medium"), obs_size=11)[:200]
    df = offpolicy.score_plan(plan, states)
    assert len(df) == 2 * 2 * 4
    a = actor.distribution(jnp.asarray(states))
    g = prior.distribution(jnp.asarray(states), prior.spec.goal_index("G3_target"), 1.2)  # hopper's G3 target
    q = lambda act: float(jnp.mean(actor.critic.q(jnp.asarray(states), jnp.clip(act, -1, 1))))  # noqa: E731
    row = df[(df.goal == "G3_target") & (df.prior == "trained") & (df.rule == "poe") & np.isclose(df.param, 0.3)].iloc[0]
    np.testing.assert_allclose(row.q, q(compose.poe(a, g, 0.3).mean), rtol=1e-5)
    np.testing.assert_allclose(row.q_frozen, q(a.mean), rtol=1e-5)
    assert (df.loc[df.rule == "frozen", "delta_q"] == 0).all()
    # A confidently wrong prior hurts the critic's value more than the trained one at the same alpha.
    poe9 = df[(df.rule == "poe") & np.isclose(df.param, 0.9)].set_index(["goal", "prior"])["delta_q"]
    assert all(poe9[(goal, "adversarial")] < poe9[(goal, "trained")] for goal in ("G1_speed", "G3_target"))


def test_report_refuses_a_dir_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no episodes.parquet" in capsys.readouterr().err


def test_report_refuses_a_folder_of_an_earlier_store_format(smoke_run, tmp_path):
    """Folders written before parts recorded their spec's hash (and before 'random' meant an untrained
    network) are refused with what to do, never reinterpreted."""
    import shutil

    from poe_jax.analysis import report
    from poe_jax.grid import store

    d = tmp_path / "old"
    shutil.copytree(smoke_run, d)
    raw = json.loads((d / "spec.json").read_text())
    raw.pop("identity_sha256")
    (d / "spec.json").write_text(json.dumps(raw))
    with pytest.raises(store.StoreError, match="written by an earlier poe_jax .*run the grid into a new --out"):
        report.write_report(d)


def test_report_with_critic_rules_and_without_frozen(tmp_path, capsys):
    """Critic rules are reported (the off-policy scorer leaves them out: they act on the same
    critic); a grid without frozen is refused with one line saying what to add."""
    spec = {"env": "hopper", "actor": "zoo:hopper-medium-iql", "prior": "zoo:hopper-prior", "goals": ["G1_speed"],
            "seeds": [0, 1], "episodes": 1, "max_steps": 20, "rules": {"frozen": [], "poe": [0.5], "iql_guided": [0.05]}}
    out = grid.run(grid.load_spec(spec), tmp_path / "critic", progress=False).out
    assert main(["report", str(out)]) == 0
    assert "| critic | G1_speed | trained | none | iql_guided |" in (out / "report.md").read_text()
    assert set(pd.read_csv(out / "offpolicy.csv")["rule"]) == {"frozen", "poe"}
    spec["rules"].pop("frozen")
    out = grid.run(grid.load_spec(spec), tmp_path / "nofrozen", progress=False).out
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no 'frozen' rule" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_grids_sharing_env_and_actor_are_reported_apart(tmp_path):
    """Two grids of one run with the same env and actor but other G3 targets stay two cells."""
    spec = {"goals": ["G3_target"], "seeds": [0, 1], "episodes": 1, "max_steps": 20, "rules": {"frozen": [], "poe": [0.9]},
            "grids": [{"name": "slow", "env": "hopper", "actor": "zoo:hopper-medium-iql", "prior": "zoo:hopper-prior",
                       "goal_params": {"G3_target": {"target_speed": 1.2}}},
                      {"name": "fast", "env": "hopper", "actor": "zoo:hopper-medium-iql", "prior": "zoo:hopper-prior",
                       "goal_params": {"G3_target": {"target_speed": 2.0}}}]}
    out = tmp_path / "two"
    grid.run_many(grid.load_specs(spec), out, progress=False)
    assert main(["report", str(out)]) == 0
    track = pd.read_csv(out / "tracking.csv")
    assert track.groupby("grid")["target_speed"].unique().map(list).to_dict() == {"fast": [2.0], "slow": [1.2]}
    assert (track["n"] == 2).all()  # two seeds each, not four pooled
    labels = pd.read_csv(out / "labels.csv")
    assert sorted(labels["grid"].unique()) == ["fast", "slow"]
