"""Minari datasets: read as D4RL arrays (equal to minari.load_dataset), train on them, export ours."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from poe_jax import data
from poe_jax.data import minari_io

minari = pytest.importorskip("minari")  # an optional extra: poe_jax[minari] (in [dev])


@pytest.fixture(scope="module")
def hopper_v5_dataset(tmp_path_factory):
    """A few Hopper-v5 episodes collected by minari's own DataCollector, no network."""
    import gymnasium as gym
    from minari import DataCollector

    root = tmp_path_factory.mktemp("minari")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = DataCollector(gym.make("Hopper-v5", max_episode_steps=40), record_infos=False)
        env.action_space.seed(0)
        for ep in range(4):
            env.reset(seed=ep)
            for _ in range(40):
                *_, term, trunc, _ = env.step(env.action_space.sample())
                if term or trunc:
                    break
        env.create_dataset(dataset_id="test/hopper/random-v0", algorithm_name="random",
                           ref_min_score=-20.0, ref_max_score=3234.3)
        ref = minari.load_dataset("test/hopper/random-v0")
        eps = list(ref.iterate_episodes())
    yield root, eps
    mp.undo()


def test_read_equals_minari_load_dataset_flattened(hopper_v5_dataset, monkeypatch):
    root, eps = hopper_v5_dataset
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    d = data.read("minari:test/hopper/random-v0")
    np.testing.assert_array_equal(d["observations"], np.concatenate([e.observations[:-1] for e in eps]))
    np.testing.assert_array_equal(d["next_observations"], np.concatenate([e.observations[1:] for e in eps]))
    np.testing.assert_array_equal(d["actions"], np.concatenate([e.actions for e in eps]))
    np.testing.assert_array_equal(d["rewards"], np.concatenate([e.rewards for e in eps]))
    np.testing.assert_array_equal(d["terminals"], np.concatenate([e.terminations for e in eps]))
    np.testing.assert_array_equal(d["timeouts"], np.concatenate([e.truncations for e in eps]))
    assert d["metadata/env"] == "hopper-v5" and d["metadata/gym_id"] == "Hopper-v5"
    assert (d["metadata/ref_min_score"], d["metadata/ref_max_score"]) == (-20.0, 3234.3)
    # the dataset's folder reads the same
    same = data.read(root / "test" / "hopper" / "random-v0")
    np.testing.assert_array_equal(same["observations"], d["observations"])

    # qlearning_dataset at the episode boundaries: a termination ends bootstrapping (terminal 1, kept);
    # a truncation does not (its row is dropped, as D4RL's); no transition crosses into the next episode
    q = data.qlearning_dataset(d)
    n_term, n_trunc = int(d["terminals"].sum()), int(d["timeouts"].sum())
    assert n_term + n_trunc == len(eps) and n_term >= 1
    assert len(q["observations"]) == len(d["observations"]) - n_trunc
    assert q["terminals"].sum() == n_term
    for e in eps:  # each episode's last transition: s' is that episode's own last observation
        hits = np.flatnonzero(np.all(q["next_observations"] == e.observations[-1].astype(np.float32), axis=1))
        assert len(hits) == (1 if e.terminations[-1] else 0)


def test_missing_dataset_names_the_folder_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(data.DatasetError, match=f"no Minari dataset 'mujoco/hopper/medium-v0' in {tmp_path}"):
        data.read("minari:mujoco/hopper/medium-v0")


def test_unmodelled_env_is_a_clear_error():
    with pytest.raises(data.DatasetError, match="env 'Humanoid-v5' is not modelled by poe_jax"):
        minari_io.env_name({"dataset_id": "x", "env_spec": {"id": "Humanoid-v5"}})


def test_train_bc_on_a_minari_dataset(hopper_v5_dataset, monkeypatch, tmp_path):
    """`poe-jax train bc --dataset minari:ID` runs; the card names the dataset and which ref scores
    normalised its score. Hopper-v5 data on the v4 env is refused (the dataset records its env)."""
    from poe_jax import checkpoints, cli

    root, _ = hopper_v5_dataset
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    args = ["train", "bc", "--env", "hopper", "--dataset", "minari:test/hopper/random-v0", "--out", str(tmp_path),
            "--steps", "20"]
    assert cli.main(args) == 2  # collected on Hopper-v5
    assert cli.main([*args[:3], "hopper-v5", *args[4:]]) == 0
    card = checkpoints.read_card(tmp_path / "test-hopper-random-v0-bc")
    assert card["dataset"] == "test-hopper-random-v0"
    assert "dataset's ref scores [-20, 3234.3]" in card["scores"][0]["normalized_by"]


def test_export_opens_with_minari_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    n, obs = 25, 11
    ends = np.zeros(n, bool)
    ends[[9, 24]] = True
    d = {"observations": rng.normal(size=(n, obs)), "next_observations": rng.normal(size=(n, obs)),
         "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32), "rewards": rng.normal(size=n),
         "terminals": np.eye(1, n, 9, dtype=bool)[0], "timeouts": np.eye(1, n, 24, dtype=bool)[0]}
    for i in range(n - 1):  # within an episode, s' is the next row's s
        if not ends[i]:
            d["next_observations"][i] = d["observations"][i + 1]
    folder = minari_io.export(d, "poe_jax/hopper/test-v0", "hopper", root=tmp_path, ref_min_score=-20.0,
                              ref_max_score=3234.3)
    assert folder == tmp_path / "poe_jax" / "hopper" / "test-v0"
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = minari.load_dataset("poe_jax/hopper/test-v0")
            assert ds.total_episodes == 2 and ds.total_steps == n
            assert ds.spec.env_spec.id == "Hopper-v4"
        back = data.read("minari:poe_jax/hopper/test-v0")
    finally:
        mp.undo()
    for k in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_allclose(back[k], d[k], rtol=0, atol=0)
    assert back["metadata/env"] == "hopper"
    with pytest.raises(data.DatasetError, match="already exists"):
        minari_io.export(d, "poe_jax/hopper/test-v0", "hopper", root=tmp_path)


def _collect(root, dataset_id, make_env, episodes=3, steps=30):
    """A small Minari dataset of random actions, written by minari's own DataCollector (no network)."""
    from minari import DataCollector

    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = DataCollector(make_env(), record_infos=False)
            env.action_space.seed(0)
            for ep in range(episodes):
                env.reset(seed=ep)
                for _ in range(steps):
                    *_, term, trunc, _ = env.step(env.action_space.sample())
                    if term or trunc:
                        break
            env.create_dataset(dataset_id=dataset_id, algorithm_name="random")
            return list(minari.load_dataset(dataset_id).iterate_episodes())
    finally:
        mp.undo()


def test_dict_observations_are_flattened_as_d4rl_antmaze(tmp_path, monkeypatch):
    """An AntMaze-style dataset (observation, achieved_goal, desired_goal, as Minari's AntMaze stores them) reads
    as D4RL's AntMaze did: the position (achieved_goal) first, then the rest; the goal apart, as infos/goal; the
    layout on the data."""
    import gymnasium as gym

    class GoalDict(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            box = env.observation_space
            self.observation_space = gym.spaces.Dict({
                "observation": gym.spaces.Box(box.low[2:], box.high[2:], dtype=box.dtype),
                "achieved_goal": gym.spaces.Box(box.low[:2], box.high[:2], dtype=box.dtype),
                "desired_goal": gym.spaces.Box(-np.inf, np.inf, (2,), dtype=box.dtype)})

        def observation(self, obs):
            return {"observation": obs[2:], "achieved_goal": obs[:2], "desired_goal": np.array([1.0, 2.0], obs.dtype)}

    eps = _collect(tmp_path, "test/hopper/dict-v0", lambda: GoalDict(gym.make("Hopper-v5", max_episode_steps=30)))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    d = data.read("minari:test/hopper/dict-v0")
    flat = np.concatenate([np.concatenate([e.observations["achieved_goal"], e.observations["observation"]], 1)[:-1]
                           for e in eps])
    np.testing.assert_array_equal(d["observations"], flat)
    assert d["observations"].shape[1] == 11 and d["metadata/obs_layout"] == "achieved_goal[2] observation[9]"
    np.testing.assert_array_equal(d["infos/goal"], np.tile([1.0, 2.0], (len(flat), 1)))


def test_env_spec_kwargs_are_honoured_or_refused_by_name(tmp_path, monkeypatch):
    import gymnasium as gym

    _collect(tmp_path, "test/hopper/falls-v0",
             lambda: gym.make("Hopper-v5", max_episode_steps=30, terminate_when_unhealthy=False))
    _collect(tmp_path, "test/hopper/costly-v0", lambda: gym.make("Hopper-v5", max_episode_steps=30,
                                                                  ctrl_cost_weight=0.5))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    d = data.read("minari:test/hopper/falls-v0")  # modelled: the env option of the same name
    assert json.loads(d["metadata/env_options"]) == {"max_steps": 30, "terminate_when_unhealthy": False}
    with pytest.raises(data.DatasetError, match=r"env_spec kwarg ctrl_cost_weight=0.5 \(Hopper-v5; Gymnasium's "
                                                r"default 0.001\) is not modelled by poe_jax"):
        data.read("minari:test/hopper/costly-v0")
