"""Batched rollouts: masking, early stop, skipped lanes, determinism, no recompiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poe_jax.grid import rollout
from poe_jax.envs import goal_names, make_goal

W = 0.5 * jax.random.normal(jax.random.key(0), (11, 3))


def policy(obs, key):
    a = jnp.tanh(obs @ W) + 0.3 * jax.random.normal(key, (3,))
    return a, {"a2": jnp.sum(a * a)}


@pytest.fixture(scope="module")
def hopper_run(get_env):
    env = get_env("hopper")
    goal = make_goal("G1_speed", "hopper")
    traces = []

    def run(keys):
        traces.append(1)
        return rollout.rollout(env, policy, keys, max_steps=200, goal=goal)

    return env, jax.jit(run), traces


def test_totals_match_a_manual_loop_and_stop_at_termination(hopper_run):
    env, run, _ = hopper_run
    keys = jax.random.split(jax.random.key(1), 6)
    ep = run(keys)
    step = jax.jit(env.step)
    for i in range(3):
        k = keys[i]
        s = env.reset(jax.random.fold_in(k, 0))
        ret, goal_ret, n = 0.0, 0.0, 0
        for t in range(200):
            a, _ = policy(s.obs, jax.random.fold_in(k, t + 1))
            s2 = step(s, a)
            ret += float(s2.reward)
            goal_ret += max(float(s2.metrics["x_velocity"]), 0.0)  # G1_speed: clip(v, 0, v_max)
            n += 1
            s = s2
            if bool(s.done):
                break
        assert int(ep.length[i]) == n
        assert bool(ep.terminated[i]) == bool(s.terminated)
        np.testing.assert_allclose(float(ep.return_task[i]), ret, rtol=1e-5)
        np.testing.assert_allclose(float(ep.return_goal[i]), goal_ret, rtol=1e-5, atol=1e-5)
    assert set(ep.metrics) == {"a2"}


def test_new_keys_compile_nothing_and_lanes_are_independent(hopper_run):
    _, run, traces = hopper_run
    k = jax.random.split(jax.random.key(2), 4)
    a = run(k)
    traced, cached = len(traces), run._cache_size()
    b = run(jnp.stack([k[0], k[1], *jax.random.split(jax.random.key(3), 2)]))
    assert len(traces) == traced and run._cache_size() == cached  # same shape: no retrace
    # A lane's episode depends only on its own key.
    np.testing.assert_array_equal(a.return_task[:2], b.return_task[:2])
    assert not np.array_equal(a.return_task[2:], b.return_task[2:])


def test_native_skips_finished_lanes_and_stops_early(get_env):
    env = get_env("hopper")
    phys = env.physics
    simulated = []
    original = phys.step_host

    def counting(qpos, qvel, ctrl, active=None, scales=None):
        simulated.append(int(np.sum(active)) if active is not None else qpos.shape[0])
        return original(qpos, qvel, ctrl, active, scales)

    phys.step_host = counting
    try:
        # A policy that pushes hard: every lane falls long before the horizon.
        push = rollout.deterministic(lambda obs: jnp.array([1.0, -1.0, 1.0]))
        ep = jax.jit(lambda k: rollout.rollout(env, push, k, max_steps=1000))(jax.random.split(jax.random.key(4), 8))
    finally:
        phys.step_host = original
    lengths = np.asarray(ep.length)
    assert lengths.max() < 1000 and bool(jnp.all(ep.terminated))
    # Only live lanes were simulated, and the loop stopped when the last one fell.
    assert sum(simulated) == lengths.sum()
    assert len(simulated) == lengths.max()


def test_goals():
    assert goal_names("hopper") == ("G1_speed", "G2_balanced", "G3_target")
    assert goal_names("antmaze-umaze") == ("G1_speed", "G2_balanced", "G3_target", "G4_reach")
    with pytest.raises(KeyError, match="unknown goal 'G4'; known goals: G1_speed, G2_balanced, G3_target, G4_reach"):
        make_goal("G4", "hopper")
    with pytest.raises(ValueError, match="goal 'G4_reach' does not apply to env 'hopper'; it applies to the envs that "
                                         "publish success: antmaze-umaze, antmaze-medium"):
        make_goal("G4_reach", "hopper")
    with pytest.raises(ValueError, match=r"goal 'G3_target' has no parameter\(s\) \['speed'\]"):
        make_goal("G3_target", "hopper", speed=1.0)
    assert make_goal("G3_target", "halfcheetah").params["target_speed"] == 3.0
    assert make_goal("G3_target", "hopper", target_speed=1.5).params["target_speed"] == 1.5


def test_goal_formulas(get_env):
    env = get_env("hopper")
    s = env.reset(jax.random.key(0))
    a = jnp.array([0.5, -0.5, 0.1])
    s2 = env.step(s, a)
    v = float(s2.metrics["x_velocity"])
    tilt = float(s2.q.qpos[2])
    np.testing.assert_allclose(float(make_goal("G1_speed", "hopper")(s, a, s2)), max(v, 0.0), rtol=1e-6)
    g2 = make_goal("G2_balanced", "hopper", ctrl_weight=0.2, upright_weight=3.0)
    np.testing.assert_allclose(float(g2(s, a, s2)), max(v, 0.0) * np.exp(-0.2 * 0.51 - 3.0 * tilt**2), rtol=1e-5)
    np.testing.assert_allclose(float(make_goal("G3_target", "hopper")(s, a, s2)),
                               np.exp(-0.5 * ((v - 1.2) / 0.5) ** 2), rtol=1e-5)
    # the target kernel peaks (1) at the target and a traced override replaces the parameter
    g3 = make_goal("G3_target", "hopper", target_speed=v)
    np.testing.assert_allclose(float(g3(s, a, s2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(lambda t: g3(s, a, s2, target_speed=t))(v + 0.5)), np.exp(-0.5), rtol=1e-5)
    # Ant tilt: an upright torso has tilt 0.
    ant = get_env("ant")
    sa = ant.reset_to(ant.init_qpos, ant.init_qvel)
    sa2 = ant.step(sa, jnp.zeros(8))
    g = make_goal("G2_balanced", "ant", ctrl_weight=0.0)
    assert abs(float(g(sa, jnp.zeros(8), sa2)) - max(float(sa2.metrics["x_velocity"]), 0.0)) < 1e-3
    # the env publishes the tilt goals read: the planar walkers' pitch, the Ant torso's z-axis angle
    assert float(s2.metrics["tilt"]) == float(s2.q.qpos[2])
    q = np.asarray(ant.init_qpos, np.float64).copy()
    q[3:7] = [np.cos(0.15), np.sin(0.15), 0.0, 0.0]  # torso rolled by 0.3 rad about x
    np.testing.assert_allclose(float(ant.reset_to(q, ant.init_qvel).metrics["tilt"]), 0.3, rtol=1e-4)


def test_goals_never_pay_for_falling(get_env):
    """Every goal's live-step reward lies in its documented range (>= 0), over random-action
    episodes that fall; the absorbing state after termination adds nothing to the return."""
    env = get_env("hopper")
    goals = [make_goal(g, "hopper") for g in goal_names("hopper")]
    for g in goals:
        lo, hi = g.bounds
        assert lo >= 0 and np.isfinite(hi)
    keys = jax.random.split(jax.random.key(3), 64)

    def policy(obs, key):
        return jax.random.uniform(key, (env.act_size,), minval=-1.0, maxval=1.0), {}

    for g in goals:
        ep = jax.jit(lambda k, g=g: rollout.rollout(env, policy, k, max_steps=300, goal=g))(keys)
        assert bool(jnp.all(ep.terminated))  # random actions fall
        lo, hi = g.bounds
        assert float(ep.max_abs_goal.max()) <= hi
        assert float(ep.return_goal.min()) >= 0.0
        # absorbing value 0: the return is bounded by the live steps
        assert bool(jnp.all(ep.return_goal <= hi * ep.length + 1e-4))


def test_discounted_goal_return_and_max_abs_reward(get_env):
    env = get_env("hopper")
    zero = rollout.deterministic(lambda obs: jnp.zeros(env.act_size))
    ramp = lambda s, a, n: n.step.astype(jnp.float32) - 4.0  # noqa: E731  rewards -3, -2, ..., 6
    ep = jax.jit(lambda k: rollout.rollout(env, zero, k, max_steps=10, goal=ramp, gamma=0.9))(
        jax.random.split(jax.random.key(0), 2))
    expected = sum(0.9**t * (t + 1 - 4.0) for t in range(10))
    np.testing.assert_allclose(ep.discounted_goal, expected, rtol=1e-5)
    np.testing.assert_allclose(ep.return_goal, sum(t + 1 - 4.0 for t in range(10)))
    np.testing.assert_array_equal(ep.max_abs_goal, 6.0)


def test_lanes_in_blocks_gives_a_lane_the_same_bits_beside_any_number_of_lanes():
    """The grid programs' policy evaluation on the native backend: a lane's output is bit-equal whatever the
    number of lanes in the call (padding included), and equals plain vmap's to rounding. A one-batch vmap does
    not promise the first (XLA's CPU matrix products can round a row differently with the row count)."""
    k = jax.random.split(jax.random.key(1), 4)
    w1, w2 = jax.random.normal(k[0], (11, 256)) / 4, jax.random.normal(k[1], (256, 3)) / 16

    def pi(obs, key):
        h = jnp.tanh(obs @ w1)
        return jnp.tanh(h @ w2) + 0.1 * jax.random.normal(key, (3,)), {"h": h.sum()}

    obs = jax.random.normal(k[2], (100, 11))
    keys = jax.random.split(k[3], 100)
    blocked = jax.jit(lambda o, kk: rollout.lanes_in_blocks(pi, 8)(o, kk))
    ref = jax.device_get(blocked(obs[:8], keys[:8]))
    for n in (1, 3, 8, 9, 64, 100):
        got = jax.device_get(blocked(obs[:n], keys[:n]))
        assert got[0].shape == (n, 3) and got[1]["h"].shape == (n,)
        m = min(n, 8)
        np.testing.assert_array_equal(got[0][:m], ref[0][:m])
        np.testing.assert_array_equal(got[1]["h"][:m], ref[1]["h"][:m])
        plain = jax.device_get(jax.vmap(pi)(obs[:n], keys[:n]))
        np.testing.assert_allclose(got[0], plain[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(jax.device_get(rollout.lanes_in_blocks(pi, None)(obs[:4], keys[:4]))[0],  # None: vmap
                                  jax.device_get(jax.vmap(pi)(obs[:4], keys[:4]))[0])
