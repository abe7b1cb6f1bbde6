"""Bad input and faults, as a new user meets them: every row is one command line, and each asserts
the exit code, that the message names the problem, that no traceback is printed, and that the
results already written in the run folder next to it are intact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
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
    ("actor-type", _spec_row({"actor": 5}), r"actor: expected a string; got 5"),
    ("actor-unknown", _spec_row({"actor": "zoo:hopper-nope"}), r"actor: .*hopper-nope"),
    ("actor-wrong-kind", _spec_row({"actor": "zoo:hopper-prior"}), r"is a prior checkpoint, not an actor"),
    ("actor-missing-dir", _spec_row({"actor": "no/such/dir"}), r"actor: no checkpoint at .*no/such/dir"),
    ("actor-misspelt", _spec_row({"actro": "zoo:hopper-medium-iql"}, drop="actor"), r"unknown spec field\(s\) \['actro'\]"),
    ("prior-wrong-kind", _spec_row({"prior": "zoo:hopper-medium-iql"}), r"is a actor checkpoint, not a goal prior"),
    ("prior-other-env", _spec_row({"prior": "zoo:walker2d-prior"}), r"prior.*walker2d"),
    ("prior-misspelt", _spec_row({"priorr": "zoo:hopper-prior"}, drop="prior"), r"unknown spec field\(s\) \['priorr'\]"),
    ("rules-type", _spec_row({}, rules="rules = 3"), r"rules: expected a table"),
    ("rules-coef-type", _spec_row({}, rules={"poe": ["a"]}), r"rules.poe: expected a list of float"),
    ("rules-coef-range", _spec_row({}, rules={"poe": [1.5]}), r"rules.poe: .*alpha must be in \[0.0, 1.0\]; got alpha=1.5"),
    ("rules-beta-range", _spec_row({}, rules={"kl_reg": [-1.0]}), r"rules.kl_reg: .*beta must be in"),
    ("rules-misspelt", _spec_row({}, rules={"pow": [0.5]}), r"rules: unknown rule 'pow'; known rules: additive"),
    ("rules-empty", _spec_row({}, rules="[rules]"), r"rules: empty"),
    ("rules-no-coef", _spec_row({}, rules={"poe": []}), r"rules.poe: empty coefficient grid"),
    ("rules-frozen-coef", _spec_row({}, rules={"frozen": [0.5]}), r"rules.frozen: takes no coefficient"),
    ("critic-without-critic", _spec_row({"actor": "zoo:hopper-track1.2-sac"}, rules={"iql_guided": [0.1]}),
     r"need the actor's critic"),
    ("goals-unknown", _spec_row({"goals": ["G9"]}), r"goals: unknown goal 'G9'; known goals: G1_speed"),
    ("goals-empty", _spec_row({"goals": []}), r"goals: empty"),
    ("goals-wrong-env", _spec_row({"goals": ["G4_reach"]}),
     r"goals: goal 'G4_reach' does not apply to env 'hopper'; it applies to antmaze-umaze, antmaze-medium"),
    ("goals-duplicate", _spec_row({"goals": ["G1_speed", "G1_speed"]}), r"goals: duplicate entries"),
    ("goals-type", _spec_row({"goals": 3}), r"goals: unknown goal '3'"),
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
     r"goal_params.G3_target.target_speed: expected a number; got 'fast'"),
    ("goal-param-misspelt", _spec_row({}, extra="[goal_params.G3_target]\nspeed = 1.0"),
     r"goal 'G3_target' has no parameter\(s\) \['speed'\]"),
    ("goal-param-range", _spec_row({}, extra="[goal_params.G3_target]\nwidth = 0"), r"width: must be > 0"),
    ("goal-param-goal", _spec_row({}, extra="[goal_params.G2_balanced]\nv_max = 3"), r"goal_params: goals \['G2_balanced'\] are not in goals"),
    ("env-option-misspelt", _spec_row({}, extra="[env_options]\nterminate = true"), r"env_options: unknown option\(s\) \['terminate'\]"),
    ("name-type", _spec_row({"name": 3}), r"name: expected a string; got 3"),
    ("plugins-module", _spec_row({"plugins": ["no_such_plugin_module"]}), r"plugins: cannot import 'no_such_plugin_module'"),
    ("plugins-file", _spec_row({"plugins": ["missing_plugin.py"]}), r"plugins: no such file .*missing_plugin.py"),
    # --- the config file itself
    ("config-invalid-toml", ("run", ["{w}/broken.toml"]), r"broken.toml: invalid TOML"),
    ("config-binary", ("run", ["{w}/binary.toml"]), r"binary.toml: not a text file"),
    ("config-folder", ("run", ["{w}/folder.toml"]), r"folder.toml: is a folder; give a grid TOML file"),
    ("config-missing", ("run", ["{w}/missing.toml"]), r"missing.toml: no such config file"),
    ("preset-unknown", ("run", ["--preset", "quickstartt"]), r"unknown preset 'quickstartt'; presets: "),
    ("config-and-preset", ("run", ["{w}/good.toml", "--preset", "smoke"]), r"give a CONFIG.toml or --preset NAME"),
    ("out-missing", ("runnoout", ["{w}/good.toml"]), r"--out DIR is required"),
    ("out-is-file", ("run", ["{w}/good.toml", "--out", "{w}/afile"]), r"out: .*afile is a file"),
    ("cli-chunk-zero", ("run", ["{w}/good.toml", "--chunk-size", "0"]), r"chunk_size: must be >= 1; got 0"),
    ("cli-actor-unknown", ("run", ["{w}/good.toml", "--actor", "zoo:nope"]), r"actor: .*nope"),
    ("cli-plugin-missing", ("run", ["{w}/good.toml", "--plugin", "{w}/nothere.py"]), r"plugins: no such file"),
    # --- results already there
    ("different-spec", ("runinto", ["good", "max_steps", 6]), r"holds results of a different spec \(fields that differ: max_steps;"),
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
    from poe_jax import runner

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
