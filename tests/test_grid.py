"""The grid runner: records, resumption, determinism across chunking/devices/processes, bad specs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from poe_jax import checkpoints, grid, nets

WORKER = Path(__file__).with_name("grid_worker.py")
CONTRACT = ["env", "actor", "rule", "param", "alpha_equiv", "goal", "prior", "shift", "seed", "episode",
            "return_task", "return_goal", "normalized_score", "length", "terminated", "kl_to_frozen",
            "support_violation", "success", "backend"]
VALUES = ["return_task", "return_goal", "normalized_score", "length", "terminated", "kl_to_frozen", "tv_upper",
          "tv_lower", "discounted_goal", "max_abs_goal_reward", "alpha_used", "delta_pi_upper", "delta_pi_lower",
          "support_violation_0.001", "support_violation_0.01", "support_violation_0.05", "fallback_rate"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    actor = nets.init_actor(nets.ActorSpec("iql", 11, 3), jax.random.key(0))
    prior = nets.init_prior(nets.PriorSpec(11, 3, ("G1_speed", "G2_balanced", "G3_target")), jax.random.key(1))
    checkpoints.save(d / "actor", actor, env="hopper")
    checkpoints.save(d / "prior", prior, env="hopper")
    return d


@pytest.fixture(scope="module")
def smoke(ckpts):
    return grid.load_spec("preset:smoke", actor=str(ckpts / "actor"), prior=str(ckpts / "prior"))


@pytest.fixture(scope="module")
def reference(smoke, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    res = grid.run(smoke, out, progress=False)
    return out, res


def _values(out):
    return grid.read_episodes(out, serve_prior_blind=False)[["lane", *VALUES]]


def test_smoke_run_records(smoke, reference):
    out, res = reference
    raw = grid.read_episodes(out, serve_prior_blind=False)
    n_cells = len(grid.cells(smoke))
    assert len(raw) == n_cells * len(smoke.seeds) * smoke.episodes == res.computed
    assert set(CONTRACT) <= set(raw.columns)
    assert raw["lane"].is_unique and (raw["lane"].to_numpy() == np.arange(len(raw))).all()
    # frozen ignores the prior: it runs once per (goal, shift, seed, episode), recorded as prior "any" ...
    n_rep = len(smoke.seeds) * smoke.episodes
    assert (raw.loc[raw.rule == "frozen", "prior"] == grid.PRIOR_BLIND).all()
    assert (raw.rule == "frozen").sum() == len(smoke.goals) * len(smoke.shifts) * n_rep
    assert set(raw.loc[raw.rule == "poe", "prior"]) == set(smoke.priors) and len(smoke.priors) >= 2
    # ... and serves every prior quality: the same episodes under each
    df = grid.read_episodes(out)
    assert len(df) == len(raw) + (len(smoke.priors) - 1) * (raw.rule == "frozen").sum()
    assert set(df["rule"]) == set(smoke.rules) and len(set(df["rule"])) >= 3
    assert np.isfinite(df["return_task"]).all() and (df["length"] <= smoke.max_steps).all()
    fz = df[df.rule == "frozen"]
    assert set(fz["prior"]) == set(smoke.priors)
    for q in smoke.priors:
        pd.testing.assert_frame_equal(fz[fz.prior == q].drop(columns="prior").reset_index(drop=True),
                                      raw[raw.rule == "frozen"].drop(columns="prior").reset_index(drop=True))
    # every cell starts from the same states: frozen's returns do not depend on the goal scored
    a = fz[(fz.prior == "trained") & (fz.goal == "G1_speed")]["return_task"].to_numpy()
    b = fz[(fz.prior == "random") & (fz.goal == "G3_target")]["return_task"].to_numpy()
    np.testing.assert_array_equal(a, b)
    assert (fz["kl_to_frozen"] == 0).all()
    assert (fz["tv_upper"] == 0).all() and (fz["tv_lower"] == 0).all()
    # PoE under a trained prior moves away from the actor: positive KL and TV, bounds ordered
    poe = df[df.rule == "poe"]
    assert (poe["kl_to_frozen"] > 0).all() and (poe["tv_upper"] > 0).all()
    assert ((0 <= df["tv_lower"]) & (df["tv_lower"] <= df["tv_upper"]) & (df["tv_upper"] <= 1)).all()
    assert ((0 <= df["delta_pi_lower"]) & (df["delta_pi_lower"] <= df["delta_pi_upper"]) & (df["delta_pi_upper"] <= 1)).all()
    assert (fz["delta_pi_upper"] == 0).all() and (poe["delta_pi_upper"] > 0).all()
    # Discounting: |sum gamma^t r| <= length * max |r|, and the first reward is undiscounted.
    assert (df["discounted_goal"].abs() <= df["length"] * df["max_abs_goal_reward"] + 1e-4).all()
    assert (df["discounted_goal"].abs() < df["return_goal"].abs() + 1e-3).any()
    # poe_adaptive stays within its per-step KL budget and reports the alpha it used.
    ad = df[df.rule == "poe_adaptive"]
    assert len(ad) and (ad["kl_to_frozen"] <= 0.05 * (1 + 1e-4)).all()
    assert ((0 <= ad["alpha_used"]) & (ad["alpha_used"] <= 1)).all() and ad["alpha_equiv"].isna().all()
    assert (df.loc[df.rule == "poe", "alpha_used"] == 0.5).all()
    s = json.loads((out / "summary.json").read_text())
    for key in ("spec", "versions", "backend", "devices", "compile_s", "wall_s", "episodes_per_s"):
        assert key in s
    assert s["backend"] == "native" and s["episodes_recorded"] == len(raw)


def test_rerun_resumes_without_recomputing(smoke, reference):
    out, _ = reference
    before = _values(out)
    res = grid.run(smoke, out, progress=False)
    assert res.computed == 0 and res.skipped == len(before)
    pd.testing.assert_frame_equal(_values(out), before)


def test_chunk_size_does_not_change_results(smoke, reference, tmp_path):
    res = grid.run(smoke.replace(chunk_size=3), tmp_path / "c3", progress=False)
    assert res.summary["chunk_size"] == grid.MIN_BATCH  # every program's lanes in batches of 8 (3 padded up)
    pd.testing.assert_frame_equal(_values(tmp_path / "c3"), _values(reference[0]))


def _lane(out, **cell):
    df = grid.read_episodes(out, serve_prior_blind=False)
    for k, v in cell.items():
        df = df[np.isclose(df[k], v)] if isinstance(v, float) else df[df[k] == v]
    assert len(df) == 1, cell
    return df[VALUES].reset_index(drop=True)


def test_a_lane_is_bit_equal_alone_and_inside_any_grid(smoke, tmp_path):
    """A lane's episode is a function of its own cell, seed and episode: bit-equal when it runs alone
    and inside two different larger grids (other goals, coefficients, rules, prior qualities, shifts,
    seeds, chunk sizes). Before programs were split per (rule, prior quality), adding poe_adaptive to a
    grid changed poe's rounding (XLA fused the two rules' arithmetic differently) and its episodes."""
    base = smoke.replace(max_steps=120)
    alone = base.replace(goals=["G3_target"], priors=["trained"], rules={"poe": [0.75]}, seeds=[1], episodes=1,
                         chunk_size=1)
    frozen_alone = alone.replace(rules={"frozen": []})
    wide = base.replace(goals=["G1_speed", "G2_balanced", "G3_target"], priors=["trained", "random"],
                        rules={"frozen": [], "additive": [0.5], "poe": [0.25, 0.75], "poe_adaptive": [0.05]},
                        seeds=[0, 1, 2], episodes=2, chunk_size=64)
    other = base.replace(goals=["G3_target"], priors=["uniform", "trained"], rules={"poe": [0.75, 0.9], "frozen": []},
                         shifts=["none", "obs_noise=0.05"], seeds=[1, 4], episodes=1, chunk_size=5)
    outs = {}
    for name, sp in (("alone", alone), ("frozen", frozen_alone), ("wide", wide), ("other", other)):
        grid.run(sp, tmp_path / name, progress=False)
        outs[name] = tmp_path / name
    cell = dict(goal="G3_target", prior="trained", shift="none", seed=1, episode=0)
    ref = _lane(outs["alone"], rule="poe", param=0.75, **cell)
    fz = _lane(outs["frozen"], rule="frozen", **{**cell, "prior": grid.PRIOR_BLIND})
    for name in ("wide", "other"):
        pd.testing.assert_frame_equal(_lane(outs[name], rule="poe", param=0.75, **cell), ref, check_exact=True)
        pd.testing.assert_frame_equal(_lane(outs[name], rule="frozen", **{**cell, "prior": grid.PRIOR_BLIND}), fz,
                                      check_exact=True)


def _worker(spec, out, tmp_path, extra_env=None, args=()):
    spec_file = tmp_path / f"spec-{abs(hash(str(out)))}.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env.setdefault("POE_JAX_CACHE", str(Path(jax.config.jax_compilation_cache_dir)))
    return subprocess.Popen([sys.executable, str(WORKER), str(spec_file), str(out), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_rerun_equals_uninterrupted(smoke, reference, tmp_path):
    spec = smoke.replace(chunk_size=8)
    out = tmp_path / "killed"
    proc = _worker(spec, out, tmp_path)
    parts = out / "episodes.parquet"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, f"worker finished before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = grid.done_lanes(out)
    assert 0 < done.size < len(grid.read_episodes(reference[0], serve_prior_blind=False)), "kill did not land part-way"
    res = grid.run(spec, out, progress=False)
    assert res.skipped == done.size
    pd.testing.assert_frame_equal(_values(out), _values(reference[0]))


def test_four_devices_equal_one(smoke, reference, tmp_path):
    out = tmp_path / "dev4"
    proc = _worker(smoke, out, tmp_path, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1])["devices"] == 4
    pd.testing.assert_frame_equal(_values(out), _values(reference[0]))


def test_two_process_distributed_equals_one(smoke, reference, tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    out = tmp_path / "dist"
    spec = smoke.replace(chunk_size=16)
    procs = [_worker(spec, out, tmp_path, args=("--coordinator", f"localhost:{port}", "--nproc", "2", "--pid", str(i)))
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    info = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert all(i["processes"] == 2 for i in info) and sum(i["computed"] for i in info) == len(_values(reference[0]))
    assert all(i["computed"] > 0 for i in info), "one process did all the work"
    pd.testing.assert_frame_equal(_values(out), _values(reference[0]))


def test_different_spec_is_refused_unless_forced(smoke, reference, tmp_path):
    out = tmp_path / "f"
    small = smoke.replace(seeds=(0,), episodes=1, rules={"frozen": [], "poe": [0.5]}, priors=("trained",))
    grid.run(small.replace(max_steps=10), out, progress=False)
    with pytest.raises(grid.SpecError, match="different spec .fields that differ: max_steps;"):
        grid.run(small.replace(max_steps=11), out, progress=False)
    res = grid.run(small.replace(max_steps=11), out, force=True, progress=False)
    assert (grid.read_episodes(out)["length"] <= 11).all() and res.computed == len(grid.read_episodes(out, serve_prior_blind=False))


def test_a_failed_start_leaves_nothing_that_blocks_the_fixed_spec(smoke, monkeypatch, tmp_path):
    """spec.json is written with the first result part: a run that fails before any result (here the
    program raises) leaves no pinned spec, so the corrected spec runs into the same DIR."""
    from poe_jax.grid import runner

    out = tmp_path / "failed"
    broken = smoke.replace(max_steps=5, seeds=(0,), episodes=1, rules={"frozen": [], "poe": [0.5]}, priors=("trained",))

    def boom(*a, **k):
        raise RuntimeError("simulated failure before the first chunk")

    monkeypatch.setattr(runner, "records", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        grid.run(broken, out, progress=False)
    assert not (out / "spec.json").exists() and not grid.done_lanes(out).size
    monkeypatch.undo()
    res = grid.run(broken.replace(max_steps=6), out, progress=False)
    assert res.computed > 0 and (out / "spec.json").exists()


def test_duplicate_lanes_are_read_once(smoke, tmp_path):
    """A lane stored twice (two runs racing before the lock existed) is read once, and said so."""
    import shutil

    out = tmp_path / "dup"
    grid.run(smoke.replace(max_steps=5, seeds=(0,), episodes=1, rules={"frozen": [], "poe": [0.5]}, priors=("trained",)),
             out, progress=False)
    n = len(grid.read_episodes(out, serve_prior_blind=False))
    part = sorted((out / "episodes.parquet").glob("part-*.parquet"))[0]
    shutil.copy(part, part.with_name("part-dup-" + part.name.removeprefix("part-")))
    df = grid.read_episodes(out, serve_prior_blind=False)
    assert len(df) == n and df["lane"].is_unique and df.attrs["duplicate_lanes_dropped"] > 0


@pytest.mark.parametrize("change, field", [
    ({"env": "humanoid"}, "env: unknown env 'humanoid'"),
    ({"rules": {"poe": [0.5], "magic": [1.0]}}, "rules: unknown rule 'magic'"),
    ({"rules": {}}, "rules: empty"),
    ({"rules": {"poe": [1.5]}}, r"rules.poe: .*alpha must be in \[0.0, 1.0\]"),
    ({"rules": {"poe": []}}, "rules.poe: empty coefficient grid"),
    ({"rules": {"frozen": [0.3]}}, "rules.frozen: takes no coefficient"),
    ({"goals": ("G1_speed", "G7_fly")}, "goals: unknown goal 'G7_fly'"),
    ({"goals": ()}, "goals: empty"),
    ({"priors": ("trained", "psychic")}, "priors: unknown prior quality 'psychic'"),
    ({"seeds": ()}, "seeds: empty"),
    ({"shifts": ("gravity=2",)}, "shifts: cannot parse"),
    ({"shifts": ("mass=0",)}, "shifts: mass must be finite and > 0"),
    ({"episodes": 0}, "episodes: must be >= 1"),
    ({"actor": "/nonexistent/actor"}, "actor: no checkpoint at /nonexistent/actor"),
    ({"prior": "zoo:does-not-exist"}, "prior: no shipped checkpoint 'does-not-exist'"),
    ({"backend": "tpu9"}, "backend: unknown backend 'tpu9'"),
    # types: no silent truncation or reinterpretation
    ({"episodes": 2.5}, "episodes: expected an integer; got 2.5"),
    ({"max_steps": 20.5}, "max_steps: expected an integer; got 20.5"),
    ({"chunk_size": 1.5}, "chunk_size: expected an integer; got 1.5"),
    ({"episodes": "five"}, "episodes: expected an integer; got 'five'"),
    ({"sample": "false"}, "sample: expected true or false; got 'false'"),
    ({"seeds": (2**32,)}, r"seeds: each must be an integer in \[0, 2\*\*32\); got 4294967296"),
    ({"seeds": (-1,)}, r"seeds: each must be an integer in \[0, 2\*\*32\); got -1"),
    ({"seeds": (1.9,)}, r"seeds: each must be an integer in \[0, 2\*\*32\); got 1.9"),
])
def test_bad_specs_fail_before_compiling(smoke, tmp_path, change, field):
    out = tmp_path / "never"
    with pytest.raises(grid.SpecError, match=field):
        grid.run(smoke.replace(**change), out, progress=False)
    assert not out.exists()


def test_wrong_env_checkpoint_and_unknown_fields(smoke, ckpts):
    with pytest.raises(grid.SpecError, match="checkpoint does not fit env 'walker2d'"):
        grid.validate(smoke.replace(env="walker2d"))
    with pytest.raises(grid.SpecError, match=r"unknown spec field\(s\) \['alpha'\]"):
        grid.load_spec({**smoke.to_dict(), "alpha": 0.5})
    with pytest.raises(grid.SpecError, match="unknown preset 'nope'"):
        grid.load_spec("preset:nope")


def test_cli_run_from_toml(ckpts, tmp_path, capsys):
    from poe_jax.cli import main

    cfg = tmp_path / "grid.toml"
    cfg.write_text(f'''env = "hopper"
actor = "{ckpts / 'actor'}"
prior = "{ckpts / 'prior'}"
goals = ["G2_balanced"]
priors = ["trained", "degraded"]
seeds = [3]
episodes = 2
max_steps = 20
[rules]
frozen = []
poe = [0.25, 0.75]
''')
    out = tmp_path / "cli"
    assert main(["run", str(cfg), "--out", str(out), "--backend", "native"]) == 0
    text = capsys.readouterr().out
    assert "G2_balanced" in text and "episodes/s" in text
    assert len(grid.read_episodes(out)) == (1 + 2) * 2 * 2
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "x"), "--actor", "/nope"]) == 2
    assert "actor: no checkpoint at /nope" in capsys.readouterr().err


def test_every_shipped_preset_validates():
    names = grid.preset_names()
    assert {"smoke", "quickstart", "main_table", "prior_quality", "harder", "shift"} <= set(names)
    for name in names:
        for spec in grid.load_specs(f"preset:{name}"):
            grid.validate(spec)
            assert len(grid.cells(spec)) >= 3
    main_table = grid.load_specs("preset:main_table")
    assert [s.env for s in main_table] == ["hopper", "halfcheetah", "walker2d", "ant"]
    assert [s.name for s in main_table] == [f"{e}-medium-iql" for e in ("hopper", "halfcheetah", "walker2d", "ant")]
    assert all(s.rules == main_table[0].rules and s.seeds == (0, 1, 2, 3, 4) for s in main_table)
    with pytest.raises(grid.SpecError, match="has \\[\\[grids\\]\\]"):
        grid.load_spec("preset:main_table")


def test_several_grids_in_one_spec(ckpts, tmp_path, capsys):
    """[[grids]]: shared fields on top, one table per env; each grid runs into its own folder,
    read_episodes and the report read them together."""
    from poe_jax.cli import main
    from poe_jax.analysis.report import write_report

    cheetah = tmp_path / "cheetah"
    checkpoints.save(cheetah / "actor", nets.init_actor(nets.ActorSpec("iql", 17, 6), jax.random.key(2)), env="halfcheetah")
    checkpoints.save(cheetah / "prior", nets.init_prior(nets.PriorSpec(17, 6, ("G1_speed", "G2_balanced", "G3_target")),
                                                         jax.random.key(3)), env="halfcheetah")
    cfg = tmp_path / "multi.toml"
    cfg.write_text(f'''goals = ["G1_speed"]
seeds = [0, 1]
episodes = 2
max_steps = 15
backend = "native"
[rules]
frozen = []
poe = [0.5]
[[grids]]
env = "hopper"
actor = "{ckpts / 'actor'}"
prior = "{ckpts / 'prior'}"
[[grids]]
env = "halfcheetah"
name = "cheetah"
actor = "{cheetah / 'actor'}"
prior = "{cheetah / 'prior'}"
max_steps = 10
''')
    specs = grid.load_specs(cfg)
    assert [(s.env, s.name, s.max_steps) for s in specs] == [("hopper", "hopper-actor", 15), ("halfcheetah", "cheetah", 10)]
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    assert "cheetah: env halfcheetah, actor actor, prior prior" in capsys.readouterr().out  # the first screen, per grid
    assert json.loads((out / "grids.json").read_text()) == {"name": "multi", "grids": ["hopper-actor", "cheetah"]}
    df = grid.read_episodes(out)
    assert df.groupby("env").size().to_dict() == {"hopper": 8, "halfcheetah": 8}
    assert df.loc[df.env == "halfcheetah", "length"].max() <= 10
    # Each grid equals the same grid run alone.
    alone = grid.run(specs[1], tmp_path / "alone", progress=False)
    pd.testing.assert_frame_equal(grid.read_episodes(alone.out)[VALUES],
                                  df[df.env == "halfcheetah"][VALUES].reset_index(drop=True))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["grids"]) == {"hopper-actor", "cheetah"} and summary["episodes_recorded"] == 16
    report = write_report(out).read_text()
    assert "| cheetah | G1_speed |" in report and "| hopper-actor | G1_speed |" in report
    # Rerun resumes; another grid list on the same folder is refused; overriding the actor is refused.
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert "0 computed now, 8 already there" in capsys.readouterr().out
    with pytest.raises(grid.SpecError, match="holds a run of other grids"):
        grid.run_many(specs[:1], out)
    assert main(["run", str(cfg), "--out", str(tmp_path / "y"), "--actor", "x"]) == 2
    assert "override a single grid" in capsys.readouterr().err


def test_critic_rules_in_a_grid(ckpts, tmp_path):
    """iql_guided / critic_greedy / critic_prior run in the same program as the closed-form rules,
    with the critic that ships with the actor; an actor without a critic is refused up front."""
    spec = grid.load_spec({"env": "hopper", "actor": "zoo:hopper-medium-iql", "prior": "zoo:hopper-prior",
                           "rules": {"frozen": [], "poe": [0.5], "iql_guided": [0.0, 0.05], "critic_greedy": [],
                                     "critic_prior": [0.5]},
                           "goals": ["G1_speed"], "seeds": [0], "episodes": 2, "max_steps": 20, "backend": "native"})
    df = grid.read_episodes(grid.run(spec, tmp_path / "critic", progress=False).out)
    def rows(rule, param):
        return df[(df.rule == rule) & np.isclose(df.param, param)]

    # eta = 0 is the frozen actor exactly; the others move away from it.
    np.testing.assert_array_equal(rows("iql_guided", 0.0)["return_task"].to_numpy(),
                                  rows("frozen", 0.0)["return_task"].to_numpy())
    for key in (("iql_guided", 0.05), ("critic_greedy", 0.0), ("critic_prior", 0.5)):
        assert len(rows(*key)) == 2 and (rows(*key)["kl_to_frozen"] > 0).all(), key
    assert df.loc[df.rule == "critic_prior", "alpha_equiv"].eq(0.5).all()
    assert df.loc[df.rule == "critic_greedy", "alpha_equiv"].isna().all()
    with pytest.raises(grid.SpecError, match=r"rules: \['critic_greedy', 'critic_prior', 'iql_guided'\] need the actor's critic"):
        grid.validate(spec.replace(actor=str(ckpts / "actor")))
    with pytest.raises(grid.SpecError, match="rules.iql_guided: rule 'iql_guided': eta must be in"):
        grid.validate(spec.replace(rules={"iql_guided": [-1.0]}))


def test_model_shifts_in_a_grid(tmp_path):
    """mass/friction shifts are per-lane model data: scale 1.0 reproduces 'none' exactly (run as its own
    grid: one grid lists a condition once, under one label)."""
    spec = grid.load_spec({"env": "hopper", "actor": "zoo:hopper-medium-iql", "prior": "zoo:hopper-prior",
                           "rules": {"frozen": [], "poe": [0.5]}, "goals": ["G1_speed"], "seeds": [0, 1],
                           "episodes": 2, "max_steps": 40, "backend": "native",
                           "shifts": ["none", "mass=1.5", "friction=0.3"]})
    df = grid.read_episodes(grid.run(spec, tmp_path / "shift", progress=False).out)
    nominal = spec.replace(shifts=("mass=1.0,friction=1.0",))
    df = pd.concat([df, grid.read_episodes(grid.run(nominal, tmp_path / "nominal", progress=False).out)])
    ret = {k: g.sort_values(["rule", "seed", "episode"])["return_task"].to_numpy() for k, g in df.groupby("shift")}
    np.testing.assert_array_equal(ret["mass=1.0,friction=1.0"], ret["none"])
    with pytest.raises(grid.SpecError, match=r"shifts: 'none' and 'mass=1.0,friction=1.0' are the same condition"):
        grid.validate(spec.replace(shifts=("none", "mass=1.0,friction=1.0")))
    assert not np.array_equal(ret["mass=1.5"], ret["none"]) and not np.array_equal(ret["friction=0.3"], ret["none"])


def test_lanes_carry_the_goal_parameter_the_prior_takes():
    """A prior that takes G3's target speed as an input gets each lane's configured target (so
    ``[goal_params.G3_target] target_speed = X`` steers toward X without retraining); goals without
    one get 0, and so does every lane of a prior without such an input."""
    import jax.numpy as jnp

    spec = grid.GridSpec(env="hopper", actor="zoo:hopper-medium-iql", prior="zoo:hopper-prior",
                         rules={"frozen": [], "poe": [0.5]}, goals=("G1_speed", "G3_target"),
                         goal_params={"G3_target": {"target_speed": 1.25}})
    prior = checkpoints.load(grid.resolve_checkpoint("zoo:hopper-prior", field="prior"), env="hopper")
    assert prior.spec.param_of("G3_target")[1] == "target_speed"
    table = grid.lane_table(spec, prior.spec.goals, prior.spec.goal_params)
    g3 = table.lanes.goal == spec.goals.index("G3_target")
    assert np.all(table.lanes.prior_param[g3] == np.float32(1.25)) and np.all(table.lanes.prior_param[~g3] == 0)
    assert np.all(grid.lane_table(spec, prior.spec.goals).lanes.prior_param == 0)
    # the prior's G3 head moves with the target it is given
    obs = jnp.asarray(np.load(grid.zoo_dirs()[-1] / "probe-states" / "hopper-medium.npz")["observations"][:200])
    i = prior.spec.goal_index("G3_target")
    lo, hi = prior.spec.param_of("G3_target")[2:4]
    gap = float(jnp.abs(prior.distribution(obs, i, lo).mean - prior.distribution(obs, i, hi).mean).mean())
    assert gap > 0.01


def test_toml_types_are_checked_where_they_are_read(tmp_path):
    """A TOML float seed is refused, not truncated; a string boolean is refused, not truthy."""
    cfg = tmp_path / "g.toml"
    cfg.write_text('env = "hopper"\nactor = "zoo:hopper-medium-iql"\nprior = "zoo:hopper-prior"\n'
                   'seeds = [0, 1.9]\n[rules]\nfrozen = []\n')
    with pytest.raises(grid.SpecError, match="seeds: expected a list of integers; got 1.9"):
        grid.load_spec(cfg)
    cfg.write_text('env = "hopper"\nactor = "zoo:hopper-medium-iql"\nprior = "zoo:hopper-prior"\n'
                   'sample = "false"\n[rules]\nfrozen = []\n')
    with pytest.raises(grid.SpecError, match="sample: expected true or false"):
        grid.validate(grid.load_spec(cfg))


def test_a_second_run_into_a_locked_dir_is_refused(smoke, reference, tmp_path):
    """While a run writes into DIR it holds an exclusive lock: another run into DIR is refused at
    once, in one line, and nothing of the first run's is touched; an --out that is a file is refused."""
    import fcntl

    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".lock-0", "w") as f:  # what a running grid holds
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(grid.SpecError, match="another poe-jax run is writing here"):
            grid.run(smoke, out, progress=False)
    assert not (out / "spec.json").exists()
    res = grid.run(smoke.replace(max_steps=5, seeds=(0,), episodes=1), out, progress=False)  # lock released
    assert res.computed > 0
    (tmp_path / "file").write_text("x")
    with pytest.raises(grid.SpecError, match="is a file"):
        grid.run(smoke, tmp_path / "file", progress=False)


def test_headline_states_the_share_of_frozen_return_each_rule_kept():
    """The main job's first screen ends with what steering did, computed from the episodes."""
    import pandas as pd

    rows = []
    for goal, base in (("G1_speed", 100.0), ("G2_balanced", 200.0)):
        rows += [dict(goal=goal, prior="any", rule="frozen", param=0.0, return_goal=base)] * 2
        for prior, poe_k, add_k in (("random", 1.0, 0.1), ("trained", 1.2, 0.8)):
            rows += [dict(goal=goal, prior=prior, rule="poe", param=a, return_goal=poe_k * base * (1 - a / 10))
                     for a in (0.25, 0.5)]
            rows.append(dict(goal=goal, prior=prior, rule="additive", param=0.5, return_goal=add_k * base))
    df = pd.DataFrame(rows).assign(env="hopper", actor="zoo:a")
    random_line, trained_line, where = grid.headline(df, "DIR").splitlines()
    assert random_line.startswith("Under the random prior") and "poe (0.25-0.5) 95-98%" in random_line
    assert "additive 10%" in random_line
    assert "poe (0.25-0.5) 114-117%" in trained_line and "additive 80%" in trained_line
    assert where.endswith("poe-jax report DIR")


def test_the_first_screen_names_what_ran_and_ends_with_verdicts(reference, smoke):
    out, _ = reference
    text = grid.first_screen(out)
    lines = text.splitlines()
    assert lines[0] == "run: env hopper, actor actor, prior prior"
    assert lines[1].startswith("  actor's data: ")
    assert f"= {len(grid.read_episodes(out, serve_prior_blind=False))} episodes of {smoke.max_steps} steps" in lines[2]
    table = lines[lines.index("") + 1:lines.index("", lines.index("") + 1)]
    assert table[0].split()[:4] == ["goal", "prior", "shift", "frozen"]
    assert all(len(ln) <= grid.runner.SCREEN_WIDTH for ln in table)
    assert len(table) == 1 + len(smoke.goals) * len(smoke.priors) * len(smoke.shifts)
    # kl_reg(1) executes poe(0.5)'s mean: one column, one verdict, with the rounding gap measured
    assert "poe 0.5=kl_reg 1" in table[0] and "kl_reg 1" not in table[0].replace("poe 0.5=kl_reg 1", "")
    assert any(ln.startswith("poe 0.5 = kl_reg 1: one policy") for ln in lines)
    for q in smoke.priors:  # one verdict per prior quality present, each with its interval
        (line,) = [ln for ln in lines if ln.startswith(f"{q} prior: best ")]
        assert "95% CI" in line and line.endswith(".")
    assert lines[-1].endswith(f"poe-jax report {out}")


def test_verdicts_keep_shifts_apart_name_the_driving_goal_and_list_what_hurt():
    import pandas as pd

    rows = []
    for shift, k in (("none", 1.0), ("mass=1.5", 0.5)):
        for seed in range(6):
            wob = 1 + 0.01 * seed
            for goal, gain in (("G1_speed", 1.0), ("G3_target", 3.0)):  # poe's gain comes from G3
                rows.append(dict(goal=goal, prior="any", shift=shift, rule="frozen", param=0.0, seed=seed,
                                 return_goal=100.0 * k))
                rows.append(dict(goal=goal, prior="trained", shift=shift, rule="poe", param=0.5, seed=seed,
                                 return_goal=100.0 * k * gain * wob))
                rows.append(dict(goal=goal, prior="trained", shift=shift, rule="additive", param=0.5, seed=seed,
                                 return_goal=50.0 * k * wob))
    lines = grid.runner.verdict_lines(pd.DataFrame(rows))
    assert len(lines) == 2 and lines[0].startswith("trained prior under none: best poe 0.5 kept 205%")  # mean over goals of (1.025 - 1, 3.075 - 1)
    assert "mostly from G3_target" in lines[0] and "hurt (CI below 100%): additive 0.5 51%" in lines[0]
    assert lines[1].startswith("trained prior under mass=1.5: best poe 0.5")


def test_one_compile_per_program_and_a_second_run_compiles_nothing(smoke, tmp_path, monkeypatch):
    """A grid compiles one program per (rule, prior quality, noise switches) at its batch; the same grid again (or
    another with the same env, checkpoints' shapes and batch) reuses them: its compile time is 0."""
    from poe_jax.grid import runner
    from poe_jax.grid.plan import resolve

    monkeypatch.setattr(runner, "_COMPILED", {})  # this process's cache, empty for the count (the suite fills it)
    spec = smoke.replace(max_steps=7, chunk_size=16)
    before = len(runner._COMPILED)
    first = grid.run(spec, tmp_path / "a", progress=False)
    programs = len(set(resolve(spec).program_keys()))
    assert len(runner._COMPILED) - before == programs == first.summary["programs"] and first.summary["compile_s"] > 0
    second = grid.run(spec.replace(seeds=(5, 6)), tmp_path / "b", progress=False)
    assert second.summary["compile_s"] == 0 and len(runner._COMPILED) - before == programs
