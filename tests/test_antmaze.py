"""AntMaze: D4RL's mazes and ant, per-episode goals from the key, the success metric, both backends."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poe_jax import envs
from poe_jax.envs import antmaze
from poe_jax.envs.antmaze import MAZES, SCALING


@pytest.fixture(scope="module")
def umaze():
    return envs.make("antmaze-umaze", backend="native")


def test_model_and_sizes(umaze):
    assert envs.names()[-2:] == ("antmaze-umaze", "antmaze-medium")
    m = umaze.model
    assert (umaze.obs_size, umaze.act_size, umaze.max_steps) == (29, 8, 700)
    assert m.opt.timestep == 0.02 and umaze.dt == pytest.approx(0.1)
    np.testing.assert_array_equal(m.actuator_ctrlrange, np.tile([-30.0, 30.0], (8, 1)))
    np.testing.assert_array_equal(m.actuator_gear[:, 0], 1.0)
    walls = [m.geom(i).name for i in range(m.ngeom) if m.geom(i).name.startswith("block_")]
    assert len(walls) == 18  # U-maze: 16 border cells + 2 inner
    # The reset cell is the origin; the wall right below it (row 2, col 1) is centred 4 m away.
    np.testing.assert_allclose(m.geom("block_2_1").pos, [0.0, 4.0, 1.0])
    np.testing.assert_allclose(m.geom("block_2_1").size, [2.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="terminate_when_unhealthy does not apply"):
        envs.make("antmaze-umaze", terminate_when_unhealthy=True)
    medium = envs.make("antmaze-medium", backend="native")
    assert medium.max_steps == 1000 and medium.obs_size == 29
    np.testing.assert_allclose(antmaze.goal_cell_xy("antmaze-medium"), [20.0, 20.0])


def test_goals_are_drawn_per_episode_from_the_key(umaze):
    keys = jax.random.split(jax.random.key(3), 64)
    goals = np.asarray(jax.vmap(umaze.reset)(keys).metrics["goal"])
    again = np.asarray(jax.vmap(umaze.reset)(keys).metrics["goal"])
    np.testing.assert_array_equal(goals, again)  # reproducible from the seeds
    assert len(np.unique(goals[:, 0])) == 64  # different per episode
    # D4RL's goal_sampler: goal cell corner (0, 8) + U(0, 1) + U(0, 0.5) per axis.
    assert np.all(goals >= [0.0, 8.0]) and np.all(goals <= [1.5, 9.5])
    assert goals[:, 0].mean() == pytest.approx(0.75, abs=0.12)


def test_success_on_scripted_trajectories(umaze):
    env = envs.make("antmaze-umaze", backend="native", max_steps=5)
    start = env.reset(jax.random.key(0))
    goal = start.metrics["goal"]
    qpos = np.asarray(env.init_qpos).copy()
    # Teleported next to the goal: success at the first step, reward 1, terminated (not truncated).
    qpos[:2] = np.asarray(goal) + [0.1, -0.1]
    s = env.reset_to(qpos, np.zeros(env.nv), goal=goal)
    s1 = jax.jit(env.step)(s, jnp.zeros(8))
    assert float(s1.reward) == 1.0 and bool(s1.terminated) and bool(s1.done) and not bool(s1.truncated)
    assert float(s1.metrics["success"]) == 1.0
    # Standing still at the start: no success, 0 reward, truncated at max_steps.
    from poe_jax.grid import rollout

    ep = jax.jit(lambda k: rollout.rollout(env, rollout.deterministic(lambda o: jnp.zeros(8)), k))(
        jax.random.split(jax.random.key(1), 3))
    np.testing.assert_array_equal(ep.return_task, 0.0)
    assert not bool(jnp.any(ep.terminated)) and bool(jnp.all(ep.final.truncated)) and int(ep.length[0]) == 5
    # A scripted walk that ends at the goal: the episode stops there with return 1.
    far = np.asarray(env.init_qpos).copy()
    far[:2] = np.asarray(goal) + [0.45, 0.0]  # just inside the 0.5 radius after settling
    s = env.reset_to(far, np.zeros(env.nv), goal=goal)
    assert float(jax.jit(env.step)(s, jnp.zeros(8)).metrics["success"]) == 1.0
    far[:2] = np.asarray(goal) + [0.7, 0.0]
    s = env.reset_to(far, np.zeros(env.nv), goal=goal)
    assert float(jax.jit(env.step)(s, jnp.zeros(8)).metrics["success"]) == 0.0


def test_walls_stop_the_ant(umaze):
    """Pushed towards the wall below the start cell (its face at y = 2), the torso stays short of it."""
    qpos = np.asarray(umaze.init_qpos).copy()
    qpos[1] = 1.2
    qvel = np.zeros(umaze.nv)
    qvel[1] = 8.0  # 8 m/s towards +y
    s = umaze.reset_to(qpos, qvel)
    step = jax.jit(umaze.step)
    ys = []
    for _ in range(10):
        s = step(s, jnp.zeros(8))
        ys.append(float(s.q.qpos[1]))
    assert max(ys) < 2.0 - 0.2  # the torso (radius 0.25) never enters the wall


def test_one_step_transitions_agree_between_backends(umaze):
    mjx_env = envs.make("antmaze-umaze", backend="mjx")
    keys = jax.random.split(jax.random.key(5), 16)
    s = jax.vmap(umaze.reset)(keys)
    actions = 30.0 * jax.random.uniform(jax.random.key(6), (16, 8), minval=-1, maxval=1)
    # Move a few steps first so that legs touch the floor.
    step_n = jax.jit(jax.vmap(umaze.step))
    for _ in range(3):
        s = step_n(s, actions)
    qpos, qvel = s.q.to_float64()
    goal = np.asarray(s.metrics["goal"])
    a = step_n(umaze.reset_to_batch(qpos, qvel).replace(metrics=s.metrics), actions)
    m = jax.vmap(mjx_env.step)(jax.vmap(mjx_env.reset_to)(jnp.asarray(qpos, jnp.float32),
                                                            jnp.asarray(qvel, jnp.float32), jnp.asarray(goal)), actions)
    # float32 MJX vs float64 MuJoCo C over one 0.1 s control step (5 RK4 steps of 0.02 s with
    # foot contacts): positions within 1 cm / 0.01 rad; velocities within 0.3 + 5% for >= 99% of
    # the entries (a contact that activates in one precision and not the other flips a few).
    np.testing.assert_allclose(m.obs[:, :15], a.obs[:, :15], atol=1e-2)
    vel_m, vel_a = np.asarray(m.obs[:, 15:]), np.asarray(a.obs[:, 15:])
    assert np.isclose(vel_m, vel_a, atol=0.3, rtol=0.05).mean() >= 0.99
    assert np.median(np.abs(vel_m - vel_a)) < 0.02
    np.testing.assert_allclose(m.metrics["distance"], a.metrics["distance"], atol=1e-2)
    np.testing.assert_array_equal(np.asarray(m.terminated), np.asarray(a.terminated))


def test_grid_reports_success_rate(tmp_path):
    """A grid on AntMaze records success (goal reached) per episode."""
    from poe_jax import checkpoints, grid, nets

    actor = nets.init_actor(nets.ActorSpec("bc", 29, 8, max_action=30.0), jax.random.key(0))
    prior = nets.init_prior(nets.PriorSpec(29, 8, ("G1_speed",), max_action=30.0), jax.random.key(1))
    checkpoints.save(tmp_path / "actor", actor, env="antmaze-umaze")
    checkpoints.save(tmp_path / "prior", prior, env="antmaze-umaze")
    spec = grid.load_spec({"env": "antmaze-umaze", "actor": str(tmp_path / "actor"), "prior": str(tmp_path / "prior"),
                           "rules": {"frozen": [], "poe": [0.5]}, "seeds": [0], "episodes": 2, "max_steps": 5,
                           "backend": "native"})
    df = grid.read_episodes(grid.run(spec, tmp_path / "run", progress=False).out)
    assert df["success"].dtype == "boolean" and not df["success"].any()  # 5 steps cannot reach the goal
    assert (df["success"] == df["terminated"]).all()
    from poe_jax.analysis.report import write_report

    text = write_report(tmp_path / "run").read_text()
    assert "## Success rate (AntMaze" in text and "| antmaze-umaze | G1_speed | trained | none | poe | 0.5 | 2 | 0.00 |" in text


def test_scripted_navigator_and_its_dataset(tmp_path):
    """The navigator behind the AntMaze datasets reaches the U-maze goal; its D4RL-format file
    carries infos/goal and replays through the env."""
    from poe_jax import data
    from poe_jax.data import antmaze as am

    env = envs.make("antmaze-umaze", backend="native")
    nav = am.navigator(env, noise=0.0, p_random=0.0)

    @jax.jit
    def run(keys):
        def body(c, k):
            s, hit = c
            s = jax.vmap(env.step)(s, jax.vmap(nav)(s, jax.random.split(k, keys.shape[0])))
            return (s, hit | s.terminated), None
        s0 = jax.vmap(env.reset)(keys)
        return jax.lax.scan(body, (s0, jnp.zeros(keys.shape[0], bool)), jax.random.split(keys[0], 500))[0][1]

    assert float(jnp.mean(run(jax.random.split(jax.random.key(0), 8)))) >= 0.75
    path = am.generate("antmaze-umaze", tmp_path, size=1000, lanes=4, seed=1, log=lambda *_: None)
    d = data.read(path)
    assert d["observations"].shape == (1000, 29) and d["infos/goal"].shape == (1000, 2)
    assert np.all(np.abs(d["actions"]) <= 30.0)
    check = data.replay_check(env, d, rows=200)
    assert check["obs_max_err"] < 1e-5 and check["next_obs_within_tol"] == 1.0 and check["reward_within_tol"] == 1.0


def test_diverse_data_start_anywhere_and_go_to_random_goals(tmp_path):
    """D4RL's diverse recipe: episodes start in random free cells and the navigator heads for random goals,
    so the data cover the maze; the stored transitions replay exactly in the maze itself."""
    from poe_jax import data
    from poe_jax.data import antmaze as am

    rows, _ = MAZES["antmaze-medium"]
    origin = next((i, j) for i, r in enumerate(rows) for j, c in enumerate(r) if c == "R")
    env = am.DiverseMaze("antmaze-medium")
    starts = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 64))
    cells = {tuple(c) for c in np.round(np.asarray(starts.q.qpos[:, :2]) / SCALING).astype(int)}
    assert len(cells) >= 15  # of the medium maze's 27 free cells
    for x, y in cells:
        assert rows[y + origin[0]][x + origin[1]] != "#"  # never inside a wall
    nav = np.asarray(starts.metrics["nav_goal"])
    assert len({tuple(c) for c in np.round(nav / SCALING).astype(int)}) >= 15
    np.testing.assert_array_equal(np.asarray(starts.metrics["goal"]).shape, (64, 2))  # the evaluation goal stays
    path = am.generate_diverse("antmaze-medium", tmp_path, size=3000, lanes=3, seed=1, log=lambda *_: None)
    d = data.read(path)
    assert path.name == "antmaze-medium-diverse.hdf5" and d["observations"].shape == (3000, 29)
    visited = {tuple(c) for c in np.round(d["observations"][:, :2] / SCALING).astype(int)}
    assert len(visited) >= 6  # three lanes of one episode each already roam over several cells
    check = data.replay_check(envs.make("antmaze-medium", backend="native"), d, rows=200)
    assert check["obs_max_err"] < 1e-5 and check["next_obs_within_tol"] == 1.0 and check["reward_within_tol"] == 1.0
