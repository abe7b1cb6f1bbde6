"""Environments against Gymnasium v4 (the physics reference), on both backends."""

import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poe_jax import envs
from poe_jax.physics import native
from poe_jax.physics.base import split64

GYM_IDS = {"hopper": "Hopper-v4", "halfcheetah": "HalfCheetah-v4", "walker2d": "Walker2d-v4", "ant": "Ant-v4",
           "hopper-v5": "Hopper-v5", "halfcheetah-v5": "HalfCheetah-v5", "walker2d-v5": "Walker2d-v5", "ant-v5": "Ant-v5"}
GYM_OBS = {"hopper": 11, "halfcheetah": 17, "walker2d": 17, "ant": 27, "hopper-v5": 11, "halfcheetah-v5": 17,
           "walker2d-v5": 17, "ant-v5": 105}
V5 = ("hopper-v5", "halfcheetah-v5", "walker2d-v5", "ant-v5")


def gym_env(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gymnasium.make(GYM_IDS[name])


def gym_transitions(name, n=240, seed=0):
    """(qpos, qvel, action, obs', reward, terminated, x_velocity, x_before) along Gymnasium trajectories.

    ``x_before``: the torso's x in ``xpos`` before the step, which Gymnasium's Ant measures its
    velocity from (the previous step's last RK4 stage, or the reset's ``qpos``).

    Random and small (x0.1) actions, across resets, so both healthy and
    terminating transitions appear.
    """
    env = gym_env(name)
    u = env.unwrapped
    rng = np.random.default_rng(seed)
    rows = []
    env.reset(seed=seed)
    scale = 1.0
    while len(rows) < n:
        qpos, qvel, x_before = u.data.qpos.copy(), u.data.qvel.copy(), u.data.xpos[1, 0]
        action = scale * rng.uniform(-1, 1, env.action_space.shape)
        obs, reward, term, trunc, info = env.step(action)
        rows.append((qpos, qvel, action, obs, reward, term, info["x_velocity"], x_before))
        if term or trunc or rng.uniform() < 0.02:
            env.reset(seed=int(rng.integers(1 << 30)))
            scale = 1.0 if scale < 1 else 0.1
    env.close()
    return [np.array(c) for c in zip(*rows)]


@pytest.mark.parametrize("name", envs.locomotion_names() + V5)
def test_one_step_parity_with_gymnasium_native(name, get_env):
    qpos, qvel, action, obs, reward, term, x_vel, x_before = gym_transitions(name)
    if not name.startswith("halfcheetah"):  # the only env without a termination rule
        assert term.any() and not term.all(), "the sample should mix terminal and live steps"
    env = get_env(name)
    start = env.reset_to_batch(qpos, qvel)
    if name.startswith("ant"):  # mid-trajectory, Gymnasium's "before" x is the last step's stale xpos
        hi, lo = split64(x_before[:, None])
        start = start.replace(q=start.q.replace(xbody=jnp.asarray(hi), xbody_lo=jnp.asarray(lo)))
    nxt = jax.jit(jax.vmap(env.step))(start, jnp.asarray(action, jnp.float32))
    ours = np.asarray(nxt.obs)
    np.testing.assert_allclose(ours[:, : GYM_OBS[name]], obs, rtol=1e-4, atol=1e-5)
    if name == "ant":
        assert ours.shape[1] == 111 and not ours[:, 27:].any()
    if name == "ant-v5":  # the contact forces are observed and paid for: the sample must exercise them
        assert ours.shape[1] == 105 and (np.abs(obs[:, 27:]) == 1).any() and (nxt.metrics["contact_cost"] > 0).mean() > 0.3
    # Ant included: its forward velocity is Gymnasium's, from the torso's xpos (the last RK4 stage)
    np.testing.assert_allclose(np.asarray(nxt.metrics["x_velocity"]), x_vel, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(nxt.reward), reward, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(nxt.terminated), term)


def test_ant_velocity_carries_xpos_along_a_trajectory(get_env):
    """Over consecutive steps (no reset in between) Gymnasium's "before" x is the previous step's
    stale xpos, not qpos; the state carries it, so 30 steps in a row match Gymnasium's rewards."""
    env_g = gym_env("ant")
    env_g.reset(seed=3)
    u = env_g.unwrapped
    state = get_env("ant").reset_to(u.data.qpos.copy(), u.data.qvel.copy())
    step = jax.jit(get_env("ant").step)
    rng = np.random.default_rng(1)
    ours, theirs = [], []
    for _ in range(30):
        a = 0.3 * rng.uniform(-1, 1, 8)
        _, r, term, _, info = env_g.step(a)
        state = step(state, jnp.asarray(a, jnp.float32))
        ours.append(float(state.metrics["x_velocity"]))
        theirs.append(info["x_velocity"])
        assert not term
    env_g.close()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", envs.locomotion_names())
def test_initial_state_distribution_matches_gymnasium(name, get_env):
    n = 1000
    g = gym_env(name)
    theirs = np.stack([g.reset(seed=i)[0] for i in range(n)])
    env = get_env(name)
    ours = np.asarray(jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(7), n)).obs)
    ours = ours[:, : GYM_OBS[name]]
    sd = theirs.std(0)
    # Means within 5 standard errors of the difference (per dim).
    se = np.sqrt(sd**2 / n + ours.std(0) ** 2 / n) + 1e-12
    assert np.all(np.abs(ours.mean(0) - theirs.mean(0)) <= 5 * se)
    # Standard deviations within 15% (sampling error of an sd at n=1000 is ~2.2%).
    varying = sd > 1e-9
    np.testing.assert_allclose(ours.std(0)[varying], sd[varying], rtol=0.15)


def test_make_errors_and_names():
    assert envs.names() == ("hopper", "halfcheetah", "walker2d", "ant", *V5, "antmaze-umaze", "antmaze-medium")
    assert envs.locomotion_names() == ("hopper", "halfcheetah", "walker2d", "ant")
    with pytest.raises(KeyError, match="unknown env 'hoper'; known envs: hopper, halfcheetah"):
        envs.make("hoper")
    with pytest.raises(ValueError, match="unknown backend 'gpu'; known backends: auto, native, mjx"):
        envs.make("hopper", backend="gpu")
    with pytest.raises(ValueError, match="max_steps: must be an integer >= 1"):
        envs.make("hopper", max_steps=0)


def test_sizes_from_eval_shape_and_auto_backend(get_env):
    env = get_env("ant")
    assert env.obs_size == 111 and env.act_size == 8
    assert envs.make("hopper", backend="auto").backend == "native"  # no accelerator in CI


def test_vmap_jit_reset_to_and_done_lanes_are_frozen(get_env):
    env = get_env("hopper")
    qpos = np.tile(env.init_qpos, (3, 1))
    qpos[2, 1] = 0.5  # too low: unhealthy after one step
    qvel = np.zeros((3, env.nv))
    s = jax.jit(jax.vmap(env.reset_to))(jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32))
    step = jax.jit(jax.vmap(env.step))
    s1 = step(s, jnp.zeros((3, 3)))
    assert list(np.asarray(s1.terminated)) == [False, False, True]
    s2 = step(s1, jnp.ones((3, 3)))
    # The done lane is unchanged and earns nothing; live lanes move on.
    np.testing.assert_array_equal(s2.q.qpos[2], s1.q.qpos[2])
    assert float(s2.reward[2]) == 0.0 and int(s2.step[2]) == 1
    assert int(s2.step[0]) == 2
    # Out-of-range actions are clipped to the actuator range.
    a = jnp.full((3, 3), 5.0)
    np.testing.assert_allclose(step(s, a).obs, step(s, jnp.ones((3, 3))).obs)
    with pytest.raises(ValueError, match="qpos must have 6 entries"):
        env.reset_to(np.zeros(5), np.zeros(6))


def test_truncation_is_not_termination():
    env = envs.make("halfcheetah", backend="native", max_steps=3)
    s = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    for _ in range(3):
        s = step(s, jnp.zeros(6))
    assert bool(s.truncated) and bool(s.done) and not bool(s.terminated)


def test_float64_state_survives_the_round_trip(get_env):
    env = get_env("hopper")
    qpos = env.init_qpos + np.random.default_rng(0).uniform(-5e-3, 5e-3, env.nq)
    qvel = np.random.default_rng(1).uniform(-5e-3, 5e-3, env.nv)
    s = env.reset_to_batch(qpos[None], qvel[None])
    p, v = s.q.to_float64()
    np.testing.assert_allclose(p[0], qpos, rtol=0, atol=1e-13)
    np.testing.assert_allclose(v[0], qvel, rtol=0, atol=1e-13)


@pytest.mark.skipif(native.mj_batch is None, reason="mujoco.batch needs MuJoCo >= 4")
@pytest.mark.parametrize("name", ["hopper", "ant"])
def test_native_steppers_agree_bit_for_bit(name, get_env):
    """mujoco.batch (default) and mujoco.rollout step the same lanes to the same bits,
    with inactive lanes untouched and batches that grow and shrink between calls."""
    m = get_env(name).model
    fs = envs.make(name, backend="native").spec.frame_skip
    by_batch = native.NativePhysics(m, fs, nthread=2, stepper="batch")
    by_rollout = native.NativePhysics(m, fs, nthread=2, stepper="rollout")
    qpos0, qvel0, actions, *_ = gym_transitions(name, n=40)
    for lanes, shifted in ((8, False), (40, True), (5, False), (8, True)):
        qpos, qvel, ctrl = qpos0[:lanes], qvel0[:lanes], actions[:lanes]
        active = np.arange(lanes) % 3 != 1
        scales = np.ones((lanes, 2))
        if shifted:  # per-lane body-mass and friction scales
            scales[::2, 0], scales[1::3, 1] = 1.7, 0.4
        a = by_batch.step_host(qpos, qvel, ctrl, active, scales)
        b = by_rollout.step_host(qpos, qvel, ctrl, active, scales)
        for x, y, x0 in zip(a, b, (qpos, qvel)):
            np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(x[~active], x0[~active])
            assert not np.array_equal(x[active], x0[active])
    with pytest.raises(ValueError, match="unknown native stepper 'threads'"):
        native.NativePhysics(m, fs, stepper="threads")


def test_model_shift_scales():
    """Body-mass and friction scales per lane: 1.0 is the nominal model bit for bit (also on rows
    that were shifted before), both steppers agree, and a heavier cheetah covers less ground under
    the same actions."""
    from poe_jax import checkpoints, grid

    env = envs.make("halfcheetah", backend="native")
    actor = checkpoints.load(grid.resolve_checkpoint("zoo:halfcheetah-medium-iql"), env="halfcheetah")
    n, steps = 4, 150
    s0 = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), n))

    @jax.jit
    def closed_loop(s):
        def body(s, _):
            a = actor.act(s.obs)
            return jax.vmap(env.step)(s, a), a
        return jax.lax.scan(body, s, None, length=steps)

    @jax.jit
    def open_loop(s, actions):
        def body(s, a):
            s = jax.vmap(env.step)(s, a)
            return s, s.q.qpos[:, 0]
        return jax.lax.scan(body, s, actions)

    nominal, actions = closed_loop(s0)
    masses = jnp.array([1.0, 1.5, 2.0, 1.0], jnp.float32)
    shifted = s0.replace(scales=jnp.stack([masses, jnp.ones(n)], axis=1))
    final, x = open_loop(shifted, actions)
    # Lanes 0 and 3 (scale 1) reproduce the nominal run exactly, next to shifted lanes.
    for i in (0, 3):
        np.testing.assert_array_equal(final.q.qpos[i], nominal.q.qpos[i])
    dist = np.asarray(x[-1] - x[0])
    assert dist[0] > 5.0 and dist[0] > dist[1] > dist[2], dist  # heavier -> slower
    # Back to scale 1 on rows that were shifted: still nominal bits.
    again, _ = open_loop(s0, actions)
    np.testing.assert_array_equal(again.q.qpos, nominal.q.qpos)
    # Friction: a near-frictionless floor changes the motion.
    slippery, xs = open_loop(s0.replace(scales=jnp.tile(jnp.array([1.0, 0.05]), (n, 1))), actions)
    assert not np.allclose(np.asarray(xs[-1]), np.asarray(x[-1]))


def test_models_load_without_the_deprecated_settotalmass_and_equal_mujocos_own():
    """half_cheetah.xml's settotalmass is applied with mj_setTotalmass + mj_setConst: the model is the
    one MuJoCo compiles from the file, every numeric field equal."""
    import mujoco

    from poe_jax.envs.base import gymnasium_asset, load_model

    ours, ref = load_model("half_cheetah.xml"), mujoco.MjModel.from_xml_path(str(gymnasium_asset("half_cheetah.xml")))
    fields = [f for f in dir(ref) if not f.startswith("_") and isinstance(getattr(ref, f), np.ndarray)]
    assert len(fields) > 50
    for f in fields:
        np.testing.assert_array_equal(getattr(ours, f), getattr(ref, f), err_msg=f)
    np.testing.assert_array_equal(ours.opt.timestep, ref.opt.timestep)


def test_ant_v5_options_main_body_and_forward_reward_weight_match_gymnasium():
    """Gymnasium's Ant-v5 options: ``main_body`` (here a leg, not the root: its x after a reset comes
    from forward kinematics) and ``forward_reward_weight``, from resets and mid-trajectory states."""
    opts = {"main_body": "aux_1", "forward_reward_weight": 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = gymnasium.make("Ant-v5", **opts)
    u, rng = g.unwrapped, np.random.default_rng(4)
    body = u.model.body("aux_1").id
    rows = []
    for ep in range(4):
        g.reset(seed=ep)
        for t in range(6):
            qpos, qvel, xb = u.data.qpos.copy(), u.data.qvel.copy(), u.data.xpos[body, 0]
            a = rng.uniform(-1, 1, 8)
            _, r, *_, info = g.step(a)
            rows.append((qpos, qvel, xb, a, r, info["x_velocity"], t == 0))
    qpos, qvel, xb, a, r, v, first = (np.array(c) for c in zip(*rows))
    env = envs.make("ant-v5", backend="native", **opts)
    start = env.reset_to_batch(qpos, qvel)
    np.testing.assert_allclose(np.asarray(start.q.xbody)[first, 0], xb[first], atol=1e-6)  # kinematics at a reset
    hi, lo = split64(xb[:, None])
    start = start.replace(q=start.q.replace(xbody=jnp.asarray(hi), xbody_lo=jnp.asarray(lo)))
    nxt = jax.jit(jax.vmap(env.step))(start, jnp.asarray(a, jnp.float32))
    np.testing.assert_allclose(np.asarray(nxt.metrics["x_velocity"]), v, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(nxt.reward), r, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="main_body: no body 'tail'; bodies: torso, front_left_leg"):
        envs.make("ant-v5", backend="native", main_body="tail")
    with pytest.raises(ValueError, match="hopper-v5: main_body does not apply"):
        envs.make("hopper-v5", backend="native", main_body="torso")
