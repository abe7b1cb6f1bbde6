"""D4RL-format data: write -> read -> qlearning_dataset -> replay through the env."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from poe_jax import data


@pytest.fixture(scope="module")
def small(get_env, tmp_path_factory):
    env = get_env("hopper")
    d = data.collect(env, lambda o, k: jax.random.uniform(k, (3,), minval=-1, maxval=1), 600, 4, jax.random.key(0),
                     max_steps=100)
    path = data.write(tmp_path_factory.mktemp("d4rl") / "hopper-random.hdf5", d, {"env": "hopper", "kind": "random"})
    return env, d, path


def test_layout_round_trip(small):
    env, d, path = small
    r = data.read(path)
    for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations", "infos/qpos",
              "infos/qvel"):
        np.testing.assert_array_equal(r[k], d[k])
    assert r["infos/qpos"].dtype == np.float64 and r["infos/qpos"].shape == (600, env.nq)
    assert r["metadata/env"] == "hopper"
    # every trajectory ends in a terminal or a timeout, including the cut-off last one
    assert r["terminals"][-1] or r["timeouts"][-1]
    assert (r["timeouts"] & r["terminals"]).sum() == 0


def test_qlearning_dataset_semantics(small):
    _, d, path = small
    r = data.read(path)
    q = data.qlearning_dataset(r)
    n_timeouts = int(r["timeouts"].sum())
    assert n_timeouts > 0
    assert len(q["observations"]) == len(r["observations"]) - n_timeouts
    keep = ~r["timeouts"]
    np.testing.assert_array_equal(q["next_observations"], r["next_observations"][keep].astype(np.float32))
    np.testing.assert_array_equal(q["terminals"], r["terminals"][keep].astype(np.float32))
    assert len(data.qlearning_dataset(r, terminate_on_end=True)["observations"]) == len(r["observations"])
    # without next_observations, D4RL's convention: the next row's observation
    r2 = {k: v for k, v in r.items() if k != "next_observations"}
    q2 = data.qlearning_dataset(r2)
    nxt = np.concatenate([r["observations"][1:], r["observations"][-1:]])
    keep2 = ~r["timeouts"]
    keep2[-1] = False
    np.testing.assert_array_equal(q2["next_observations"], nxt[keep2].astype(np.float32))


def test_replay_through_env(small):
    env, _, path = small
    res = data.replay_check(env, data.read(path))
    assert res["rows"] == 600
    assert res["obs_max_err"] < 1e-6 and res["reward_within_tol"] == 1.0 and res["next_obs_within_tol"] == 1.0
    # a tampered file is caught
    r = data.read(path)
    r["rewards"] = r["rewards"] + 0.5
    assert data.replay_check(env, r)["reward_within_tol"] == 0.0


def test_bad_files(tmp_path):
    with pytest.raises(data.DatasetError, match="no such dataset"):
        data.read(tmp_path / "nope.hdf5")
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(data.DatasetError, match="not a readable HDF5"):
        data.read(tmp_path / "junk.hdf5")
    data.write(tmp_path / "partial.hdf5", {"observations": np.zeros((3, 2)), "actions": np.zeros((3, 1))})
    with pytest.raises(data.DatasetError, match=r"missing \['rewards', 'terminals', 'timeouts'\]"):
        data.read(tmp_path / "partial.hdf5")
    with pytest.raises(data.DatasetError, match="rewards has 2 rows"):
        data.write(tmp_path / "x.hdf5", {"observations": np.zeros((3, 2)), "rewards": np.zeros(2)})


def test_obs_stats_follow_corl():
    obs = np.random.default_rng(0).normal(3.0, 2.0, size=(5000, 4)).astype(np.float32)
    norm = data.obs_stats(obs)
    np.testing.assert_allclose(np.asarray(norm.mean), obs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(norm.std), obs.std(0) + 1e-3, rtol=1e-5)


def test_behaviour_policies_are_picked_by_their_stochastic_return(tmp_path):
    """The datasets are collected with the stochastic policy, so the expert is the snapshot with
    the best stochastic return and the medium one is closest to half of it (from anywhere in
    training); without stochastic scores the deterministic training evaluations decide."""
    import json

    from poe_jax.data import generate

    (tmp_path / "policies").mkdir()
    recs = [{"path": f"step-{s:07d}", "step": s, "eval_return": ev, "sto_return": st}
            for s, ev, st in [(25, 400, 390), (50, 2800, 2000), (75, 900, 880), (100, 2600, 2640), (125, 1300, 1400),
                                       (150, 1550, 1280)]]
    index = tmp_path / "policies" / "index.json"
    index.write_text(json.dumps(recs))
    expert, medium, replay = generate.pick_policies(tmp_path)
    assert expert["step"] == 100 and medium["step"] == 150 and len(replay) == 6
    expert, medium, replay = generate.pick_policies(tmp_path, medium_fraction=1 / 3)
    assert expert["step"] == 100 and medium["step"] == 75 and [r["step"] for r in replay] == [25, 50, 75]
    with pytest.raises(ValueError, match="medium_fraction"):
        generate.pick_policies(tmp_path, medium_fraction=1.5)
    index.write_text(json.dumps([{k: v for k, v in r.items() if k != "sto_return"} for r in recs]))
    expert, medium, _ = generate.pick_policies(tmp_path)
    assert expert["step"] == 50 and medium["step"] == 125
    index.write_text("[]")
    with pytest.raises(ValueError, match="no snapshots"):
        generate.pick_policies(tmp_path)


def test_snapshot_scores_are_added_once(tmp_path, get_env):
    import json

    from poe_jax import checkpoints, envs, nets
    from poe_jax.data import generate
    from poe_jax.train import sac

    env = get_env("hopper")
    cfg = sac.SACConfig(hidden=(32, 32), chunk=10, steps=10, lanes=1)
    state, _ = sac.init(env, cfg)
    actor = nets.Actor(jax.device_get(state.actor), nets.ObsNorm.identity(env.obs_size), sac._actor_spec(env, cfg))
    checkpoints.save(tmp_path / "policies" / "step-0000010", actor, env="hopper")
    (tmp_path / "policies" / "index.json").write_text(json.dumps([{"path": "step-0000010", "step": 10, "eval_return": 1.0}]))
    lines = []
    (rec,) = generate.score_snapshots("hopper", tmp_path, episodes=2, log=lines.append)
    assert len(lines) == 1 and rec["score_episodes"] == 2
    spec = envs.make("hopper").spec
    for kind in ("det", "sto"):
        assert np.isfinite(rec[f"{kind}_return"])
        norm = 100 * (rec[f"{kind}_return"] - spec.ref_min_score) / (spec.ref_max_score - spec.ref_min_score)
        assert rec[f"{kind}_normalized"] == pytest.approx(norm, rel=1e-5)
    assert rec["det_return"] != rec["sto_return"]  # the stochastic policy samples its actions
    generate.score_snapshots("hopper", tmp_path, episodes=2, log=lines.append)
    assert len(lines) == 1  # already scored: nothing re-run


def test_tracking_reward_peaks_at_the_target_speed_and_pays_nothing_once_done():
    """The reward SAC learns a slower gait from: healthy + 2 exp(-(v - v*)^2 / (2 w^2)) - ctrl,
    so the same step scores more the closer its speed is to v*; a finished lane scores 0."""
    import jax.numpy as jnp

    from poe_jax import envs
    from poe_jax.data import generate

    env = envs.make("hopper", backend="native")
    s0 = env.reset(jax.random.key(0))
    a = jnp.full(env.act_size, 0.3)
    n = env.step(s0, a)
    v = float(n.metrics["x_velocity"])
    at = generate.Tracking(env, v).step(s0, a)
    off = generate.Tracking(env, v + 1.0).step(s0, a)
    ctrl = float(n.metrics["ctrl_cost"])
    np.testing.assert_allclose(float(at.reward), 1.0 + generate.TRACKING_WEIGHT - ctrl, rtol=1e-5)
    assert float(off.reward) < float(at.reward) and float(off.reward) > 1.0 - ctrl
    done = s0.replace(done=jnp.ones((), bool))
    assert float(generate.Tracking(env, v).step(done, a).reward) == 0.0
    # the slope adds a gradient far from the target (halfcheetah never ends an episode by falling)
    sloped = generate.Tracking(env, v + 1.0, slope=1.0).step(s0, a)
    np.testing.assert_allclose(float(sloped.reward), float(off.reward) - 1.0, rtol=1e-5)
    assert generate.tracking_name("hopper", 1.2) == "hopper-track1.2-sac"


def test_datasets_refuse_an_untrained_expert_unless_allowed(tmp_path, monkeypatch):
    """After Ctrl-C in SAC, the best snapshot is barely trained: datasets from it would be labelled
    'expert' and 'medium' wrongly, so the phase refuses (naming the score and the way out)."""
    import json

    import pytest as _pytest

    from poe_jax.data import DatasetError, generate

    (tmp_path / "policies").mkdir()
    rec = {"path": "sac-000010000", "step": 10000, "eval_return": 900.0, "sto_return": 800.0, "sto_normalized": 25.6,
           "det_normalized": 30.1}
    (tmp_path / "policies" / "index.json").write_text(json.dumps([rec]))
    monkeypatch.setattr(generate, "score_snapshots", lambda *a, **k: None)
    with _pytest.raises(DatasetError, match=r"scores 25.6 .*below 50.*--allow-weak"):
        generate.datasets("hopper", tmp_path, size=10)
