"""The house rules of the package: one resolver, one policy step, declared signals, capabilities in the
registries, a layout by the data flow, and no private JAX."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from poe_jax import checkpoints, grid
from poe_jax.analysis import offpolicy, report
from poe_jax.envs import registry
from poe_jax.envs.goals import GOALS
from poe_jax.grid import metrics, plan as plans, program
from poe_jax.grid import rollout as ro

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "poe_jax"


def _tiny(**kw) -> grid.GridSpec:
    base = dict(env="hopper", actor="zoo:hopper-medium-iql", prior="zoo:hopper-prior",
                rules={"frozen": [], "poe": [0.5], "prior_only": []}, goals=("G1_speed", "G3_target"),
                priors=("trained", "random", "degraded", "uniform"), seeds=(3, 4), episodes=1, max_steps=8,
                chunk_size=8)
    base.update(kw)
    return grid.GridSpec(**base)


def test_the_env_is_built_once_per_grid(tmp_path, monkeypatch):
    from poe_jax import envs

    made = []
    real = envs.make
    monkeypatch.setattr(envs, "make", lambda *a, **k: made.append(a) or real(*a, **k))
    grid.run_many([_tiny(name="a", priors=("trained", "random")), _tiny(name="b", goals=("G1_speed",), priors=("trained",))],
                  tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "a" / "offpolicy-scores.csv").is_file()  # the scoring step ran, on the plan's env
    assert len(made) == 2  # one per grid: resolving, running, recording and scoring share the plan's env


def test_the_scorer_and_the_rollout_compose_the_same_distribution():
    """The off-policy scorer evaluates the policy a grid's rollout runs: at the same state, lane and key the
    composed distributions agree to the last bit or two (two XLA programs), for every rule and prior quality
    (random's untrained network included, which the scorer once seeded differently)."""
    p = plans.resolve(_tiny(rules={"frozen": [], "poe": [0.5], "poe_adaptive": [0.05]},
                            priors=("trained", "random", "degraded", "uniform", "adversarial")))
    qualities = set()

    @metrics.register_metric("test_composed_mean0", reduce="last")
    def _mean0(x):
        return x.composed.mean[0]

    @metrics.register_metric("test_composed_std1", reduce="last")
    def _std1(x):
        return x.composed.std[1]

    try:
        for key in dict.fromkeys(p.program_keys()):
            ids = np.flatnonzero(np.asarray([k == key for k in p.program_keys()])[p.lanes.cell])
            ids = np.concatenate([ids, np.full(max(0, plans.MIN_BATCH - ids.size), ids[-1])])  # as the runner pads
            lanes = p.lanes.lanes.take(ids)._replace(rule=np.zeros(len(ids), np.int32),
                                                     quality=np.zeros(len(ids), np.int32))
            tot = jax.jit(program.build_program(p.env, p.goals, (key.rule,), (key.quality,), max_steps=1,
                                                degraded_noise=p.spec.degraded_noise, obs_noise=key.obs_noise,
                                                act_noise=key.act_noise))(p.actor, p.prior, lanes)
            reset, step = program.step_keys(lanes)
            obs = jax.vmap(p.env.reset)(reset).obs  # the states the rollout acted in at its first step
            keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(step)  # the keys of its first step
            c = offpolicy.composed(p, p.actor, p.prior, obs, ids, keys)
            mean, std = np.asarray(c.mean[:, 0]), np.asarray(c.std[:, 1])
            want_mean = np.asarray(tot.values["test_composed_mean0"])
            want_std = np.asarray(tot.values["test_composed_std1"])
            # The same function at the same state, lane and key: equal to float32 rounding. Two XLA programs may
            # fuse (and contract into FMAs) differently, so a last-bit difference is allowed, no more; another
            # policy (the old scorer's random prior was another network) differs at O(1).
            np.testing.assert_array_max_ulp(mean, want_mean, maxulp=8)
            np.testing.assert_array_max_ulp(std, want_std, maxulp=8)
            qualities.add(key.quality)
    finally:
        metrics.unregister_metric("test_composed_mean0")
        metrics.unregister_metric("test_composed_std1")
    assert qualities >= {"trained", "random", "degraded", "uniform", "adversarial"}


def test_a_metric_registered_in_user_code_reaches_the_store_and_the_report(tmp_path):
    @metrics.register_metric("test_user_abs_action")
    def _abs_action(x):
        """Mean absolute executed action."""
        return jnp.mean(jnp.abs(x.action))

    try:
        out = tmp_path / "run"
        grid.run(_tiny(priors=("trained",), goals=("G1_speed",)), out, progress=False)
        df = grid.read_episodes(out)
        assert "test_user_abs_action" in df and df["test_user_abs_action"].between(0, 1).all()
        assert df["test_user_abs_action"].gt(0).any()
        report.write_report(out)
        assert "test_user_abs_action" in pd.read_csv(out / "metrics.csv")
        assert "test_user_abs_action" in (out / "report.md").read_text()
    finally:
        metrics.unregister_metric("test_user_abs_action")


def test_each_reduction_of_a_declared_signal():
    env = registry.ENVS["hopper"].factory(backend="native", terminate_when_unhealthy=False)
    declared = {"s": "sum", "m": "mean", "d": "discounted", "dm": "discounted_mean", "mx": "max", "l": "last",
                "a": "any"}

    def policy(obs, key):
        return jnp.zeros(3), {}

    def signals(tr):
        t = tr.state.step.astype(jnp.float32)  # 0, 1, 2, ...
        return {k: t for k in declared}

    ep = jax.jit(lambda k: ro.rollout(env, policy, k, max_steps=4, gamma=0.5, signals=(signals, declared)))(
        jax.random.split(jax.random.key(0), 2))
    v = {k: np.asarray(x)[0] for k, x in ep.values.items()}
    assert v["s"] == v["m"] == 6 and v["d"] == v["dm"] == 0 + 0.5 + 2 * 0.25 + 3 * 0.125
    assert v["mx"] == 3 and v["l"] == 3 and v["a"] == 1


def _string_literals(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_env_or_goal_name_outside_the_registries():
    """Env and goal knowledge lives in envs/ (and the presets): no module elsewhere names one."""
    names = set(registry.ENVS) | set(GOALS)
    found = [f"{p.relative_to(ROOT)}:{line}: {s!r}" for p in sorted(PACKAGE.rglob("*.py"))
             if "envs" not in p.relative_to(PACKAGE).parts for line, s in _string_literals(p) if s in names
             or re.match(r"^(antmaze|hopper|walker2d|halfcheetah|ant)([-_]|$)", s)]
    assert not found, found


def test_no_private_jax_imports():
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in sorted(PACKAGE.rglob("*.py"))
           for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bjax\._src\b", line)
           and not line.lstrip().startswith(("#", ">>>", "jax._src.checkify.JaxRuntimeError"))]
    assert not bad, bad


def test_the_layout_follows_the_flow():
    """kernels never import the grid or the analysis; the grid never imports the analysis at module level."""
    def imports(pkg: str) -> set[str]:
        out = set()
        for p in (PACKAGE / pkg).rglob("*.py"):
            for node in ast.parse(p.read_text()).body:
                if isinstance(node, ast.ImportFrom) and node.module:
                    out.add(node.module)
        return out
    assert not {m for m in imports("kernels") if m.startswith(("poe_jax.grid", "poe_jax.analysis"))}
    assert not {m for m in imports("grid") if m.startswith("poe_jax.analysis")}


def test_zoo_names_resolve_from_the_source_checkout():
    assert checkpoints.ZOO == ROOT / "checkpoints"
    assert checkpoints.zoo_path("zoo:hopper-prior") == ROOT / "checkpoints" / "hopper-prior"
    assert not (PACKAGE / "zoo").exists()  # one copy: the wheel maps checkpoints/ (pyproject.toml)


def test_score_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from poe_jax.cli import main

    assert main(["score", str(tmp_path)]) != 0
    assert "not a run folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written into it
