"""Training code on tiny data, in seconds: it learns, and what it writes loads."""

from __future__ import annotations

import dataclasses
import json
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poe_jax import checkpoints, data, nets
from poe_jax.data import generate
from poe_jax.train import iql, prior, sac


@pytest.fixture(scope="module")
def tiny(get_env):
    env = get_env("hopper")

    def act(o, k):  # a simple structured behaviour policy: actions depend on the observation
        return jnp.tanh(o[:3] * 2.0) * 0.8 + 0.1 * jax.random.normal(k, (3,))

    d = data.collect(env, act, 2000, 8, jax.random.key(1), max_steps=200)
    return env, d


def _loglik(actor: nets.Actor, q: dict) -> float:
    dist = actor.distribution(jnp.asarray(q["observations"]))
    return float(jnp.mean(dist.log_prob(jnp.asarray(np.clip(q["actions"], -0.999, 0.999)))))


def test_iql_learns_and_its_checkpoint_loads(tiny, tmp_path):
    env, d = tiny
    q = data.qlearning_dataset(d)
    untrained = nets.init_actor(nets.ActorSpec("iql", 11, 3), jax.random.key(0), data.obs_stats(q["observations"]))
    actors, info = iql.train([q, q], 11, 3, iql.IQLConfig(steps=1500, chunk=500, seed=0), log=lambda *_: None)
    assert info["steps"] == 1500 and len(actors) == 2
    assert _loglik(actors[0], q) > _loglik(untrained, q) + 1.0
    assert actors[0].critic is not None and np.isfinite(np.asarray(actors[0].critic.q(q["observations"][:5], q["actions"][:5]))).all()
    path = checkpoints.save(tmp_path / "iql", actors[0], env="hopper", scores=[{"episodes": 0}])
    back = checkpoints.load(path, env="hopper")
    np.testing.assert_array_equal(np.asarray(back.act(q["observations"][:7])), np.asarray(actors[0].act(q["observations"][:7])))


def _interrupt_at(n: int):
    """A log that presses Ctrl-C on its ``n``-th line (the chunk before it has finished)."""
    seen = []

    def log(msg):
        seen.append(msg)
        if len(seen) == n:
            raise KeyboardInterrupt

    return log


def test_iql_resumes_after_ctrl_c_to_the_same_parameters(tiny, tmp_path):
    """Ctrl-C saves the loop's state; the same call again resumes from it and ends bit-exact with an
    uninterrupted run of the same seed. A checkpoint of another config is refused."""
    from poe_jax.train.resume import TrainInterrupted

    env, d = tiny
    q = data.qlearning_dataset(d)
    cfg = iql.IQLConfig(steps=1000, chunk=100, seed=3)
    ref, _ = iql.train([q], 11, 3, cfg, log=lambda *_: None)
    ck = tmp_path / "iql.npz"
    with pytest.raises(TrainInterrupted, match=r"interrupted at step \d+ of 1000; state saved to .*iql.npz"):
        iql.train([q], 11, 3, cfg, log=_interrupt_at(3), checkpoint=ck)
    assert ck.is_file()
    with pytest.raises(ValueError, match="another configuration .differs in config"):
        iql.train([q], 11, 3, dataclasses.replace(cfg, expectile=0.8), log=lambda *_: None, checkpoint=ck)
    with np.load(ck) as z:  # the clock travels with the state: a resumed run reports its whole training time
        first = json.loads(str(z["__meta__"]))["seconds"]
    lines = []
    back, info = iql.train([q], 11, 3, cfg, log=lines.append, checkpoint=ck)
    assert any(f"resuming from {ck} at step " in x and f"after {first:.0f} s of training" in x for x in lines)
    assert info["steps"] == 1000 and not ck.exists() and 0 < first < info["seconds"]
    for a, b in zip(jax.tree_util.tree_leaves((ref[0].params, ref[0].critic.params)),
                    jax.tree_util.tree_leaves((back[0].params, back[0].critic.params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prior_resumes_after_ctrl_c_to_the_same_parameters(tiny, tmp_path):
    from poe_jax.train.resume import TrainInterrupted

    env, d = tiny
    cfg = dataclasses.replace(prior.PriorConfig(), steps=300, v_steps=200, chunk=100, hidden=(32, 32))
    ref, _ = prior.train(env, d, ("G1_speed", "G3_target"), cfg, log=lambda *_: None)
    lines = []

    def log(msg):  # Ctrl-C during the prior's fit, after the value fit finished
        lines.append(msg)
        if msg.startswith("prior step"):
            raise KeyboardInterrupt

    with pytest.raises(TrainInterrupted):
        prior.train(env, d, ("G1_speed", "G3_target"), cfg, log=log, checkpoint_dir=tmp_path)
    back, _ = prior.train(env, d, ("G1_speed", "G3_target"), cfg, log=lambda *_: None, checkpoint_dir=tmp_path)
    for a, b in zip(jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(back.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not list(tmp_path.glob(".*prior-*.npz"))  # cleared once the prior is trained


def test_reward_scale_matches_corl_formula():
    d = {"rewards": np.array([1.0, 1.0, 3.0, 0.5, 0.5]), "terminals": np.array([0, 1, 1, 0, 0]),
         "timeouts": np.array([0, 0, 0, 0, 1])}
    # trajectory returns 2, 3, 1 -> 1000 / (3 - 1)
    assert iql.reward_scale(d) == pytest.approx(500.0)


def test_prior_learns_goal_conditioned_actions(tiny, tmp_path):
    env, d = tiny
    goals = ("G1_speed", "G3_target")
    untrained = nets.init_prior(nets.PriorSpec(11, 3, goals), jax.random.key(0), data.obs_stats(d["observations"]))
    p, info = prior.train(env, d, goals, prior.PriorConfig(steps=1000, v_steps=500, chunk=500, n_params=4),
                          log=lambda *_: None)
    obs = jnp.asarray(d["observations"])
    a = jnp.asarray(np.clip(d["actions"], -1.0, 1.0))

    def loglik(pr, g):
        dist = pr.distribution(obs, g)
        return float(prior.censored_log_prob(dist.mean, dist.std, a, 0.999).mean())

    for g in range(2):
        assert loglik(p, g) > loglik(untrained, g) + 1.0
    # G3 takes its target speed as an input, trained over the data's range: 1 + 4 tasks
    assert [t["goal"] for t in info["tasks"]] == ["G1_speed"] + ["G3_target"] * 4
    (goal, param, lo, hi, default), = p.spec.goal_params
    from poe_jax.envs.goals import goal_params

    assert (goal, param) == ("G3_target", "target_speed") and hi > lo >= 0.0
    assert default == goal_params("G3_target", "hopper")["target_speed"]  # the goal's default, recorded
    assert p.spec.likelihood == "censored"
    # the weights are not uniform (AWR, not behaviour cloning): effective sample fraction < 1
    assert all(0.0 < e < 0.95 for e in info["effective_sample_fraction"])
    path = checkpoints.save(tmp_path / "prior", p, env="hopper")
    back = checkpoints.load(path, env="hopper")
    assert back.spec == p.spec
    np.testing.assert_array_equal(np.asarray(back.distribution(obs[:5], 1, 0.3).mean),
                                  np.asarray(p.distribution(obs[:5], 1, 0.3).mean))


def test_censored_likelihood_keeps_the_std_at_the_bounds():
    """Actions clipped at the bound: the plain density drives the std to its floor, the
    censored likelihood does not (its maximum is at the std of the unclipped draws)."""
    u = 1.2 + 0.3 * jax.random.normal(jax.random.key(0), (4000, 1))  # a Gaussian mostly beyond +1
    a = jnp.clip(u, -1.0, 1.0)
    stds = jnp.linspace(0.01, 1.0, 100)
    cens = jnp.stack([prior.censored_log_prob(jnp.full_like(a, 1.2), jnp.full_like(a, s), a, 0.999).mean() for s in stds])
    plain = jnp.stack([(-0.5 * ((a - 1.0) / s) ** 2 - jnp.log(s)).mean() for s in stds])
    assert abs(float(stds[jnp.argmax(cens)]) - 0.3) < 0.05
    assert float(stds[jnp.argmax(plain)]) < 0.15


def test_returns_to_go_respect_trajectory_ends():
    r = np.array([[1.0], [1.0], [1.0], [1.0]])
    ends = np.array([False, True, False, True])
    np.testing.assert_allclose(prior.returns_to_go(r, ends, 0.5)[:, 0], [1.5, 1.0, 1.5, 1.0])


def test_sac_chunk_runs_and_fills_the_buffer(get_env):
    env = get_env("hopper")
    cfg = sac.SACConfig(steps=200, chunk=100, warmup=50, batch=32, hidden=(32, 32), lanes=2)
    state, chunk = sac.init(env, cfg)
    state = chunk(state)
    assert int(state.step) == 200 and int(state.buffer.size) == 200
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.actor))


def test_sac_critic_lr_drives_the_critics_and_temperature_only(get_env):
    """``critic_lr`` sets the critics' and the temperature's step size apart from the actor's
    ``lr`` (ant's SAC uses 1e-3 / 3e-4): with ``lr=0`` only the actor stays put."""
    env = get_env("hopper")
    cfg = sac.SACConfig(steps=20, chunk=20, warmup=10, batch=16, hidden=(16, 16), lanes=1, lr=0.0, critic_lr=1e-3)
    state, chunk = sac.init(env, cfg)
    new = chunk(jax.tree_util.tree_map(jnp.copy, state))  # chunk donates its argument
    same = lambda a, b: all(np.array_equal(x, y) for x, y in  # noqa: E731
                            zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert same(state.actor, new.actor)
    assert not same(state.critic, new.critic) and float(new.log_alpha) != 0.0
    assert generate.sac_config("ant").critic_lr == 1e-3 and generate.sac_config("hopper").critic_lr is None


def test_sac_replay_ring_keeps_every_transition_in_order(get_env):
    """The buffer is written once per chunk; after the ring wraps twice it holds the last
    ``buffer`` transitions in step order (each lane's next observation is its next row's
    observation unless the episode ended)."""
    env = get_env("hopper")
    cfg = sac.SACConfig(steps=400, chunk=50, warmup=400, batch=32, hidden=(32, 32), lanes=2, buffer=200)
    state, chunk = sac.init(env, cfg)
    for _ in range(4):
        state = chunk(state)
    b = jax.device_get(state.buffer)
    assert int(b.size) == 200 and int(b.ptr) == 0 and int(state.step) == 400
    cont = ~b.term[:-2]
    assert cont.sum() > 150
    np.testing.assert_array_equal(b.next_obs[:-2][cont], b.obs[2:][cont])
    live = ~b.term[-2:]  # the newest rows lead to the envs' current states
    np.testing.assert_array_equal(b.next_obs[-2:][live], np.asarray(state.env_state.obs)[live])


def test_sac_resumes_exactly_from_its_checkpoint(get_env, tmp_path):
    """Stopped after one chunk and resumed, SAC reaches the same state as an uninterrupted run."""
    env = get_env("hopper")
    cfg = sac.SACConfig(steps=400, chunk=50, warmup=50, batch=32, hidden=(32, 32), lanes=2)  # 100 steps a chunk
    quiet = lambda *_: None  # noqa: E731
    full, _ = sac.train(env, cfg, eval_every=200, eval_episodes=2, log=quiet)
    ckpt = tmp_path / "sac-state.npz"
    first, _ = sac.train(env, cfg, eval_every=200, eval_episodes=2, log=quiet, time_budget=0.0, checkpoint=ckpt)
    assert int(first.step) == 100 and ckpt.exists()
    first_seconds = sac.saved_seconds(ckpt)  # the clock travels with the state: a resumed run's time is its total
    lines = []
    resumed, snaps = sac.train(env, cfg, eval_every=200, eval_episodes=2, log=lines.append, checkpoint=ckpt)
    assert lines[0] == f"resumed from {ckpt} at step 100, after {first_seconds:.0f} s of training"
    assert [s["step"] for s in snaps] == [200, 400] and 0 < first_seconds < snaps[0]["seconds"] < snaps[1]["seconds"]
    assert sac.saved_seconds(ckpt) == snaps[1]["seconds"]
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="saved with another SAC config"):
        sac.train(env, dataclasses.replace(cfg, lr=1e-3), log=quiet, checkpoint=ckpt)
    assert int(resumed.step) == 400
    # Ctrl-C (here: on the first progress line, after chunk 1) saves the state too, and resumes exactly
    from poe_jax.train.resume import TrainInterrupted

    ckpt.unlink()

    def ctrl_c(msg):
        if " of 400" in msg:
            raise KeyboardInterrupt

    with pytest.raises(TrainInterrupted, match="interrupted at step 100 of 400; state saved to"):
        sac.train(env, cfg, eval_every=200, eval_episodes=2, log=ctrl_c, checkpoint=ckpt)
    again, _ = sac.train(env, cfg, eval_every=200, eval_episodes=2, log=quiet, checkpoint=ckpt)
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(again)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("algo, alpha, factor", [
    ("bc", None, 0.5),
    ("td3_bc", 0.0, 0.5),  # alpha 0: only the BC term, through TD3+BC's loop (delayed actor updates)
    # CORL's alpha 2.5: on 2,000 transitions the young critic's gradient pulls the actor off the data
    # (MSE 0.20 after 1,000 steps, 0.29 after 2,000, against 0.40 untrained and 0.01 for BC); the BC
    # term still keeps it nearer the behaviour than an untrained actor
    ("td3_bc", None, 1.0),
])
def test_bc_and_td3bc_learn_the_behaviour(tiny, algo, alpha, factor):
    from poe_jax.train import bc

    _, d = tiny
    q = data.qlearning_dataset(d)
    cfg = bc.BCConfig(algo=algo, steps=1000, chunk=500, batch=128)
    if alpha is not None:
        cfg = dataclasses.replace(cfg, alpha=alpha)
    untrained = nets.init_actor(nets.ActorSpec(algo, 11, 3), jax.random.key(0), data.obs_stats(q["observations"]))
    (actor,), info = bc.train([q], 11, 3, cfg, log=lambda *_: None)
    err = lambda a: float(np.mean((np.asarray(a.act(q["observations"])) - q["actions"]) ** 2))  # noqa: E731
    assert info["steps"] == 1000 and actor.spec.algo == algo
    assert err(actor) < factor * err(untrained)


def test_cli_trains_from_a_d4rl_file(tiny, tmp_path):
    from poe_jax.cli import main

    _, d = tiny
    data.write(tmp_path / "hopper-tiny.hdf5", d)
    assert main(["train", "bc", "--env", "hopper", "--dataset", str(tmp_path / "hopper-tiny.hdf5"), "--out",
                 str(tmp_path / "ck"), "--steps", "500"]) == 0
    card = checkpoints.read_card(tmp_path / "ck" / "hopper-tiny-bc")
    assert card["algo"] == "bc" and card["scores"][0]["episodes"] == 20 and card["dataset"] == "hopper-tiny"
    assert checkpoints.load(tmp_path / "ck" / "hopper-tiny-bc", env="hopper").spec.algo == "bc"
    log = (tmp_path / "ck" / "hopper-bc.log").read_text()  # the run's log is kept next to its checkpoints
    assert "train bc on" in log and "hopper-tiny: bc normalized score" in log
