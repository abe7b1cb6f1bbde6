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


@pytest.mark.parametrize("name", [*NAMES, "walker2d-v5", "hopper-v5", "halfcheetah-v5"])  # at the envs' MJX solver defaults
def test_mjx_one_step_parity_with_gymnasium(name, get_env):
    from poe_jax.envs.registry import mjx_defaults

    qpos, qvel, action, obs, reward, term, *_ = gym_transitions(name, n=200, seed=1)
    env = get_env(name, "mjx")
    assert mjx_defaults(name) and env.physics.options._asdict().items() >= mjx_defaults(name).items()
    assert int(env.physics.mjx_model.opt.iterations) == mjx_defaults(name)["iterations"]
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


def _lowered_text(backend: str, **spec_fields) -> str:
    from poe_jax import grid
    from poe_jax.grid import runner
    from poe_jax.grid.plan import resolve

    spec = grid.load_spec("preset:smoke").replace(backend=backend, max_steps=5, seeds=(0,), episodes=1,
                                                  **spec_fields)
    plan = resolve(spec)
    key = next(k for k in plan.program_keys() if k.rule == "poe")
    lanes = plan.lanes.lanes.take(np.arange(8))
    lanes = lanes._replace(rule=np.zeros_like(lanes.rule), quality=np.zeros_like(lanes.quality))
    fn = jax.jit(plan.program(key, on_step=runner._on_step(plan)))
    return fn.lower(plan.actor, plan.prior, lanes).as_text()


def test_the_mjx_program_has_no_host_callback_and_no_float64():
    """What a GPU runs: the whole grid step on the device, in float32 (inspected in the lowered program). The
    native program, whose physics is a host call, shows that the check can see one."""
    mjx_text = _lowered_text("mjx")
    assert "callback" not in mjx_text and "f64" not in mjx_text
    assert "callback" in _lowered_text("native")


def test_mjx_options_reach_the_model_and_are_checked():
    from poe_jax import grid
    from poe_jax.envs.registry import mjx_defaults
    from poe_jax.grid.plan import resolve

    spec = grid.load_spec("preset:smoke").replace(backend="mjx", mjx_options={"iterations": 3, "eulerdamp": False})
    plan = resolve(spec)
    m = plan.env.physics.mjx_model
    assert int(m.opt.iterations) == 3 and int(m.opt.ls_iterations) == mjx_defaults("hopper").get("ls_iterations", 50)
    assert plan.identity["mjx"]["iterations"] == 3  # the solver is part of what the results depend on
    assert "mjx_options" not in grid.load_spec("preset:smoke").identity()  # a spec without them keeps its hash
    import importlib.util

    cases = [({"iterations": 0}, "mjx_options.iterations: 0; allowed: an integer >= 1"),
             ({"solver": "cg"}, "mjx_options: unknown option(s) ['solver']")]
    if importlib.util.find_spec("mujoco_warp") is None:  # where it is installed, warp is allowed
        cases.append(({"impl": "warp"}, "'warp' needs the mujoco_warp package"))
    for bad, needle in cases:
        with pytest.raises(grid.SpecError) as e:
            resolve(spec.replace(mjx_options=bad))
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_mjx_chunk_size_is_chosen_from_device_memory_when_not_given(monkeypatch):
    from mujoco import mjx

    from poe_jax import grid
    from poe_jax.grid import plan as plan_module

    spec = grid.load_spec("preset:smoke").replace(backend="mjx", chunk_size=None)
    plan = plan_module.resolve(spec)
    per_lane = plan_module.LANE_OVERHEAD * sum(np.asarray(x).nbytes for x in
                                               jax.tree_util.tree_leaves(mjx.make_data(plan.env.physics.mjx_model)))

    class Device:  # a device with 1 GiB, as a GPU reports it
        def memory_stats(self):
            return {"bytes_limit": 2**30}

    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [Device()])
    n, why = plan.chunk
    assert n == 2 ** int(np.floor(np.log2(2**30 * plan_module.DEVICE_SHARE / per_lane))) and "1.0 GiB" in why
    assert plan_module.resolve(spec.replace(chunk_size=64)).chunk == (64, "given")
    assert plan_module.resolve(spec.replace(backend="native")).chunk_size == plan_module.NATIVE_CHUNK
