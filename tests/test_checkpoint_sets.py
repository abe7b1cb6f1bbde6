"""Checkpoint sets: a grid that names ``zoo:NAME@*`` (or a list) runs one grid per checkpoint, the store
records which, and the statistics nest episodes in checkpoints."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from poe_jax import checkpoints, grid
from poe_jax.analysis import report, stats
from poe_jax.grid.spec import SpecError

SET = dict(env="hopper", actor="zoo:hopper-medium-iql", prior="zoo:hopper-prior@*",
           rules={"frozen": [], "poe": [0.5, 0.99]}, seeds=[0, 1, 2], max_steps=40, backend="native", name="fam")


def test_a_set_names_every_replica_of_a_shipped_checkpoint():
    got = checkpoints.expand("prior", "zoo:hopper-prior@*")
    assert got[0] == "zoo:hopper-prior" and len(got) >= 3
    for ref in got[1:]:
        assert checkpoints.read_card(checkpoints.zoo_path(ref))["replica_of"] == "hopper-prior"
    specs = grid.load_specs(SET)
    assert [s.prior for s in specs] == list(got)
    assert {s.family for s in specs} == {"fam"} and len({s.name for s in specs}) == len(specs)
    # a list is a set too; the product of an actor set and a prior set is one grid per pair
    two = grid.load_specs({**SET, "prior": ["zoo:hopper-prior", "zoo:hopper-prior-seed2"]})
    assert [s.name for s in two] == ["fam.hopper-prior", "fam.hopper-prior-seed2"]


REPLICATED_ACTORS = ("hopper-medium-iql", "hopper-medium-expert-iql", "ant-medium-iql", "ant-medium-expert-iql",
                     "walker2d-medium-iql", "walker2d-medium-expert-iql",
                     "halfcheetah-medium-iql", "halfcheetah-medium-expert-iql")  # every medium and ME IQL actor


def test_the_zoo_ships_three_training_seeds_of_every_goal_prior_and_the_replicated_actors():
    """Every goal prior (not a variant such as the small-data ones) and every replicated actor is a set of at least
    3 checkpoints with distinct training seeds; every actor replica's card names its own data (the whole recipe
    was rerun with its seed) and carries a normalised score."""
    cards = {p.name: checkpoints.read_card(p) for p in checkpoints.ZOO.iterdir() if (p / "card.json").is_file()}
    bases = [n for n, c in cards.items() if c["kind"] == "prior" and not c.get("replica_of") and not c.get("variant_of")]
    assert len(bases) >= 6
    for base in [*bases, *REPLICATED_ACTORS]:
        members = [r.removeprefix("zoo:") for r in checkpoints.replicas(base)]
        seeds = [cards[m].get("seed", cards[m]["provenance"].get("seed", 0)) for m in members]
        assert len(members) >= 3 and len(set(seeds)) == len(seeds), (base, members, seeds)
    actor_replicas = {m: c for m, c in cards.items() if c["kind"] != "prior" and c.get("replica_of")}
    assert {c["replica_of"] for c in actor_replicas.values()} >= set(REPLICATED_ACTORS)
    for m, c in actor_replicas.items():  # every actor replica, also of an env with fewer than 3 so far
        assert m == f"{c['replica_of']}-seed{c['seed']}" and c["seed"] >= 1, m
        assert c["dataset"] == f"poe/{c['replica_of'].removesuffix('-iql')}-sac-s{c['seed']}-v0", m
        assert f"seed {c['seed']}" in c["data_source"] and c["scores"][0]["episodes"] == 20, m


@pytest.mark.parametrize("prior, needle", [
    ("zoo:hopper-prior@1", "the only set syntax is 'zoo:NAME@*'"),
    ("some/dir@*", "a set ('@*') names a shipped checkpoint"),
    ("zoo:no-such-prior@*", "prior: 'zoo:no-such-prior@*': no shipped checkpoint"),
    (["zoo:hopper-prior", "zoo:hopper-prior"], "named twice"),
    ([], "non-empty list"),
])
def test_a_bad_set_is_one_line_naming_the_field(prior, needle):
    with pytest.raises(SpecError) as e:
        grid.load_specs({**SET, "prior": prior})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_load_spec_refuses_a_set_it_cannot_return_as_one_grid():
    with pytest.raises(SpecError, match="names a set of checkpoints"):
        grid.load_spec(SET)


@pytest.fixture(scope="module")
def family_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("family")
    grid.run_many(grid.load_specs(SET), out, progress=False)
    return out


@pytest.fixture(scope="module")
def family_report(family_run):
    """The run's report, rendered once: report.md and claims.csv in the run folder."""
    return report.render(report.analyze(family_run)).read_text()


def test_the_store_records_the_checkpoint_and_the_stats_nest_episodes_in_it(family_run, family_report):
    df = grid.read_episodes(family_run)
    names = [checkpoints.short_name(r) for r in checkpoints.expand("prior", SET["prior"])]
    per_grid = df.groupby("grid")[["family", "prior_checkpoint"]].agg(lambda s: set(s))
    assert sorted(c for (c,) in per_grid["prior_checkpoint"]) == sorted(names)
    assert all(f == {"fam"} for f in per_grid["family"])
    rows, _ = stats.row_stats(df)
    t = stats.across_checkpoints(df, rows)
    assert len(t) == 2 and (t["checkpoints"] == len(names)).all()  # poe at 2 coefficients, one row each
    for _, r in t.iterrows():
        mine = rows[(rows.rule == r.rule) & (rows.param == r.param)].set_index("grid")
        d = mine.loc[r.grids.split(), "diff"].to_numpy()  # each checkpoint's own paired difference (seeds as units)
        assert r.diffs == " / ".join(f"{x:.4g}" for x in d)
        assert r["diff"] == pytest.approx(d.mean())
        # the checkpoint is the unit of the pooled test: K - 1 degrees of freedom, not seeds x checkpoints
        assert r.p_nested == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
        assert r.labels == " / ".join(mine.loc[r.grids.split(), "label"])
    assert t["p_nested_holm"].max() <= 1 and (t["p_nested_holm"] >= t["p_nested"]).all()
    assert "## Across checkpoints" in family_report and (family_run / "checkpoints.csv").is_file()


def test_each_claim_is_decided_on_each_checkpoint_as_if_run_alone(family_run, family_report):
    """claims.csv's per_checkpoint verdicts are what the claims say of each checkpoint's grid analysed alone
    (its own rows, cells and families), and across_checkpoints says whether they agree."""
    from poe_jax.analysis import claims

    df = grid.read_episodes(family_run)
    table = pd.read_csv(family_run / "claims.csv", keep_default_na=False).set_index("claim")
    slices, in_sets = claims.checkpoint_slices(df)
    assert len(slices) == len(checkpoints.expand("prior", SET["prior"])) and in_sets == set(df["grid"])
    alone = []
    for grids in slices:
        (g,) = grids
        one = df[df["grid"] == g]
        rows, _ = stats.row_stats(one)
        alone.append(claims.evaluate(claims.Evidence(one, rows, stats.label_cells(rows), 0.05, 0.5)).set_index("claim"))
    assert table.loc[4, "verdict"] != claims.NOT_COVERED  # poe with the trained prior on a medium actor
    assert table.loc[1, "across_checkpoints"] == claims.NO_SET  # the closed forms read no episode
    text = family_report
    assert "**Across checkpoints.**" in text
    for cid, r in table.iterrows():
        if r["verdict"] == claims.NOT_COVERED or cid == 1:
            assert r["per_checkpoint"] == "" and r["across_checkpoints"] in ("", claims.NO_SET)
            continue
        got = r["per_checkpoint"].split(" / ")
        assert got == [t.loc[cid, "verdict"] for t in alone], cid
        assert r["across_checkpoints"] == (f"holds: {got[0]}" if len(set(got)) == 1 else "differs")
        assert f"| {cid} | {r['verdict']} | {r['per_checkpoint']} | **{r['across_checkpoints']}** |" in text


def _rows(labels, diffs):
    return pd.DataFrame({"grid": [f"g{i}" for i in range(len(labels))], "env": "hopper", "goal": "G1_speed",
                         "prior": "trained", "shift": "none", "rule": "poe", "param": 0.5, "label": labels,
                         "diff": diffs})


@pytest.mark.parametrize("labels, verdict", [
    (["HELP", "HELP", "HELP"], "holds: HELP"),
    (["HELP", "HURT", "HELP"], "differs"),
    (["HELP", "FROZEN", "UNDERPOWERED"], "differs"),
    (["HURT", "UNDERPOWERED", "HURT"], "partly: HURT (2 of 3)"),
    (["UNDERPOWERED"] * 3, "underpowered"),
])
def test_the_verdict_across_checkpoints(labels, verdict):
    rows = _rows(labels, [1.0, 2.0, 4.0])
    df = pd.DataFrame({"grid": rows["grid"], "family": "fam"})
    t = stats.across_checkpoints(df, rows)
    assert list(t["verdict"]) == [verdict]


def test_a_grid_of_one_checkpoint_is_not_a_set():
    rows = _rows(["HELP", "HELP"], [1.0, 2.0])
    df = pd.DataFrame({"grid": rows["grid"], "family": rows["grid"]})  # two families of one grid each
    assert stats.across_checkpoints(df, rows).empty
    assert np.isnan(stats.across_checkpoints(pd.DataFrame({"grid": ["g0", "g1"], "family": "f"}),
                                             _rows(["HELP", "HELP"], [1.0, 1.0]))["p_nested"].iat[0])


def test_a_lone_grid_named_like_a_set_is_not_in_the_set():
    """A grid outside a set is its own family (the store names it after the grid): a lone grid called 'fam'
    beside the set 'fam' (grids 'fam.a', 'fam.b') is not a third checkpoint of it."""
    rows = _rows(["HURT", "HELP", "HELP"], [-1.0, 1.0, 2.0]).assign(grid=["fam", "fam.a", "fam.b"])
    t = stats.across_checkpoints(pd.DataFrame({"grid": rows["grid"], "family": "fam"}), rows)
    assert list(t["grids"]) == ["fam.a fam.b"] and list(t["verdict"]) == ["holds: HELP"]
