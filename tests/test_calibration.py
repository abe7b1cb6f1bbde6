"""Prior calibration (poe_jax.analysis.calibration): the measure means what its name says, on the shipped priors'
held-out rows, and a card (data) cannot point it outside the zoo."""

from __future__ import annotations

import numpy as np
import pytest

from poe_jax import checkpoints
from poe_jax.analysis import calibration


@pytest.fixture(scope="module")
def hopper():
    card = checkpoints.read_card(checkpoints.zoo_path("hopper-prior"))
    obs, act, inside = calibration.load_rows(calibration.rows_file(card), 11, 3)
    return obs, act, inside


def _measure(name, quality, rows, **kw):
    prior = checkpoints.load(f"zoo:{name}")
    return calibration.measure(prior, quality, *rows, 0, 0.0, max_action=1.0, **kw)


def test_vague_is_the_trained_prior_with_four_times_the_std(hopper):
    """z scales by 1/4 when only the std is widened by 4, so E[z²] falls by exactly 16; the NLL by the closed
    form: -log N(a; μ, 4σ) = -log N(a; μ, σ) + log 4 - (15/32) z² on average."""
    ez2, nll = _measure("hopper-prior", "trained", hopper)
    ez2_v, nll_v = _measure("hopper-prior", "vague", hopper)
    assert ez2_v == pytest.approx(ez2 / 16, rel=1e-5)
    assert nll_v == pytest.approx(nll + np.log(4) - 0.5 * ez2 * (1 - 1 / 16), rel=1e-4)


def test_the_measure_orders_the_shipped_priors_as_their_names_say(hopper):
    """Measured, not built in: the full-data prior is near calibrated (E[z²] within [0.5, 2.5]), the one trained on
    10% of the data is overconfident (E[z²] above 2.5 and above the full prior's, a higher NLL), `vague` is too
    vague (below 0.5) and `adversarial` is confidently wrong (far above the trained prior)."""
    full, full_nll = _measure("hopper-prior", "trained", hopper)
    small, small_nll = _measure("hopper-prior-small10", "trained", hopper)
    vague, _ = _measure("hopper-prior", "vague", hopper)
    adv, _ = _measure("hopper-prior", "adversarial", hopper)
    assert 0.5 < full < 2.5 and small > max(2.5, full) and small_nll > full_nll
    assert vague < 0.5 and adv > 5 * full


def test_a_stochastic_quality_is_the_same_for_the_same_seeds_and_only_entries_inside_count(hopper):
    obs, act, inside = hopper
    a = _measure("hopper-prior", "degraded", hopper, seeds=(0, 1))
    assert a == _measure("hopper-prior", "degraded", hopper, seeds=(0, 1))
    assert a != _measure("hopper-prior", "degraded", hopper, seeds=(2, 3))
    wild = act.copy()
    wild[~inside] = 1e6  # what lies outside the bounds is never read
    assert _measure("hopper-prior", "trained", (obs, wild, inside)) == _measure("hopper-prior", "trained", hopper)


@pytest.mark.parametrize("name", ["../hopper-prior/card.json", "/etc/passwd", ".hidden.npz", "", 3, None])
def test_a_card_names_only_a_file_of_the_zoo(name):
    assert calibration.rows_file({calibration.CARD_FIELD: name}) is None


def test_every_shipped_locomotion_prior_names_rows_that_fit_it():
    names = [p.name for p in checkpoints.ZOO.iterdir() if (p / "card.json").is_file()]
    priors = [n for n in names if "-prior" in n and not n.startswith("antmaze")]
    assert len(priors) >= 14
    for n in priors:
        card = checkpoints.read_card(checkpoints.zoo_path(n))
        path = calibration.rows_file(card)
        assert path is not None, n
        obs, act, inside = calibration.load_rows(path, card["obs_size"], card["act_size"])
        assert len(obs) == 1000 and 0.5 < inside.mean() < 1.0, n


@pytest.mark.parametrize("summary", [
    {"grids": ["not", "objects"]}, {"grids": "x"}, {"grids": {"g": 3}}, {"calibration": {"entries": "x"}},
    {"calibration": {"entries": [{"goal": "G1_speed", "quality": "trained", "ez2": "1.5", "nll": 1.0}]}},
    {"calibration": {"entries": [{"goal": "G1_speed", "quality": "trained", "ez2": float("nan"), "nll": 1.0}]}},
    {"actor": {"name": "a", "scores": [{"normalized_mean": "70"}]}},
])
def test_the_report_reads_a_hostile_summary_as_data(summary):
    """A run folder is untrusted: a summary whose calibration or actors are malformed adds nothing to the report,
    and raises nothing."""
    import pandas as pd

    from poe_jax.analysis import report

    rows = pd.DataFrame({"grid": ["g"], "env": ["hopper"], "actor": ["a"], "goal": ["G1_speed"], "prior": ["trained"],
                         "shift": ["none"], "rule": ["poe"], "param": [0.5], "mean": [1.0], "frozen_mean": [1.0],
                         "diff": [0.0], "diff_low": [0.0], "diff_high": [0.0]})
    assert report._calibration_table(summary, rows) is None
    assert all(line.endswith("data source not recorded") for line in report._provenance_lines(summary)[2:-1])


def test_a_grid_measures_its_prior_the_same_whatever_else_it_holds():
    """The calibration a run stores is a property of the prior and quality: grids with other seeds, rules and goals
    give the same numbers for the same (goal, quality)."""
    from poe_jax import grid
    from poe_jax.grid.plan import resolve

    base = dict(env="hopper", actor="zoo:hopper-medium-iql", prior="zoo:hopper-prior", backend="native",
                priors=["trained", "degraded"], max_steps=10)
    a = resolve(grid.load_spec({**base, "rules": {"frozen": [], "poe": [0.5]}, "seeds": [0, 1], "goals": ["G1_speed"]}))
    b = resolve(grid.load_spec({**base, "rules": {"frozen": [], "additive": [0.3]}, "seeds": [7, 8, 9, 10],
                                "goals": ["G3_target", "G1_speed"]}))
    ca, cb = (calibration.of_plan(p, p.prior) for p in (a, b))
    pick = lambda c: {(e["goal"], e["quality"]): (e["ez2"], e["nll"]) for e in c["entries"] if e["goal"] == "G1_speed"}  # noqa: E731
    assert pick(ca) == pick(cb) and len(pick(ca)) == 2 and ca["rows_file"] == "hopper-prior-heldout.npz"


def test_a_prior_without_held_out_rows_gets_a_note(tmp_path):
    import shutil

    from poe_jax import grid
    from poe_jax.grid.plan import resolve

    mine = tmp_path / "my-prior"
    shutil.copytree(checkpoints.zoo_path("hopper-prior"), mine)
    checkpoints.update_card(mine, calibration_rows=None)
    p = resolve(grid.load_spec(dict(env="hopper", actor="zoo:hopper-medium-iql", prior=str(mine), backend="native",
                                    rules={"frozen": [], "poe": [0.5]}, seeds=[0], max_steps=10)))
    assert calibration.of_plan(p, p.prior) == {"note": "my-prior: its card names no held-out rows (calibration_rows)"}
