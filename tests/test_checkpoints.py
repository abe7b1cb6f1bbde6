"""Checkpoints: bit-exact round trips, cards, and clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poe_jax import checkpoints, nets
from poe_jax.checkpoints import CheckpointError


def _actor(algo="iql", obs=11, act=3, seed=0, critic=True):
    k1, k2 = jax.random.split(jax.random.key(seed))
    norm = nets.ObsNorm(jax.random.normal(k1, (obs,)), 0.5 + jax.random.uniform(k2, (obs,)), 1e-3)
    a = nets.init_actor(nets.ActorSpec(algo, obs, act), jax.random.key(seed + 1), norm)
    if critic:
        a = a.replace(critic=nets.init_critic(nets.CriticSpec(obs, act), jax.random.key(seed + 2), norm))
    return a


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture
def saved(tmp_path):
    a = _actor()
    path = checkpoints.save(tmp_path / "ck", a, env="hopper", dataset="hopper-medium-v2",
                            scores=[{"episodes": 20, "normalized_mean": 55.0}], provenance={"seed": 0})
    return path, a


def test_round_trip_is_bit_exact(saved):
    path, a = saved
    b = checkpoints.load(path, env="hopper")
    assert _leaves_equal(a, b)
    assert b.spec == a.spec and b.critic.spec == a.critic.spec and b.norm.eps == a.norm.eps
    obs = jnp.ones((5, 11))
    np.testing.assert_array_equal(np.asarray(a.act(obs)), np.asarray(b.act(obs)))


def test_card_is_readable_and_complete(saved):
    path, a = saved
    card = json.loads((path / "card.json").read_text())
    assert card["kind"] == "actor" and card["algo"] == "iql" and card["env"] == "hopper"
    assert card["obs_size"] == 11 and card["act_size"] == 3 and card["max_action"] == 1.0
    assert card["normalization"]["applied"] and len(card["normalization"]["mean"]) == 11
    assert card["scores"][0]["episodes"] == 20 and card["dataset"] == "hopper-medium-v2"
    assert card["params"]["actor/net/layers_0/kernel"] == [11, 256]
    assert card["params"]["critic/q1/layers_0/kernel"] == [14, 256]


def test_prior_round_trip(tmp_path):
    spec = nets.PriorSpec(17, 6, ("G1_speed", "G2_balanced", "G3_target"))
    p = nets.init_prior(spec, jax.random.key(3))
    checkpoints.save(tmp_path / "prior", p, env="halfcheetah")
    q = checkpoints.load(tmp_path / "prior", env="halfcheetah")
    assert isinstance(q, nets.GoalPrior) and q.spec == spec and _leaves_equal(p, q)
    d = q.distribution(jnp.zeros(17), spec.goal_index("G3_target"))
    assert d.mean.shape == (6,)
    with pytest.raises(ValueError, match="no goal 'G9'"):
        spec.goal_index("G9")


def test_wrong_env_or_obs_size_fails_clearly(saved, tmp_path):
    path, a = saved
    with pytest.raises(CheckpointError, match=r"made for env 'hopper', not 'walker2d'.*observation size 11 != walker2d's 17"):
        checkpoints.load(path, env="walker2d")
    with pytest.raises(ValueError, match=r"expects observations of size 11; got shape \(17,\)"):
        a.act(jnp.zeros(17))
    # a card whose architecture disagrees with the stored arrays
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    card = json.loads((bad / "card.json").read_text())
    card["architecture"]["obs_size"] = card["obs_size"] = 17
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"do not match the card's architecture.*wrong shapes"):
        checkpoints.load(bad)


def test_corrupt_and_truncated_checkpoints_fail_clearly(saved, tmp_path):
    path, _ = saved
    # corrupt card
    c1 = tmp_path / "c1"
    shutil.copytree(path, c1)
    (c1 / "card.json").write_text('{"format": "poe_jax.checkpoint/1", "kind": ')
    with pytest.raises(CheckpointError, match="corrupt card"):
        checkpoints.load(c1)
    # flipped bytes in the array data
    c2 = tmp_path / "c2"
    shutil.copytree(path, c2)
    data = max((p for p in (c2 / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="cannot read the parameter files|checksum differs"):
        checkpoints.load(c2)
    # truncated: data file cut short, and parameter directory missing
    c3 = tmp_path / "c3"
    shutil.copytree(path, c3)
    data = max((p for p in (c3 / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="cannot read the parameter files|checksum differs"):
        checkpoints.load(c3)
    c4 = tmp_path / "c4"
    shutil.copytree(path, c4)
    shutil.rmtree(c4 / "params")
    with pytest.raises(CheckpointError, match="cannot read the parameter files"):
        checkpoints.load(c4)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoints.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no card.json"):
        checkpoints.load(tmp_path / "empty")


def test_edited_normalisation_is_detected(saved, tmp_path):
    path, _ = saved
    c = tmp_path / "edited"
    shutil.copytree(path, c)
    card = json.loads((c / "card.json").read_text())
    card["normalization"]["mean"][0] += 1.0
    (c / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="normalisation differs"):
        checkpoints.load(c)


def test_save_never_loses_what_is_there(saved, monkeypatch):
    path, a = saved
    before = (path / "card.json").read_text()
    with pytest.raises(CheckpointError, match="already exists"):
        checkpoints.save(path, _actor(seed=5))
    import orbax.checkpoint as ocp

    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save(path, _actor(seed=5), overwrite=True)
    monkeypatch.undo()
    assert (path / "card.json").read_text() == before
    assert _leaves_equal(checkpoints.load(path), a)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary directories left behind"
    b = _actor(seed=5, critic=False)
    checkpoints.save(path, b, overwrite=True)
    assert _leaves_equal(checkpoints.load(path), b)


def test_update_card(saved):
    path, _ = saved
    card = checkpoints.update_card(path, scores=[{"episodes": 30, "normalized_mean": 60.0}])
    assert checkpoints.read_card(path)["scores"] == card["scores"]
    with pytest.raises(CheckpointError, match="cannot be edited"):
        checkpoints.update_card(path, sha256="0")
    with pytest.raises(CheckpointError, match="needs its number of episodes"):
        checkpoints.save(path.parent / "x", _actor(), scores=[{"return": 1.0}])


def test_every_shipped_checkpoint_loads_for_its_env():
    """checkpoints/: each folder loads (hashes checked) against its env's observation size, and each
    actor's card carries a 20-episode score."""

    from poe_jax import envs

    root = checkpoints.ZOO
    found = sorted(p for p in root.iterdir() if (p / "card.json").is_file())
    assert len(found) >= 18
    sizes = {}
    for path in found:
        card = checkpoints.read_card(path)
        env = card["env"]
        if env not in sizes:
            sizes[env] = envs.make(env, backend="native").obs_size
        loaded = checkpoints.load(path, env=env)
        assert loaded.spec.obs_size == sizes[env], path.name
        if card["kind"] == "actor":
            assert card["scores"] and card["scores"][0]["episodes"] >= 20, path.name


def test_saved_checkpoints_name_no_path_of_this_machine(tmp_path):
    actor = nets.init_actor(nets.ActorSpec("iql", 11, 3), jax.random.key(0))
    out = checkpoints.save(tmp_path / "ck", actor, env="hopper")
    for f in Path(out).rglob("*"):
        if f.is_file():
            assert str(tmp_path).encode() not in f.read_bytes(), f
    checkpoints.load(out, env="hopper")


@pytest.mark.parametrize("env_name", ["hopper", "walker2d", "halfcheetah", "ant"])
def test_shipped_iql_actors_meet_the_zoo_targets_and_reproduce_their_cards(env_name, get_env):
    """The zoo's contract (checkpoints/README.md): each env's medium IQL actor scores >= 40 D4RL-normalised,
    frozen and deterministic over 20 episodes on the native backend, and its medium-expert sibling at least
    as much; re-running the card's evaluation (same episode seeds) gives the card's score."""
    from poe_jax.train.zoo import evaluate_scores

    root = checkpoints.ZOO
    env = get_env(env_name)
    now = {}
    for kind in ("medium", "medium-expert"):
        path = root / f"{env_name}-{kind}-iql"
        card = checkpoints.read_card(path)["scores"][0]
        score = evaluate_scores(env, checkpoints.load(path, env=env_name), card["episodes"], card["seed"])
        now[kind] = score["normalized_mean"]
        # Not bit-exact across MuJoCo releases and CPUs (float rounding differs, and contacts are chaotic), so a
        # re-run is another sample of the same episodes' returns: the two means agree within 3 standard errors of
        # their difference, each sample with its own SE, or 2 points. (ant-medium-iql's card: 96.1, SE 0.5; the
        # same 20 episodes on another machine: 93.5, SE 2.1, two of them cut short near 67.)
        tol = max(3 * np.hypot(card["normalized_se"], score["normalized_se"]), 2.0)
        assert abs(now[kind] - card["normalized_mean"]) <= tol, (path.name, now, card, score)
    assert now["medium"] >= 40.0, now
    assert now["medium-expert"] >= now["medium"], now


def test_load_accepts_zoo_names(tmp_path, monkeypatch):
    """``checkpoints.load("zoo:NAME")`` finds shipped checkpoints like grids do, and folders in
    POE_JAX_ZOO first; a missing name is a CheckpointError naming the folders searched."""
    a = checkpoints.load("zoo:hopper-medium-iql", env="hopper")
    assert a.spec.obs_size == 11 and a.critic is not None
    with pytest.raises(checkpoints.CheckpointError, match="no shipped checkpoint 'nope' in"):
        checkpoints.load("zoo:nope")
    monkeypatch.setenv("POE_JAX_ZOO", str(tmp_path))
    assert checkpoints.zoo_dirs()[0] == tmp_path
    with pytest.raises(checkpoints.CheckpointError, match=str(tmp_path)):
        checkpoints.load("zoo:nope")


def test_every_shipped_card_says_what_its_data_are(capsys):
    """The zoo's data are self-generated rollouts, not D4RL's: each card says so (data_source, a poe/ dataset
    id), the IQL actors carry the published IQL score on the D4RL dataset of that name, and poe-jax zoo says it
    above the table."""
    from poe_jax.cli import main

    cards = {p.name: checkpoints.read_card(p) for p in checkpoints.ZOO.iterdir() if (p / "card.json").is_file()}
    for name, card in cards.items():
        assert card.get("data_source"), name
        assert card.get("dataset") is None or card["dataset"].startswith("poe/"), (name, card["dataset"])
        if card["algo"] == "iql" and not card["env"].startswith("ant"):
            assert "not the D4RL dataset" in card["data_source"] and card["published"]["dataset"].startswith("D4RL"), name
    assert cards["hopper-medium-iql"]["published"]["score"] == 66.3  # Kostrikov et al. 2022, table 1
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "not the D4RL datasets" in out and "IQL 66.3 on D4RL hopper-medium-v2" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    hopper = cards["hopper-medium-iql"]["scores"][0]
    lo, hi = hopper["normalized_mean"] - 1.96 * hopper["normalized_se"], hopper["normalized_mean"] + 1.96 * hopper["normalized_se"]
    assert f"{hopper['normalized_mean']:.1f} [{lo:.1f}, {hi:.1f}] (20 ep)" in lines["hopper-medium-iql"]
    assert "0.0 [0.0, 16.1] (20 ep)" in lines["antmaze-medium-diverse-bc"]  # Wilson's interval for 0 of 20
    assert "seed 1 of hopper-prior" in lines["hopper-prior-seed1"]
    assert "hopper-prior on 10% of its data" in lines["hopper-prior-small10"]
    assert "sub-expert (expert policy 82.1 < 90)" in lines["hopper-medium-expert-iql"]


def test_medium_expert_actors_are_labelled_by_their_expert_policy():
    """A medium-expert actor whose data's expert half is below D4RL's expert level (within 10%) says so, from the
    behaviour policy's measured score on its card; other actors get no label."""
    card = checkpoints.read_card(checkpoints.zoo_path("ant-medium-expert-iql"))
    expert = card["provenance"]["behaviour"]["expert"]["det_normalized"]
    assert expert >= checkpoints.NEAR_EXPERT and checkpoints.expert_level(card).startswith("near-expert")
    card["provenance"]["behaviour"]["expert"]["det_normalized"] = 89.9
    assert checkpoints.expert_level(card) == "sub-expert (expert policy 89.9 < 90)"
    assert checkpoints.expert_level(checkpoints.read_card(checkpoints.zoo_path("ant-medium-iql"))) is None
    assert checkpoints.score_ci({"scores": [{"normalized_mean": "70", "normalized_se": 1}]}) is None  # data, not code


def test_every_shipped_actor_with_a_critic_has_probe_states():
    """The off-policy scorer covers every shipped actor it can score: its dataset's probe states, or (where the
    dataset is not kept) states of the actor's own rollouts."""
    import numpy as np

    from poe_jax.analysis import offpolicy

    for p in sorted(checkpoints.ZOO.iterdir()):
        if not (p / "card.json").is_file():
            continue
        card = checkpoints.read_card(p)
        if card["kind"] != "actor" or not card.get("critic"):
            continue
        states = offpolicy.find_states(card.get("probe_states") or card.get("dataset"))
        assert states is not None, p.name
        obs = np.load(states)["observations"]
        assert obs.shape == (1000, card["obs_size"]) and np.isfinite(obs).all(), p.name


def test_squashed_actor_std_is_exact_near_saturation():
    """Review finding: the tanh actor's delta-method std used 1 - tanh(u)**2, which cancels in float32
    (-2.6% at a pre-tanh mean of 7.5; at 8 it fell to the 1e-6 floor, 3.3x too small, with derivative 0)."""
    spec = nets.ActorSpec("sac_n", 3, 3)
    actor = nets.init_actor(spec, jax.random.key(0))
    u = np.array([6.0, 7.5, 8.0], np.float32)
    params = dict(actor.params)
    params["mu"] = {"kernel": jnp.zeros_like(params["mu"]["kernel"]), "bias": jnp.asarray(u)}
    params["log_sigma"] = {"kernel": jnp.zeros_like(params["log_sigma"]["kernel"]), "bias": jnp.full(3, 2.0)}
    actor = actor.replace(params=params)
    obs = jnp.zeros(3)
    b = actor.base(obs)
    u64, s64 = np.asarray(b.mean, np.float64), np.asarray(b.std, np.float64)
    want = spec.max_action * s64 / np.cosh(u64) ** 2
    np.testing.assert_allclose(np.asarray(actor.distribution(obs).std), want, rtol=1e-5)
    # and its derivative in the pre-tanh mean: -2 tanh(u) sech(u)**2 sigma
    grad = jax.grad(lambda bias: actor.replace(params={**params, "mu": {**params["mu"], "bias": bias}})
                    .distribution(obs).std.sum())(jnp.asarray(u))
    np.testing.assert_allclose(np.asarray(grad), -2 * np.tanh(u64) * want, rtol=1e-4)
