"""The MJX backend: one-step parity with Gymnasium and return distributions vs native.

MJX compiles for tens of seconds on CPU: one compiled step and one compiled
rollout per env are shared across these tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from poe_jax.grid import rollout
from test_envs import GYM_OBS, gym_transitions

pytestmark = pytest.mark.slow
NAMES = ("hopper", "halfcheetah")


@pytest.mark.parametrize("name", [*NAMES, "walker2d-v5"])  # v5: walker2d_v5.xml, healthy reward only while healthy
def test_mjx_one_step_parity_with_gymnasium(name, get_env):
    qpos, qvel, action, obs, reward, term, *_ = gym_transitions(name, n=200, seed=1)
    env = get_env(name, "mjx")
    start = env.reset_to_batch(qpos, qvel)
    nxt = jax.jit(jax.vmap(env.step))(start, jnp.asarray(action, jnp.float32))
    # float32 physics: observations to 1e-3 absolute (velocities are O(1-10)),
    # rewards to 1e-2 (a velocity difference divided by dt = 0.008 / 0.05 s).
    np.testing.assert_allclose(np.asarray(nxt.obs)[:, : GYM_OBS[name]], obs, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(nxt.reward), reward, rtol=1e-3, atol=1e-2)
    np.testing.assert_array_equal(np.asarray(nxt.terminated), term)


@pytest.mark.parametrize("name", NAMES)
def test_backends_agree_in_distribution(name, get_env):
    """64 episodes per backend: two-sample KS test on returns at the 1% level."""
    w = 0.3 * jax.random.normal(jax.random.key(5), (GYM_OBS[name], get_env(name).act_size))

    def policy(obs, key):
        return jnp.tanh(obs @ w) + 0.1 * jax.random.normal(key, (w.shape[1],)), {}

    returns = {}
    for backend in ("native", "mjx"):
        env = get_env(name, backend)
        keys = jax.random.split(jax.random.key(11 if backend == "native" else 12), 64)
        ep = jax.jit(lambda k: rollout.rollout(env, policy, k, max_steps=300))(keys)
        returns[backend] = np.asarray(ep.return_task)
    p = stats.ks_2samp(returns["native"], returns["mjx"]).pvalue
    assert p > 0.01, (p, returns["native"].mean(), returns["mjx"].mean())


def test_mjx_model_shift_matches_native(get_env):
    """Per-lane mass/friction scales on MJX (batched model fields) step like the native backend's
    per-row models, in the same compiled step as the parity test (scales are data)."""
    qpos, qvel, action, *_ = gym_transitions("halfcheetah", n=200, seed=1)
    scales = np.ones((200, 2), np.float32)
    scales[::2, 0], scales[1::4, 1] = 2.0, 0.3
    out = {}
    for backend in ("native", "mjx"):
        env = get_env("halfcheetah", backend)
        start = env.reset_to_batch(qpos, qvel).replace(scales=jnp.asarray(scales))
        out[backend] = jax.jit(jax.vmap(env.step))(start, jnp.asarray(action, jnp.float32))
        nominal = jax.jit(jax.vmap(env.step))(env.reset_to_batch(qpos, qvel), jnp.asarray(action, jnp.float32))
        assert not np.allclose(np.asarray(out[backend].obs)[::2], np.asarray(nominal.obs)[::2], atol=1e-3)
    np.testing.assert_allclose(np.asarray(out["mjx"].obs), np.asarray(out["native"].obs), rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("name", ["ant-v5"])  # v4's ant takes the same xpos path, without contact forces
def test_mjx_ant_velocity_reads_xpos(name, get_env):
    """MJX returns the torso's xpos with the state, so Ant's forward velocity is Gymnasium's
    (from the last RK4 stage), as on the native backend. MJX's float32 contacts send many lanes
    elsewhere; on the lanes whose next observation agrees with Gymnasium's to 1e-3, the velocity
    agrees to 1e-4 (the end-of-step qpos would be off by up to ~1e-2 there: measured 1.4e-2).
    Ant-v5 on those lanes: its observed contact forces (``mjx.rne_postconstraint``) to 1e-3
    (measured 3.4e-4) and its reward, contact cost included, to 1e-3 (measured 1.8e-5)."""
    qpos, qvel, action, obs, reward, term, x_vel, x_before = gym_transitions(name, n=64, seed=2)
    env = get_env(name, "mjx")
    start = env.reset_to_batch(qpos, qvel)
    start = start.replace(q=start.q.replace(xbody=jnp.asarray(x_before[:, None], jnp.float32),
                                            xbody_lo=jnp.zeros((len(qpos), 1), jnp.float32)))
    nxt = jax.jit(jax.vmap(env.step))(start, jnp.asarray(action, jnp.float32))
    agree = np.abs(np.asarray(nxt.obs)[:, :27] - obs[:, :27]).max(1) < 1e-3
    assert agree.sum() >= 10
    np.testing.assert_array_equal(np.asarray(nxt.terminated), term)
    if name == "ant-v5":
        np.testing.assert_allclose(np.asarray(nxt.obs)[agree, 27:], obs[agree, 27:], rtol=0, atol=1e-3)
        np.testing.assert_allclose(np.asarray(nxt.reward)[agree], reward[agree], rtol=0, atol=1e-3)
        assert (np.asarray(nxt.metrics["contact_cost"])[agree] > 0).any()
    v = np.asarray(nxt.metrics["x_velocity"])
    np.testing.assert_allclose(v[agree], x_vel[agree], rtol=0, atol=1e-4)
    from_qpos = (np.asarray(nxt.q.qpos[:, 0]) - qpos[:, 0]) / env.dt
    assert np.abs(from_qpos - x_vel)[agree].max() > 1e-3  # the test can tell the two apart
