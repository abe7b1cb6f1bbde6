"""A rule, a goal, a prior quality and a metric defined outside the package, each with one
registration (tests/plugins/toy_plugin.py), run through grid.run, write_report and the CLI's
--plugin with no edit of poe_jax. Each case runs in its own process, so the registrations do
not leak into the other tests."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

PLUGIN = Path(__file__).parent / "plugins" / "toy_plugin.py"
SPEC = {"env": "hopper", "actor": "zoo:hopper-medium-iql", "prior": "zoo:hopper-prior",
        "rules": {"frozen": [], "poe": [0.5], "toy_half_poe": [0.5, 1.0]},
        "goals": ["G1_speed", "toy_slow"], "priors": ["trained", "toy_sharp"], "seeds": [0, 1], "episodes": 1,
        "max_steps": 40, "chunk_size": 64, "backend": "native"}


def _toml(spec: dict, extra: str = "") -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in spec.items() if k != "rules"]
    lines += [extra, "[rules]"] + [f"{k} = {json.dumps(v)}" for k, v in spec["rules"].items()]
    return "\n".join(lines) + "\n"


def _check(out: Path) -> None:
    df = pd.read_parquet(out / "episodes.parquet")
    assert set(df["rule"]) == {"frozen", "poe", "toy_half_poe"}
    assert set(df["goal"]) == {"G1_speed", "toy_slow"} and set(df["prior"]) == {"any", "trained", "toy_sharp"}
    assert "toy_abs_action" in df and (df["toy_abs_action"] > 0).all()  # the user metric, an episode mean
    half = df[df.rule == "toy_half_poe"]
    np.testing.assert_array_equal(half["alpha_equiv"], half["param"] / 2)  # its registered alpha_equiv
    # toy_half_poe(1.0) is poe(0.5): same lanes' noise differs (cell key), so compare the deviation instead
    poe = df[df.rule == "poe"].groupby(["goal", "prior"])["kl_to_frozen"].mean()
    full = half[half.param == 1.0].groupby(["goal", "prior"])["kl_to_frozen"].mean()
    np.testing.assert_allclose(full.sort_index(), poe.sort_index(), rtol=0.5)
    # the toy_slow goal pays only while moving forward slower than 0.5 m/s: within [0, length]
    slow = df[df.goal == "toy_slow"]
    assert ((slow.return_goal >= 0) & (slow.return_goal <= slow.length)).all()
    report = (out / "report.md").read_text()
    assert "toy_half_poe" in report and "toy_sharp" in report


def test_plugin_through_grid_run_and_write_report(tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        from poe_jax import grid
        from poe_jax.analysis.report import write_report
        grid.load_plugins([{str(PLUGIN)!r}])
        spec = grid.load_spec(json.loads(sys.argv[1]))
        grid.run(spec, sys.argv[2], progress=False)
        write_report(sys.argv[2])
    """)
    out = tmp_path / "lib"
    subprocess.run([sys.executable, "-c", code, json.dumps(SPEC), str(out)], check=True, timeout=600)
    _check(out)


def test_plugin_from_the_cli_and_from_the_toml(tmp_path):
    cfg = tmp_path / "grid.toml"
    cfg.write_text(_toml(SPEC))
    cli = [sys.executable, "-m", "poe_jax.cli"]
    bad = subprocess.run([*cli, "run", str(cfg), "--out", str(tmp_path / "x"), "--quiet"], capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode == 2 and "unknown rule 'toy_half_poe'" in bad.stderr  # without the plugin
    out = tmp_path / "cli"
    subprocess.run([*cli, "run", str(cfg), "--out", str(out), "--quiet", "--plugin", str(PLUGIN)], check=True,
                   capture_output=True, timeout=600)
    # the report imports no code named in the run folder: the plugin comes from the user, and without it the
    # report says which of the run's plugins it did not load
    subprocess.run([*cli, "report", str(out)], check=True, capture_output=True, timeout=600)
    assert "Plugins not loaded" in (out / "report.md").read_text() and str(PLUGIN) in (out / "report.md").read_text()
    subprocess.run([*cli, "report", str(out), "--plugin", str(PLUGIN)], check=True, capture_output=True, timeout=600)
    assert "Plugins not loaded" not in (out / "report.md").read_text()
    _check(out)
    # plugins = [...] in the TOML, relative to its folder
    (tmp_path / "toy_plugin.py").write_text(PLUGIN.read_text())
    cfg.write_text(_toml(SPEC, 'plugins = ["toy_plugin.py"]'))
    res = subprocess.run([*cli, "run", str(cfg), "--out", str(tmp_path / "toml"), "--quiet"], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
