"""Bad input and faults, as a new user meets them: every row is one command line, and each asserts
the exit code, that the message names the problem, that no traceback is printed, and that the
results already written in the run folder next to it are intact."""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from poe_jax.cli import main

GOOD = {"env": "hopper", "actor": "zoo:hopper-medium-iql", "prior": "zoo:hopper-prior",
        "goals": ["G1_speed", "G3_target"], "priors": ["trained"], "seeds": [0], "episodes": 1, "max_steps": 5,
        "chunk_size": 8, "backend": "native"}
RULES = {"frozen": [], "poe": [0.5]}


def _toml(fields: dict, rules: dict | str = RULES, extra: str = "") -> str:
    out = [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    out.append(extra)
    if isinstance(rules, str):
        out.append(rules)
    else:
        out += ["[rules]"] + [f"{k} = {json.dumps(v)}" for k, v in rules.items()]
    return "\n".join(out) + "\n"


def _digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file() and not p.name.startswith((".lock", ".tmp-")):  # locks and half-written temporaries
            h.update(p.relative_to(d).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with one finished run ('good'), and the files the rows point at."""
    w = tmp_path_factory.mktemp("bad")
    (w / "good.toml").write_text(_toml(GOOD))
    assert main(["run", str(w / "good.toml"), "--out", str(w / "good"), "--quiet"]) == 0
    (w / "binary.toml").write_bytes(bytes(range(256)))
    (w / "folder.toml").mkdir()
    (w / "afile").write_text("x")
    (w / "broken.toml").write_text("env = \n")
    (w / "notatorch.pt").write_text("not a torch file")
    (w / "notahdf5.hdf5").write_text("not hdf5")
    (w / "empty").mkdir()
    # a run whose last part was cut off mid-write by a kill (and a leftover temporary part)
    corrupt = w / "corrupt"
    assert main(["run", str(w / "good.toml"), "--out", str(corrupt), "--quiet", "--chunk-size", "2"]) == 0
    parts = sorted((corrupt / "episodes.parquet").glob("part-*.parquet"))
    parts[-1].write_bytes(parts[-1].read_bytes()[: len(parts[-1].read_bytes()) // 2])
    (corrupt / "episodes.parquet" / ".tmp-123-part-x.parquet").write_bytes(b"half")
    return w


def _spec_row(change: dict, *, rules=RULES, extra: str = "", drop: str | None = None):
    fields = {**GOOD, **change}
    if drop:
        fields.pop(drop)
    return ("spec", fields, rules, extra)


# (id, kind, arguments, expected message regex). kind "spec": a TOML written from GOOD with a change.
ROWS = [
    # --- every spec field: wrong type, out of range, misspelt
    ("env-type", _spec_row({"env": 3}), r"env: expected a string; got 3"),
    ("env-unknown", _spec_row({"env": "hoper"}), r"env: unknown env 'hoper'; known envs: hopper"),
    ("env-misspelt", _spec_row({"enb": "hopper"}, drop="env"), r"unknown spec field\(s\) \['enb'\]"),
    ("actor-type", _spec_row({"actor": 5}), r"actor: expected a checkpoint path, 'zoo:NAME', 'zoo:NAME@\*' or a non-empty list of them; got 5"),
    ("actor-unknown", _spec_row({"actor": "zoo:hopper-nope"}), r"actor: .*hopper-nope"),
    ("actor-wrong-kind", _spec_row({"actor": "zoo:hopper-prior"}), r"is a prior checkpoint, not an actor"),
    ("actor-missing-dir", _spec_row({"actor": "no/such/dir"}), r"actor: no checkpoint at .*no/such/dir"),
    ("actor-misspelt", _spec_row({"actro": "zoo:hopper-medium-iql"}, drop="actor"), r"unknown spec field\(s\) \['actro'\]"),
    ("prior-wrong-kind", _spec_row({"prior": "zoo:hopper-medium-iql"}), r"is a actor checkpoint, not a goal prior"),
    ("prior-other-env", _spec_row({"prior": "zoo:walker2d-prior"}), r"prior.*walker2d"),
    ("prior-misspelt", _spec_row({"priorr": "zoo:hopper-prior"}, drop="prior"), r"unknown spec field\(s\) \['priorr'\]"),
    ("rules-type", _spec_row({}, rules="rules = 3"), r"rules: expected a table"),
    ("rules-coef-type", _spec_row({}, rules={"poe": ["a"]}), r"rules.poe: expected a list of numbers; got 'a'"),
    ("rules-coef-range", _spec_row({}, rules={"poe": [1.5]}), r"rules.poe: .*alpha must be in \[0.0, 1.0\]; got alpha=1.5"),
    ("rules-beta-range", _spec_row({}, rules={"kl_reg": [-1.0]}), r"rules.kl_reg: .*beta must be in"),
    ("rules-beta-float32", _spec_row({}, rules={"kl_reg": [1e308]}), r"rules.kl_reg: .*beta=1e\+308 is beyond float32"),
    ("rules-misspelt", _spec_row({}, rules={"pow": [0.5]}), r"rules: unknown rule 'pow'; known rules: additive"),
    ("rules-empty", _spec_row({}, rules="[rules]"), r"rules: empty"),
    ("rules-no-coef", _spec_row({}, rules={"poe": []}), r"rules.poe: empty coefficient grid"),
    ("rules-frozen-coef", _spec_row({}, rules={"frozen": [0.5]}), r"rules.frozen: takes no coefficient"),
    ("critic-without-critic", _spec_row({"actor": "zoo:hopper-track1.2-sac"}, rules={"iql_guided": [0.1]}),
     r"need the actor's critic"),
    ("goals-unknown", _spec_row({"goals": ["G9"]}), r"goals: unknown goal 'G9'; known goals: G1_speed"),
    ("goals-empty", _spec_row({"goals": []}), r"goals: empty"),
    ("goals-wrong-env", _spec_row({"goals": ["G4_reach"]}),
     r"goals: goal 'G4_reach' does not apply to env 'hopper'; it applies to the envs that publish success: antmaze-umaze, antmaze-medium"),
    ("goals-duplicate", _spec_row({"goals": ["G1_speed", "G1_speed"]}), r"goals: duplicate entries"),
    ("goals-type", _spec_row({"goals": 3}), r"goals: expected a list of strings; got the bare value 3"),
    ("priors-unknown", _spec_row({"priors": ["trainedd"]}), r"priors: unknown prior quality 'trainedd'; known: trained"),
    ("priors-empty", _spec_row({"priors": []}), r"priors: empty"),
    ("shifts-range", _spec_row({"shifts": ["mass=-1"]}), r"shifts: mass must be finite and > 0"),
    ("shifts-misspelt", _spec_row({"shifts": ["mas=1"]}), r"shifts: cannot parse 'mas=1'"),
    ("shifts-type", _spec_row({"shifts": ["obs_noise=x"]}), r"shifts: obs_noise in 'obs_noise=x' is not a number"),
    ("seeds-float", _spec_row({"seeds": [1.5]}), r"seeds: expected a list of integers; got 1.5"),
    ("seeds-negative", _spec_row({"seeds": [-1]}), r"seeds: each must be an integer in \[0, 2\*\*32\); got -1"),
    ("seeds-too-big", _spec_row({"seeds": [2**32]}), r"seeds: each must be an integer in \[0, 2\*\*32\)"),
    ("seeds-bool", _spec_row({"seeds": [True]}), r"seeds: expected a list of integers; got True"),
    ("episodes-float", _spec_row({"episodes": 2.5}), r"episodes: expected an integer; got 2.5"),
    ("episodes-string", _spec_row({"episodes": "five"}), r"episodes: expected an integer; got 'five'"),
    ("episodes-zero", _spec_row({"episodes": 0}), r"episodes: must be >= 1; got 0"),
    ("max-steps-float", _spec_row({"max_steps": 20.5}), r"max_steps: expected an integer; got 20.5"),
    ("max-steps-zero", _spec_row({"max_steps": 0}), r"max_steps: must be >= 1"),
    ("chunk-float", _spec_row({"chunk_size": 1.5}), r"chunk_size: expected an integer; got 1.5"),
    ("chunk-zero", _spec_row({"chunk_size": 0}), r"chunk_size: must be >= 1"),
    ("sample-string", _spec_row({"sample": "false"}), r"sample: expected true or false; got 'false'"),
    ("backend-unknown", _spec_row({"backend": "cuda"}), r"backend: unknown backend 'cuda'; known: auto, native, mjx"),
    ("degraded-range", _spec_row({"degraded_noise": -1}), r"degraded_noise: must be finite and >= 0; got -1"),
    ("degraded-type", _spec_row({"degraded_noise": "x"}), r"degraded_noise: expected a number; got 'x'"),
    ("goal-param-type", _spec_row({}, extra='[goal_params.G3_target]\ntarget_speed = "fast"'),
     r"goal_params.G3_target.target_speed: must be a finite number; got 'fast'"),
    ("goal-param-misspelt", _spec_row({}, extra="[goal_params.G3_target]\nspeed = 1.0"),
     r"goal 'G3_target' has no parameter\(s\) \['speed'\]"),
    ("goal-param-range", _spec_row({}, extra="[goal_params.G3_target]\nwidth = 0"), r"goal_params.G3_target.width: must be a finite number > 0; got 0"),
    ("goal-param-goal", _spec_row({}, extra="[goal_params.G2_balanced]\nv_max = 3"), r"goal_params: goals \['G2_balanced'\] are not in goals"),
    ("env-option-misspelt", _spec_row({}, extra="[env_options]\nterminate = true"), r"env_options: unknown option\(s\) \['terminate'\]"),
    # --- goal parameters and env options: typed and range-checked before anything is loaded (finding 5, 6)
    ("goal-target-nan", _spec_row({}, extra="[goal_params.G3_target]\ntarget_speed = nan"),
     r"goal_params.G3_target.target_speed: must be a finite number; got nan"),
    ("goal-vmax-negative", _spec_row({"goals": ["G1_speed"]}, extra="[goal_params.G1_speed]\nv_max = -1"),
     r"goal_params.G1_speed.v_max: must be a finite number > 0; got -1"),
    ("goal-ctrl-weight-negative", _spec_row({"goals": ["G2_balanced"]}, extra="[goal_params.G2_balanced]\nctrl_weight = -50"),
     r"goal_params.G2_balanced.ctrl_weight: must be a finite number >= 0; got -50"),
    ("goal-param-bool", _spec_row({"goals": ["G1_speed"]}, extra="[goal_params.G1_speed]\nv_max = true"),
     r"goal_params.G1_speed.v_max: must be a finite number > 0; got True"),
    ("env-option-bool-string", _spec_row({}, extra='[env_options]\nterminate_when_unhealthy = "false"'),
     r"env_options.terminate_when_unhealthy: must be true or false; got 'false'"),
    ("env-option-max-steps", _spec_row({}, extra="[env_options]\nmax_steps = 2.7"),
     r"env_options.max_steps: a grid's horizon is its own max_steps field"),
    ("goal-params-not-tables", _spec_row({}, extra="goal_params = 3"), r"goal_params: expected tables \[goal_params.GOAL\]"),
    ("goal-params-not-a-table", _spec_row({}, extra="[goal_params]\nG3_target = 3"), r"goal_params: expected tables"),
    ("plugins-not-a-list", _spec_row({}, extra="plugins = 3"), r"plugins: expected a list of module names or .py files; got 3"),
    ("env-option-weight-nan", _spec_row({}, extra="[env_options]\nforward_reward_weight = nan"),
     r"env_options.forward_reward_weight: must be a finite number; got nan"),
    ("env-option-not-for-env", _spec_row({}, extra='[env_options]\nmain_body = "torso"'),
     r"env_options: \['main_body'\] do not apply to env 'hopper'"),
    ("env-option-no-body", _spec_row({"env": "ant", "actor": "zoo:ant-medium-iql", "prior": "zoo:ant-prior"},
                                     extra='[env_options]\nmain_body = "nobody"'),
     r"env_options.main_body: no body 'nobody'; bodies: "),
    ("env-options-type", _spec_row({}, extra="env_options = 3"), r"env_options: expected a table"),
    # --- booleans are not numbers; duplicates and shift labels (finding 13)
    ("rules-coef-bool", _spec_row({}, rules={"poe": [True]}), r"rules.poe: expected a list of numbers; got True"),
    ("rules-coef-duplicate", _spec_row({}, rules={"poe": [0.5, 0.5]}), r"rules.poe: duplicate coefficients \[0.5\]"),
    ("rules-coef-bare", _spec_row({}, rules="[rules]\npoe = 0.5"), r"rules.poe: expected a list of numbers; got the bare value 0.5 \(write \[0.5\]\)"),
    ("shifts-empty-label", _spec_row({"shifts": ["none", ""]}), r"shifts: an empty shift ''; write 'none'"),
    ("shifts-repeated-key", _spec_row({"shifts": ["obs_noise=0.1,obs_noise=0.2"]}), r"shifts: obs_noise is given twice in"),
    ("shifts-same-condition", _spec_row({"shifts": ["none", "mass=1.0"]}), r"shifts: 'none' and 'mass=1.0' are the same condition"),
    ("goals-bare-string", _spec_row({"goals": "G1_speed"}), r"goals: expected a list of strings; got the bare value 'G1_speed' \(write \['G1_speed'\]\)"),
    # --- sizes: refused in one line before anything is allocated (finding 14)
    ("episodes-huge", _spec_row({"episodes": 10**9}), r"grid: .* episodes need about .* of memory"),
    ("episodes-long", _spec_row({"episodes": 150_000}), r"600,000 episodes .* in 75,000 result parts.*: a very long run; add --yes"),
    ("max-steps-huge", _spec_row({"max_steps": 2**31}), r"max_steps: must be <= 1,000,000; got 2,147,483,648"),
    ("name-type", _spec_row({"name": 3}), r"name: expected a string; got 3"),
    ("plugins-module", _spec_row({"plugins": ["no_such_plugin_module"]}), r"plugins: cannot import 'no_such_plugin_module'"),
    ("plugins-file", _spec_row({"plugins": ["missing_plugin.py"]}), r"plugins: no such file .*missing_plugin.py"),
    # --- the config file itself
    ("config-invalid-toml", ("run", ["{w}/broken.toml"]), r"broken.toml: invalid TOML"),
    ("config-binary", ("run", ["{w}/binary.toml"]), r"binary.toml: not a text file"),
    ("config-folder", ("run", ["{w}/folder.toml"]), r"folder.toml: is a folder; give a grid TOML file"),
    ("config-missing", ("run", ["{w}/missing.toml"]), r"missing.toml: no such config file"),
    ("config-dev-null", ("run", ["/dev/null"]), r"/dev/null: empty; a grid config is TOML with env, actor, prior"),
    ("preset-unknown", ("run", ["--preset", "quickstartt"]), r"unknown preset 'quickstartt'; presets: "),
    ("config-and-preset", ("run", ["{w}/good.toml", "--preset", "smoke"]), r"give a CONFIG.toml or --preset NAME"),
    ("out-missing", ("runnoout", ["{w}/good.toml"]), r"--out DIR is required"),
    ("out-is-file", ("run", ["{w}/good.toml", "--out", "{w}/afile"]), r"out: .*afile is a file"),
    ("cli-chunk-zero", ("run", ["{w}/good.toml", "--chunk-size", "0"]), r"chunk_size: must be >= 1; got 0"),
    ("cli-actor-unknown", ("run", ["{w}/good.toml", "--actor", "zoo:nope"]), r"actor: .*nope"),
    ("cli-plugin-missing", ("run", ["{w}/good.toml", "--plugin", "{w}/nothere.py"]), r"plugins: no such file"),
    # --- results already there
    ("different-spec", ("runinto", ["good", "max_steps", 6]), r"holds 4 episodes of a different spec \(fields that differ: max_steps;"),
    ("corrupt-part", ("runinto", ["corrupt", None, None]), r"unreadable result part .*--repair"),
    ("report-corrupt-part", ("cli", ["report", "{w}/corrupt"]), r"unreadable result part .*--repair"),
    ("report-missing-dir", ("cli", ["report", "{w}/nothere"]), r"nothere is not a run folder"),
    ("report-a-file", ("cli", ["report", "{w}/afile"]), r"afile is not a run folder"),
    ("report-no-episodes", ("cli", ["report", "{w}/empty"]), r"empty has no episodes.parquet"),
    ("report-kl-nan", ("cli", ["report", "{w}/good", "--kl-budget", "nan"]), r"kl_budget \(--kl-budget\): must be a finite number > 0 .nats per step.; got nan"),
    ("report-kl-negative", ("cli", ["report", "{w}/good", "--kl-budget", "-1"]), r"kl_budget \(--kl-budget\): must be a finite number > 0"),
    # --- port, train, data: missing, wrong kind and corrupt files
    ("port-missing", ("cli", ["port", "corl", "{w}/nothere.pt", "--algo", "iql", "--env", "hopper", "--out", "{w}/p1"]), r"nothere.pt: no such file"),
    ("port-not-torch", ("cli", ["port", "corl", "{w}/notatorch.pt", "--algo", "iql", "--env", "hopper", "--out", "{w}/p2"]), r"notatorch.pt: not a PyTorch checkpoint"),
    ("port-env", ("cli", ["port", "corl", "{w}/notatorch.pt", "--algo", "iql", "--env", "hoper", "--out", "{w}/p3"]), r"env \(--env\): unknown env 'hoper'"),
    ("port-det-std", ("cli", ["port", "corl", "{w}/notatorch.pt", "--algo", "td3_bc", "--env", "hopper", "--det-std", "-1", "--out", "{w}/p4"]), r"det_std \(--det-std\): must be a finite number > 0"),
    ("train-missing", ("cli", ["train", "iql", "--dataset", "{w}/nothere.hdf5", "--env", "hopper", "--out", "{w}/t1"]), r"nothere.hdf5"),
    ("train-not-hdf5", ("cli", ["train", "bc", "--dataset", "{w}/notahdf5.hdf5", "--env", "hopper", "--out", "{w}/t2"]), r"notahdf5.hdf5"),
    ("train-prior-missing", ("cli", ["train", "prior", "--dataset", "{w}/nothere.hdf5", "--env", "hopper", "--out", "{w}/t3"]), r"nothere.hdf5"),
    ("train-env", ("cli", ["train", "iql", "--dataset", "{w}/notahdf5.hdf5", "--env", "hoper", "--out", "{w}/t4"]), r"--env: unknown env 'hoper'; known envs: hopper"),
    ("data-no-policies", ("cli", ["data", "generate", "--env", "hopper", "--phase", "datasets", "--out", "{w}/empty"]), r"empty/policies: no SAC snapshots; run --phase policies first"),
    ("train-steps-zero", ("cli", ["train", "iql", "--dataset", "{w}/notahdf5.hdf5", "--env", "hopper", "--out", "{w}/t5", "--steps", "0"]), r"--steps: must be an integer >= 1; got 0"),
    ("train-budget-nan", ("cli", ["train", "bc", "--dataset", "{w}/notahdf5.hdf5", "--env", "hopper", "--out", "{w}/t6", "--time-budget", "nan"]), r"--time-budget: must be a finite number > 0; got nan"),
    ("data-fraction-range", ("cli", ["data", "generate", "--env", "hopper", "--out", "{w}/d2", "--medium-fraction", "1.5"]), r"--medium-fraction: must be a finite number > 0 and < 1; got 1.5"),
    ("data-env", ("cli", ["data", "generate", "--env", "hoper", "--phase", "datasets", "--out", "{w}/d1"]), r"--env: unknown env 'hoper'; known envs: hopper"),
]


def _argv(kind, args, w: Path, tmp: Path) -> list[str]:
    fmt = [str(a).replace("{w}", str(w)) if a is not None else a for a in args]
    if kind == "run":
        return ["run", *fmt] + ([] if "--out" in fmt else ["--out", str(tmp / "out")]) + ["--quiet"]
    if kind == "runnoout":
        return ["run", *fmt, "--quiet"]
    if kind == "cli":
        return fmt
    raise AssertionError(kind)


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_gives_one_clear_line(row, work, tmp_path, capsys):
    name, (kind, *args), pattern = row
    before = _digest(work / "good")
    if kind == "spec":
        fields, rules, extra = args
        cfg = tmp_path / "bad.toml"
        cfg.write_text(_toml(fields, rules, extra))
        argv = ["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]
    elif kind == "runinto":
        target, field, value = args[0]
        fields = {**GOOD, **({field: value} if field else {})}
        cfg = tmp_path / "into.toml"
        cfg.write_text(_toml(fields))
        argv = ["run", str(cfg), "--out", str(work / target), "--quiet"]
    else:
        argv = _argv(kind, args[0], work, tmp_path)
    corrupt_before = _digest(work / "corrupt")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (name, code, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("poe-jax: error: "), err
    import re

    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert _digest(work / "good") == before  # nothing already written is lost
    assert _digest(work / "corrupt") == corrupt_before
    assert not (tmp_path / "out" / "spec.json").exists()  # a refused spec leaves nothing behind


def test_debug_shows_the_traceback(work, capsys):
    with pytest.raises(Exception, match="unknown preset"):
        main(["--debug", "run", "--preset", "nope", "--out", str(work / "x")])


def test_repair_moves_a_corrupt_part_aside_and_recomputes_its_lanes(work, tmp_path):
    import shutil

    import pandas as pd

    d = tmp_path / "corrupt"
    shutil.copytree(work / "corrupt", d)
    assert main(["run", str(work / "good.toml"), "--out", str(d), "--quiet", "--repair"]) == 0
    assert list((d / "corrupt").glob("part-*.parquet")) and not list((d / "episodes.parquet").glob(".tmp-*"))
    got = pd.read_parquet(d / "episodes.parquet").sort_values("lane").reset_index(drop=True)
    ref = pd.read_parquet(work / "good" / "episodes.parquet").sort_values("lane").reset_index(drop=True)
    assert got["lane"].is_unique
    pd.testing.assert_frame_equal(got.drop(columns="backend"), ref.drop(columns="backend"), check_exact=True)


def test_ctrl_c_in_run_keeps_what_was_written_and_says_how_to_resume(work, tmp_path, monkeypatch, capsys):
    from poe_jax.grid import runner

    real, calls = runner.records, []

    def records_then_ctrl_c(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "records", records_then_ctrl_c)
    out = tmp_path / "ctrlc"
    code = main(["run", str(work / "good.toml"), "--out", str(out), "--quiet", "--chunk-size", "2"])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert err.strip() == f"poe-jax: interrupted: 2 of 4 episodes kept in {out}; run the same command again to resume"
    monkeypatch.undo()
    assert main(["run", str(work / "good.toml"), "--out", str(out), "--quiet", "--chunk-size", "3"]) == 0
    import pandas as pd

    got = pd.read_parquet(out / "episodes.parquet")
    assert sorted(got["lane"]) == list(range(4))  # each lane once, across both chunkings


def test_concurrent_runs_on_one_dir_end_with_each_lane_once(work, tmp_path):
    """Two runs into one DIR with different chunk sizes, started together: one is refused at once
    (the lock), the other finishes; run again, in any order, each lane is there exactly once."""
    import subprocess
    import sys

    import pandas as pd

    out = tmp_path / "both"
    cmd = [sys.executable, "-m", "poe_jax.cli", "run", str(work / "good.toml"), "--out", str(out), "--quiet"]
    procs = [subprocess.Popen(cmd + ["--chunk-size", c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in ("1", "4")]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 2]), (codes, outs)
    for p, (o, e) in zip(procs, outs):
        if p.returncode == 2:
            assert "another poe-jax run is writing here" in e and "Traceback" not in e
    for c in ("4", "1"):  # either order, any chunk size: resume adds nothing twice
        assert subprocess.run(cmd + ["--chunk-size", c], capture_output=True, timeout=600).returncode == 0
    lanes = pd.read_parquet(out / "episodes.parquet")["lane"]
    assert sorted(lanes) == list(range(4))
    assert np.all(lanes.value_counts() == 1)


# ---------------------------------------------------------------- a run folder is untrusted input


def _one_error(capsys, code: int, pattern: str, status: int = 2) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == status, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    return lines[0]


_COPIES = itertools.count()


def _copy(work: Path, tmp_path: Path, name: str = "good") -> Path:
    d = tmp_path / f"copy-{name}-{next(_COPIES)}"
    shutil.copytree(work / name, d)
    return d


def _grids_toml(names: list[str]) -> str:
    """A multi-grid TOML: GOOD's fields shared, one [[grids]] table per name."""
    shared = {k: v for k, v in GOOD.items() if k not in ("env", "actor", "prior")}
    text = _toml(shared)
    for n in names:
        text += (f'\n[[grids]]\nname = {json.dumps(n)}\nenv = "hopper"\nactor = "zoo:hopper-medium-iql"\n'
                 'prior = "zoo:hopper-prior"\n')
    return text


def _rewrite_part(part: Path, change) -> None:
    """Rewrite one result part through ``change(DataFrame) -> DataFrame``, keeping its Parquet metadata."""
    import pyarrow as pa

    table = pq.read_table(part)
    new = pa.Table.from_pandas(change(table.to_pandas()), preserve_index=False)
    pq.write_table(new.replace_schema_metadata(table.schema.metadata), part)


@pytest.mark.parametrize("name", ["..", ".", "x" * 300, "episodes.parquet", "a/b", "rows.csv", "figures"])
def test_a_grid_name_never_reaches_outside_out(work, tmp_path, capsys, name):
    """Finding 1: a grid named '..' with --force wiped a finished run beside --out. Grid names are one folder
    name inside --out (also checked when grids come from Python), refused before any grid runs."""
    parent = _copy(work, tmp_path)  # a finished run: --out's parent
    before = _digest(parent)
    cfg = tmp_path / "grids.toml"
    cfg.write_text(_grids_toml([name, "second"]))
    out = parent / "sub"
    _one_error(capsys, main(["run", str(cfg), "--out", str(out), "--force", "--quiet"]),
               r"grids\[0\]\.name: .* cannot name a grid's folder")
    assert _digest(parent) == before and not out.exists()
    from poe_jax import grid

    spec = grid.load_specs(str(work / "good.toml"))[0]
    with pytest.raises(grid.SpecError, match="cannot name a grid's folder"):
        grid.run_many([spec.replace(name=name), spec.replace(name="b")], out, force=True, progress=False)
    assert _digest(parent) == before and not out.exists()


def test_force_names_what_it_discards_and_links_lead_nowhere(work, tmp_path, capsys):
    d = _copy(work, tmp_path)
    cfg = tmp_path / "other.toml"
    cfg.write_text(_toml({**GOOD, "max_steps": 6}))
    assert main(["run", str(cfg), "--out", str(d), "--quiet", "--force"]) == 0
    err = capsys.readouterr().err
    assert f"--force: discarded 4 episodes of another spec in {d}" in err
    # a result folder that is a link to another run's: --force removes the link, never what it points to
    outside = _copy(work, tmp_path, "corrupt")
    before = _digest(outside)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "episodes.parquet").symlink_to(outside / "episodes.parquet")
    _one_error(capsys, main(["run", str(work / "good.toml"), "--out", str(linked), "--quiet"]),
               r"holds \d+ episodes without a spec.json; use another --out, or --force")
    assert main(["run", str(work / "good.toml"), "--out", str(linked), "--quiet", "--force"]) == 0
    assert _digest(outside) == before and not (linked / "episodes.parquet").is_symlink()
    # a spec.json that links outside the run folder is never written through
    d2 = tmp_path / "d2"
    d2.mkdir()
    target = tmp_path / "precious.json"
    target.write_text("{}")
    (d2 / "spec.json").symlink_to(target)
    assert main(["run", str(work / "good.toml"), "--out", str(d2), "--quiet", "--force"]) == 2
    assert target.read_text() == "{}"
    assert "outside the run folder" in capsys.readouterr().err


def test_port_overwrite_replaces_only_a_checkpoint(work, tmp_path, capsys):
    """Finding 2: ``port --overwrite`` removed a grid run's folder; on a file it left a hidden .old copy."""
    d = _copy(work, tmp_path)
    before = _digest(d)
    argv = ["port", "corl", str(work / "notatorch.pt"), "--algo", "td3_bc", "--env", "hopper", "--overwrite", "--out"]
    _one_error(capsys, main(argv + [str(d)]), r"is a folder but not a checkpoint \(no card.json\); --overwrite replaces "
                                              "only a checkpoint")
    assert _digest(d) == before
    f = tmp_path / "afile"
    f.write_text("keep me")
    _one_error(capsys, main(argv + [str(f)]), r"afile: exists and is not a checkpoint folder")
    assert f.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_run_folder_holds_one_kind_of_run(work, tmp_path, capsys):
    """Finding 3: a single-grid run into a multi-grid run's folder was accepted (and the other way), also
    when both started together."""
    from poe_jax.grid import store

    multi = tmp_path / "multi"
    cfg = tmp_path / "grids.toml"
    cfg.write_text(_grids_toml(["a", "b"]))
    assert main(["run", str(cfg), "--out", str(multi), "--quiet"]) == 0
    capsys.readouterr()
    before = _digest(multi)
    _one_error(capsys, main(["run", str(work / "good.toml"), "--out", str(multi), "--quiet"]),
               r"holds a multi-grid run \(grids.json\); a single grid needs its own --out")
    single = _copy(work, tmp_path)
    _one_error(capsys, main(["run", str(cfg), "--out", str(single), "--quiet"]), r"holds a single-grid run")
    with store.lock(multi):  # another run holds the folder: both kinds are refused at once
        for c in (cfg, work / "good.toml"):
            _one_error(capsys, main(["run", str(c), "--out", str(multi), "--quiet"]),
                       r"another poe-jax run is writing here")
    assert _digest(multi) == before
    assert main(["report", str(multi)]) == 0  # still whole


def test_report_imports_no_code_named_in_the_run_folder(work, tmp_path, capsys):
    """Finding 4: ``report DIR`` imported the plugins named in DIR/spec.json."""
    d = _copy(work, tmp_path)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('code from a run folder ran')\n")
    raw = json.loads((d / "spec.json").read_text())
    raw["spec"]["plugins"] = [str(evil), "evil_module_that_is_not_imported"]
    from poe_jax.grid import store

    raw["sha256"] = store._seal(raw)  # the seal is a checksum, not a secret: an attacker recomputes it
    (d / "spec.json").write_text(json.dumps(raw))
    assert main(["report", str(d)]) == 0
    assert not marker.exists()
    text = (d / "report.md").read_text()
    assert "Plugins not loaded" in text and "evil.py" in text and "evil_module_that_is_not_imported" in text
    assert main(["report", str(d), "--plugin", str(evil)]) == 0 and marker.exists()  # the user's own choice


def test_report_on_an_unfinished_run_refuses_or_says_incomplete(work, tmp_path, capsys):
    """Finding 7: at 20 of 30 episodes report wrote verdicts with no word; at 8 of 30 it crashed."""
    from poe_jax.grid import store

    d = _copy(work, tmp_path)
    parts = sorted((d / "episodes.parquet").glob("part-*.parquet"))
    frozen = [p for p in parts if set(pq.read_table(p, columns=["rule"]).column("rule").to_pylist()) == {"frozen"}]
    for p in parts:
        if p not in frozen:
            p.unlink()  # only frozen's episodes: nothing to compare yet
    _one_error(capsys, main(["report", str(d)]), r"2 of 4 episodes; finish it with the same command .*--partial")
    assert main(["report", str(d), "--partial"]) == 0
    text = (d / "report.md").read_text()
    assert text.splitlines()[2].startswith("**INCOMPLETE: 2 of 4 episodes") and "no claim is decided" in text.lower()
    assert not (d / "claims.csv").exists()
    # part-way with comparisons to make: the full report, marked, and no verdict
    cfg = tmp_path / "more.toml"
    cfg.write_text(_toml({**GOOD, "seeds": [0, 1], "episodes": 5}))
    more = tmp_path / "more"
    assert main(["run", str(cfg), "--out", str(more), "--quiet"]) == 0
    last = sorted((more / "episodes.parquet").glob("part-*.parquet"))[-1]
    n_last = pq.read_metadata(last).num_rows
    last.unlink()
    _one_error(capsys, main(["report", str(more)]), rf"{40 - n_last} of 40 episodes; finish it")
    assert main(["report", str(more), "--partial"]) == 0
    text = (more / "report.md").read_text()
    assert f"**INCOMPLETE: {40 - n_last} of 40 episodes" in text and "Not decided: the run is INCOMPLETE" in text
    assert not (more / "claims.csv").exists() and (more / "labels.csv").exists()
    assert main(["run", str(work / "good.toml"), "--out", str(d), "--quiet"]) == 0  # finish it
    with store.lock(d):
        _one_error(capsys, main(["report", str(d)]), r"4 of 4 episodes; a run is writing into it now")
    assert main(["report", str(d)]) == 0 and (d / "claims.csv").exists()
    assert "INCOMPLETE" not in (d / "report.md").read_text()


def test_the_store_checks_every_part_it_reads(work, tmp_path, capsys):
    """Finding 11 (negative lanes, a hand-edited spec.json, a part missing a column) and finding 16's
    store messages (a readable part without 'lane'; a truncated spec.json), each with a fix that works."""
    good = pd.read_parquet(work / "good" / "episodes.parquet").sort_values("lane").reset_index(drop=True)
    run = ["run", str(work / "good.toml"), "--quiet", "--out"]

    def first_part(d):
        return sorted((d / "episodes.parquet").glob("part-*.parquet"))[0]

    d = _copy(work, tmp_path)
    _rewrite_part(first_part(d), lambda df: df.assign(lane=-1 - df["lane"]))
    _one_error(capsys, main(run + [str(d)]), r"lanes outside 0..3 .*--repair")
    _one_error(capsys, main(["report", str(d)]), r"lanes outside 0..3")

    d = _copy(work, tmp_path)
    raw = json.loads((d / "spec.json").read_text())
    raw["identity"]["priors"] = ["trained", "random"]  # would invent the random prior's frozen baseline
    (d / "spec.json").write_text(json.dumps(raw))
    _one_error(capsys, main(["report", str(d)]), r"does not match its recorded hash \(edited by hand\?\)")

    for change, pattern in ((lambda df: df.drop(columns="return_goal"), r"missing \['return_goal'\]"),
                            (lambda df: df.drop(columns="lane"), r"a result part without a 'lane' column")):
        d = _copy(work, tmp_path)
        _rewrite_part(first_part(d), change)
        line = _one_error(capsys, main(run + [str(d)]), pattern + r".*--repair")
        assert "unreadable" not in line
        assert main(run + [str(d), "--repair"]) == 0  # moved aside and recomputed
        assert len(list((d / "corrupt").glob("part-*"))) == 1
        got = pd.read_parquet(d / "episodes.parquet").sort_values("lane").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, good)

    d = _copy(work, tmp_path)
    text = (d / "spec.json").read_text()
    (d / "spec.json").write_text(text[: len(text) // 2])  # truncated
    line = _one_error(capsys, main(run + [str(d)]), r"spec.json: unreadable .*intact.*--repair")
    assert "--force" not in line  # no advice that loses data
    capsys.readouterr()
    assert main(run + [str(d), "--repair"]) == 0
    assert "(0 computed now, 4 already there)" in capsys.readouterr().out  # every episode kept


def test_non_finite_actions_are_counted_and_never_a_plausible_zero(work, tmp_path, capsys):
    """Finding 10: a rule (or actor) that emits NaN recorded a plausible goal return, since MuJoCo resets its
    state on a NaN control. The store counts such steps per episode; the first screen and the report exclude
    those episodes and name them."""
    plugin = tmp_path / "nan_rule.py"
    plugin.write_text("import jax.numpy as jnp\nfrom poe_jax import compose\nfrom poe_jax.kernels.gaussian import DiagGaussian\n"
                      "@compose.register_rule('nan_poe', param='alpha', bounds=(0.0, 1.0))\n"
                      "def nan_poe(actor, prior, alpha):\n"
                      "    c = compose.poe(actor, prior, alpha)\n"
                      "    return DiagGaussian(c.mean * jnp.nan, c.std)\n")
    import subprocess
    import sys

    cfg = tmp_path / "nan.toml"
    cfg.write_text(_toml(GOOD, rules={"frozen": [], "nan_poe": [0.5]}))
    out = tmp_path / "nan"
    cli = [sys.executable, "-m", "poe_jax"]  # its own process: the plugin's rule stays out of this one's registry
    res = subprocess.run([*cli, "run", str(cfg), "--out", str(out), "--quiet", "--plugin", str(plugin)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "EXCLUDED: 2 episodes executed a NaN or inf action (nan_poe(0.5))" in res.stdout
    assert "nan_poe" not in res.stdout.split("EXCLUDED")[1].split("\n", 1)[1]  # nor in the headline
    df = pd.read_parquet(out / "episodes.parquet")
    bad = df[df.rule == "nan_poe"]
    assert (bad["nonfinite_actions"] == bad["length"]).all() and (bad["length"] > 0).all()
    assert (df.loc[df.rule == "frozen", "nonfinite_actions"] == 0).all()
    res = subprocess.run([*cli, "report", str(out), "--plugin", str(plugin)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    report = (out / "report.md").read_text()
    assert "2 executed a NaN or inf action" in report and "nan_poe(0.5)" in report


def test_train_refuses_non_finite_data_and_losses(tmp_path, capsys):
    from poe_jax import data
    from poe_jax.train import offline

    rng = np.random.default_rng(0)
    n = 50
    base = {"observations": rng.normal(size=(n, 11)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32), "rewards": rng.normal(size=n).astype(np.float32),
            "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool)}
    for key, row, pattern in (("rewards", 7, r"rewards row 7 is not finite"),
                              ("observations", 3, r"observations row 3 is not finite")):
        arrays = {k: v.copy() for k, v in base.items()}
        arrays[key][row] = np.nan if key == "rewards" else np.inf
        f = data.write(tmp_path / f"hopper-{key}.hdf5", arrays)
        out = tmp_path / f"t-{key}"
        _one_error(capsys, main(["train", "bc", "--dataset", str(f), "--env", "hopper", "--out", str(out),
                                 "--steps", "10"]), pattern)
        assert not list(out.glob("*-bc")) if out.exists() else True
    with pytest.raises(offline.TrainDiverged, match=r"loss 'q' of agent 1 became nan by step 300; nothing was saved"):
        offline.check_losses("iql", np.array([[0.1, 0.2], [np.nan, 0.3]]), ("q", "v"), 300)
    from poe_jax import checkpoints

    actor = checkpoints.load("zoo:hopper-medium-iql")
    nan_actor = actor.replace(params=jax_tree_nan(actor.params))
    with pytest.raises(checkpoints.CheckpointError, match="have NaN or inf values"):
        checkpoints.save(tmp_path / "nan-actor", nan_actor, env="hopper")
    assert not (tmp_path / "nan-actor").exists()


def jax_tree_nan(tree):
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, [np.full(np.shape(x), np.nan, np.float32) for x in leaves])


def test_library_checks_coefficients_budgets_and_lists():
    """Finding 12."""
    import jax
    import jax.numpy as jnp

    from poe_jax import compose, grid
    from poe_jax.kernels import selectors as select
    from poe_jax.kernels.gaussian import DiagGaussian

    a = DiagGaussian(jnp.zeros((4, 2)), jnp.ones((4, 2)))
    g = DiagGaussian(jnp.ones((4, 2)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"alpha must be in \[0.0, 1.0\]; got alpha=2.0, 5.0"):
        select.kl_budget(a, g, jnp.array([2.0, 5.0]), 0.25)
    for budget in (float("nan"), -1.0):
        for fn in (lambda b: select.kl_budget(a, g, jnp.linspace(0, 1, 5), b), lambda b: select.adaptive_alpha(a, g, b),
                   lambda b: compose.poe_adaptive(a, g, b)):
            with pytest.raises(ValueError, match=r"budget must be in \[0.0, inf\]"):
                fn(budget)
    # traced: an invalid budget selects nothing (NaN), never a plausible coefficient
    assert np.isnan(jax.jit(lambda b: select.kl_budget(a, g, jnp.linspace(0, 1, 5), b).coefficient)(jnp.nan))
    assert float(select.kl_budget(a, g, jnp.linspace(0, 1, 11), 0.25).coefficient) == pytest.approx(0.5)
    safe = jax.jit(compose.checked(lambda p: compose.poe(a, g, p)))  # the README's advice, under jit
    np.testing.assert_allclose(safe(0.5).mean, compose.poe(a, g, 0.5).mean)
    with pytest.raises(Exception, match=r"alpha must be in \[0.0, 1.0\]; got alpha=1.5"):
        jax.block_until_ready(safe(1.5))
    spec = grid.load_specs(Path(__file__).parent.parent / "examples" / "grid.toml")[0]
    with pytest.raises(grid.SpecError, match=r"goals: expected a list; got the bare value 'G1_speed' \(write \['G1_speed'\]\)"):
        grid.validate(spec.replace(goals="G1_speed"))


@pytest.mark.parametrize("code", ["ENOSPC", "EFBIG", "EROFS"])
def test_os_errors_are_one_line_naming_the_path_and_keep_what_was_written(work, tmp_path, monkeypatch, capsys, code):
    """Finding 15: OS errors other than permissions ended in tracebacks."""
    d = tmp_path / "os"
    real, calls = pq.write_table, []

    def fail_second(table, where, *a, **k):
        calls.append(where)
        if len(calls) == 2:
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
        return real(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", fail_second)
    line = _one_error(capsys, main(["run", str(work / "good.toml"), "--out", str(d), "--quiet", "--chunk-size", "2"]),
                      rf"episodes.parquet/part-.*\.parquet: .* \[{code}\]; ")
    assert {"ENOSPC": "disk is full", "EFBIG": "size limit", "EROFS": "read-only"}[code] in line
    monkeypatch.undo()
    kept = list((d / "episodes.parquet").glob("part-*.parquet"))
    assert len(kept) == 1 and not list((d / "episodes.parquet").glob(".tmp-*"))
    assert main(["run", str(work / "good.toml"), "--out", str(d), "--quiet"]) == 0  # resumes


def test_a_file_where_a_folder_belongs_is_one_line(work, tmp_path, capsys):
    d = tmp_path / "eexist"
    d.mkdir()
    (d / "episodes.parquet").write_text("a file, not a folder")
    _one_error(capsys, main(["run", str(work / "good.toml"), "--out", str(d), "--quiet"]),
               r"episodes.parquet: File exists \[EEXIST\]; something is already there")
    assert (d / "episodes.parquet").read_text() == "a file, not a folder"


def test_chunk_size_does_not_change_a_number(work, tmp_path):
    """Finding 9: chunk 1 and chunk 3 differed in 27 of 30 lanes (a batch of one took another XLA kernel).
    Every batch is at least MIN_BATCH lanes, so the numbers are bit-equal at any chunk size."""
    frames = []
    for c in ("1", "3", "64"):
        out = tmp_path / f"chunk{c}"
        assert main(["run", str(work / "good.toml"), "--out", str(out), "--quiet", "--chunk-size", c]) == 0
        frames.append(pd.read_parquet(out / "episodes.parquet").sort_values("lane").reset_index(drop=True))
    for f in frames[1:]:
        pd.testing.assert_frame_equal(f, frames[0], check_exact=True)


def test_messages_point_to_the_fix(work, tmp_path, capsys):
    """Finding 16: a missing orbax file, an unusable --states file, a BOM."""
    ckpt = tmp_path / "prior"
    from poe_jax import checkpoints

    shutil.copytree(checkpoints.zoo_path("zoo:hopper-prior"), ckpt)
    (ckpt / "params" / "_METADATA").unlink()
    cfg = tmp_path / "broken-prior.toml"
    cfg.write_text(_toml({**GOOD, "prior": str(ckpt)}))
    _one_error(capsys, main(["run", str(cfg), "--out", str(tmp_path / "o1"), "--quiet"]),
               r"params/_METADATA is missing \(a truncated or partly copied checkpoint\)")
    assert not (tmp_path / "o1" / "spec.json").exists()
    _one_error(capsys, main(["report", str(work / "good"), "--states", str(work / "afile")]),
               r"states \(--states\): .*afile: not a states file")
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + _toml(GOOD).encode())
    assert main(["run", str(bom), "--out", str(tmp_path / "bom"), "--quiet"]) == 0


def test_ctrl_c_at_any_moment_of_start_up_exits_130_with_one_line(work, tmp_path):
    """Finding 8: Ctrl-C 1.5-4.5 s after start (imports, checkpoint load, compile) segfaulted in 11 of 22 tries,
    after the right message (XLA was still compiling on its own threads while the interpreter tore the JAX
    client down). Interrupted at several moments of start-up: exit 130, exactly one line, nothing else."""
    import signal
    import subprocess
    import sys
    import time

    interrupted = 0
    for i, delay in enumerate((0.1, 0.3, 0.8, 1.5, 2.5, 3.5, 5.0)):
        out = tmp_path / f"int{i}"
        proc = subprocess.Popen([sys.executable, "-m", "poe_jax", "run", str(work / "good.toml"), "--out", str(out),
                                 "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        if proc.poll() is not None:  # finished before the signal: nothing to interrupt
            proc.communicate()
            continue
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if proc.returncode == 0 and (out / "summary.json").exists() and not lines:
            continue  # the signal came as the finished run was leaving: ignored, nothing to interrupt
        if "init_import_site" in err and not out.exists():
            continue  # on a loaded machine: the interpreter's own start-up (its site module), before poe_jax runs
        assert proc.returncode == 130, (delay, proc.returncode, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("poe-jax: interrupted"), (delay, err[-2000:])
        interrupted += 1
        if (out / "spec.json").exists():  # whatever was kept resumes
            assert subprocess.run([sys.executable, "-m", "poe_jax", "run", str(work / "good.toml"), "--out", str(out),
                                   "--quiet"], capture_output=True, timeout=300).returncode == 0
    assert interrupted >= 4, "start-up finished before most signals: the test did not interrupt start-up"


def test_report_writes_only_inside_the_run_folder(work, tmp_path, capsys):
    d = _copy(work, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (d / "figures").symlink_to(outside)
    _one_error(capsys, main(["report", str(d)]), r"figures: a link to .*elsewhere, outside the run folder")
    assert not list(outside.iterdir()) and not (d / "report.md").exists()


def test_the_docs_table_lists_every_row():
    """docs/bad-input.md is the table of this file: every row id, and every scenario test, appears there."""
    doc = (Path(__file__).parent.parent / "docs" / "bad-input.md").read_text()
    missing = [r[0] for r in ROWS if f"| {r[0]} |" not in doc]
    scenarios = [n for n in globals() if n.startswith("test_") and n not in (
        "test_bad_input_gives_one_clear_line", "test_debug_shows_the_traceback", "test_the_docs_table_lists_every_row",
        "test_repair_moves_a_corrupt_part_aside_and_recomputes_its_lanes",
        "test_concurrent_runs_on_one_dir_end_with_each_lane_once")]
    missing += [n for n in scenarios if f"`{n}`" not in doc]
    assert not missing, missing


def test_an_untrusted_folder_cannot_reach_outside_through_links(work, tmp_path, capsys):
    """A lock file, a temporary name or a report output planted as a link (or a hard link) to a file
    outside the folder: the file is never written."""
    from poe_jax.grid import store

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    d = _copy(work, tmp_path)
    (d / ".lock-0").unlink()
    (d / ".lock-0").symlink_to(victim)
    _one_error(capsys, main(["run", str(work / "good.toml"), "--out", str(d), "--quiet"]), r"\.lock-0: a link")
    assert victim.read_text() == "keep"
    (d / ".lock-0").unlink()
    (d / f".summary.json.tmp-{os.getpid()}").symlink_to(victim)  # a planted temporary name
    store.write_json(d / "summary.json", {"x": 1}, d)
    assert victim.read_text() == "keep" and not (d / "summary.json").is_symlink()
    (d / "report.md").unlink(missing_ok=True)
    os.link(victim, d / "report.md")  # a hard link: replaced, not written through
    assert main(["report", str(d)]) == 0
    assert victim.read_text() == "keep" and (d / "report.md").read_text().startswith("# poe_jax report")
    # --force never deletes episodes before every path it will touch is checked
    d2 = _copy(work, tmp_path)
    (d2 / "spec.json").unlink()
    (d2 / "spec.json").symlink_to(victim)
    cfg = tmp_path / "other.toml"
    cfg.write_text(_toml({**GOOD, "max_steps": 6}))
    before = sorted(p.name for p in (d2 / "episodes.parquet").iterdir())
    assert main(["run", str(cfg), "--out", str(d2), "--quiet", "--force"]) == 2
    assert "outside the run folder" in capsys.readouterr().err
    assert sorted(p.name for p in (d2 / "episodes.parquet").iterdir()) == before and victim.read_text() == "keep"


def test_checkpoint_and_run_folders_stay_apart(work, tmp_path, capsys):
    from poe_jax import checkpoints

    ck = tmp_path / "ck"
    shutil.copytree(checkpoints.zoo_path("zoo:hopper-prior"), ck)
    _one_error(capsys, main(["run", str(work / "good.toml"), "--out", str(ck), "--quiet"]),
               r"is a checkpoint folder \(card.json\); give a folder for the run")
    (ck / "episodes.parquet").mkdir()  # a checkpoint folder that also holds something else
    argv = ["port", "corl", str(work / "notatorch.pt"), "--algo", "td3_bc", "--env", "hopper", "--overwrite", "--out"]
    _one_error(capsys, main(argv + [str(ck)]), r"holds more than a checkpoint \(episodes.parquet\)")
    assert (ck / "episodes.parquet").is_dir() and (ck / "card.json").is_file()


def test_the_store_refuses_tampering_beyond_the_parts(work, tmp_path, capsys):
    """spec.json is sealed whole (its lane count too); a FIFO where a file belongs is refused, never read."""
    d = _copy(work, tmp_path)
    raw = json.loads((d / "spec.json").read_text())
    raw["n_lanes"] = 2  # would hide two missing episodes
    (d / "spec.json").write_text(json.dumps(raw))
    _one_error(capsys, main(["report", str(d)]), r"spec.json: its content does not match its recorded hash")
    assert main(["run", str(work / "good.toml"), "--out", str(d), "--quiet", "--repair"]) == 0
    assert main(["report", str(d)]) == 0  # repaired: every part records this spec's hash
    capsys.readouterr()
    for victim in ("episodes.parquet/part-x.parquet", "spec.json"):
        d = _copy(work, tmp_path)
        (d / victim).unlink(missing_ok=True)
        os.mkfifo(d / victim)
        _one_error(capsys, main(["report", str(d)]), r"not a regular file")


def test_one_goal_parameter_in_two_spellings_is_one_spec(work, tmp_path, capsys):
    """target_speed = 2 and = 2.0 are the same grid: a resume with either keeps every episode."""
    out = tmp_path / "spelling"
    for value in ("2", "2.0"):
        cfg = tmp_path / f"g{value}.toml"
        cfg.write_text(_toml(GOOD, extra=f"[goal_params.G3_target]\ntarget_speed = {value}"))
        assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
        sorted((out / "episodes.parquet").glob("part-*.parquet"))[-1].unlink()
    assert main(["run", str(tmp_path / "g2.toml"), "--out", str(out), "--quiet"]) == 0
    assert main(["report", str(out)]) == 0


def test_a_run_whose_every_episode_acted_nan_reports_without_crashing(work, tmp_path, capsys):
    d = _copy(work, tmp_path)
    for part in (d / "episodes.parquet").glob("part-*.parquet"):
        _rewrite_part(part, lambda df: df.assign(nonfinite_actions=df["length"]))
    assert main(["report", str(d)]) == 0
    text = (d / "report.md").read_text()
    assert "Nothing to compare" in text and "4 executed a NaN or inf action" in text


def test_kl_budget_gives_nothing_plausible_for_bad_input():
    import jax.numpy as jnp

    from poe_jax import grid
    from poe_jax.kernels import selectors as select
    from poe_jax.kernels.gaussian import DiagGaussian

    g = DiagGaussian(jnp.ones((4, 2)), jnp.ones((4, 2)))
    nan_actor = DiagGaussian(jnp.full((4, 2), jnp.nan), jnp.ones((4, 2)))
    assert np.isnan(float(select.kl_budget(nan_actor, g, jnp.linspace(0, 1, 5), 0.2).coefficient))
    with pytest.raises(ValueError, match="boolean"):
        select.kl_budget(g, g, jnp.linspace(0, 1, 5), True)
    with pytest.raises(ValueError, match="coefficients: empty"):
        select.kl_budget(g, g, jnp.zeros(0), 0.2)
    spec = grid.load_specs(str(Path(__file__).parent.parent / "examples" / "grid.toml"))[0]
    with pytest.raises(grid.SpecError, match=r"rules: expected a table"):
        grid.validate(spec.replace(rules=[("poe", [0.5])]))
    with pytest.raises(grid.SpecError, match=r"goal_params: expected tables"):
        grid.validate(spec.replace(goal_params={"G3_target": None}))


def test_a_bad_checkpoint_is_refused_before_out_is_touched(work, tmp_path, capsys):
    """Review finding: a checkpoint whose weights fail their checksum was found only after --out was created
    and locked, and with --force after the finished run in it was discarded. Now the refusal comes first."""
    from poe_jax import checkpoints

    bad = tmp_path / "bad-actor"
    shutil.copytree(checkpoints.zoo_path("zoo:hopper-medium-iql"), bad)
    card = json.loads((bad / "card.json").read_text())
    card["sha256"] = "0" * 64
    (bad / "card.json").write_text(json.dumps(card))
    cfg = tmp_path / "bad.toml"
    cfg.write_text(_toml({**GOOD, "actor": str(bad), "max_steps": 6}))
    d = _copy(work, tmp_path)
    before = _digest(d)
    _one_error(capsys, main(["run", str(cfg), "--out", str(d), "--force", "--quiet"]), r"checksum")
    assert _digest(d) == before
    fresh = tmp_path / "fresh"
    _one_error(capsys, main(["run", str(cfg), "--out", str(fresh), "--quiet"]), r"checksum")
    assert not fresh.exists()


def test_a_states_file_is_checked_and_a_cards_probe_states_stays_in_the_zoo(work, tmp_path, capsys):
    """Review findings: a .npy file as --states gave a traceback; NaN states were scored into empty columns
    without a word; a card's probe_states naming an absolute path read a file outside the zoo."""
    from poe_jax.analysis import offpolicy

    npy = tmp_path / "states.npy"
    np.save(npy, np.zeros((4, 11), np.float32))
    _one_error(capsys, main(["report", str(work / "good"), "--states", str(npy)]),
               r"states \(--states\): .*states.npy: not a states file .*not an .npz archive")
    nan = tmp_path / "nan.npz"
    obs = np.zeros((4, 11), np.float32)
    obs[2, 3] = np.nan
    np.savez(nan, observations=obs)
    _one_error(capsys, main(["report", str(work / "good"), "--states", str(nan)]),
               r"states \(--states\): .*1 of 4 states are not finite \(first: row 2\)")
    outside = tmp_path / "outside.npz"
    np.savez(outside, observations=np.zeros((4, 11), np.float32))
    for bad in (str(outside), 5, ["a"], "../probe-states/hopper-medium.npz", ".hidden.npz"):
        assert offpolicy.find_states(bad) is None, bad
    assert offpolicy.find_states("hopper-medium") is not None


@pytest.mark.parametrize("field, value, pattern", [
    ("architecture", "abc", r"card field architecture is \"abc\"; expected an object"),
    ("params", "x", r"card field params is \"x\"; expected an object"),
    ("normalization", 5, r"card field normalization is 5; expected an object or null"),
    ("obs_size", "11", r"card field obs_size is \"11\"; expected a positive integer"),
    ("published", {"algo": "IQL", "dataset": "hopper-medium-v2", "score": "66.3"},
     r"card field published.score is \"66.3\"; expected a finite number"),
    ("probe_states", 5, r"card field probe_states is 5; expected a string"),
])
def test_a_card_field_of_the_wrong_type_is_one_line(work, tmp_path, capsys, field, value, pattern):
    """Review findings: card fields of the wrong type gave tracebacks in run, report and zoo (a string
    architecture, a string published score, a number for probe_states after every episode had run)."""
    from poe_jax import checkpoints

    bad = tmp_path / "actor"
    shutil.copytree(checkpoints.zoo_path("zoo:hopper-medium-iql"), bad)
    card = json.loads((bad / "card.json").read_text())
    card[field] = value
    (bad / "card.json").write_text(json.dumps(card))
    cfg = tmp_path / "bad.toml"
    cfg.write_text(_toml({**GOOD, "actor": str(bad)}))
    _one_error(capsys, main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]), pattern)
    assert not (tmp_path / "o").exists()


def test_train_checks_the_datas_layout_before_writing_a_log(tmp_path, capsys):
    """Review findings: observations of the wrong width gave a flax traceback, 150 action rows beside 200
    observations an IndexError, a prior's data without infos/qpos a KeyError; each wrote --out's log first."""
    import h5py

    rng = np.random.default_rng(0)
    n = 40
    base = {"observations": rng.normal(size=(n, 11)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32), "rewards": rng.normal(size=n).astype(np.float32),
            "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool)}
    cases = (("observations", rng.normal(size=(n, 5)).astype(np.float32), "bc",
              r"observations is of shape \[40, 5\]; expected \[n, 11\] for this env"),
             ("actions", base["actions"][:30], "bc", r"actions is 30 rows; expected 40, one per observation"),
             ("actions", np.zeros(n, np.float32), "bc", r"actions is of shape \[40\]; expected \[n, 3\]"),
             (None, None, "prior", r"infos/qpos is missing; expected an array with one row per step"))
    for i, (key, value, algo, pattern) in enumerate(cases):
        arrays = dict(base) if key is None else {**base, key: value}
        f = tmp_path / f"hopper-{i}.hdf5"
        with h5py.File(f, "w") as h:  # data.write refuses such files itself; a dataset may come from anywhere
            for k, v in arrays.items():
                h[k] = v
        out = tmp_path / f"t-{i}"
        _one_error(capsys, main(["train", algo, "--dataset", str(f), "--env", "hopper", "--out", str(out),
                                 "--steps", "10"]), pattern)
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_base_dir_is_not_a_spec_field_a_user_sets(work, tmp_path, capsys):
    """Review finding: base_dir (where relative checkpoints and .py plugins resolve: the TOML's folder) was
    accepted from a TOML or --set unchecked: 5 gave a TypeError, a path moved where plugins are imported from."""
    for extra, argv in (("base_dir = 5\n", []), ('base_dir = "/tmp"\n', []), ("", ["--set", "base_dir=/tmp"])):
        cfg = tmp_path / "b.toml"
        cfg.write_text(_toml(GOOD, extra=extra))
        _one_error(capsys, main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet", *argv]),
                   r"unknown spec field\(s\) \['base_dir'\]")
        assert not (tmp_path / "o").exists()
