"""A newcomer's walk through the README and docs/: every fenced snippet runs as written.

The README comes first, then the pages in the order docs/README.md lists them.

Python snippets run, in order, in one fresh process (one of them registers a rule). Shell
snippets run line by line in a scratch folder: the short commands as written, the long ones
(installs, SAC, training, porting a file you bring, the 25-minute example grid) with ``--help``.
TOML snippets are the shipped ``examples/`` files, and load and validate as grids.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "docs" / name for name in dict.fromkeys(
    re.findall(r"\]\(([a-z-]+\.md)\)", (ROOT / "docs" / "README.md").read_text()))]
BLOCKS = [b for text in [README, *(p.read_text() for p in PAGES)] for b in re.findall(r"```(\w+)\n(.*?)```", text, re.S)]
LONG = ("data generate", "train ", "port corl", "examples/grid.toml", "examples/grids.toml", "--preset paper",
        "report runs/paper", "examples/minari.toml", "runs/minari", "data export")


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCKS if kind == lang]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _shell_commands() -> list[str]:
    cmds = []
    for body in _blocks("bash"):
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if not line:
                continue
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("pip install") or part == "python3 -m pytest -q":
                    continue  # installing (done), and this very suite
                cmds.append(part)
    return cmds


def test_readme_python_snippets_run(tmp_path):
    code = "\n\n".join(_blocks("python"))
    assert "checkpoints.load" in code and "register_rule" in code
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.parametrize("cmd", _shell_commands())
def test_readme_shell_commands_run(cmd, tmp_path_factory):
    cwd = tmp_path_factory.getbasetemp() / "readme-shell"  # shared: the report reads the quickstart's run
    cwd.mkdir(exist_ok=True)
    argv = shlex.split(cmd)
    env = _env()
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):  # VAR=value prefixes
        k, v = argv.pop(0).split("=", 1)
        env[k] = v
    assert argv[0] == "poe-jax", cmd
    argv = [sys.executable, "-m", "poe_jax.cli", *argv[1:]]
    if any(s in cmd for s in LONG):  # too long to run here: its options must parse
        argv = [a for a in argv[:6] if not a.startswith("--")][:5] + ["--help"]
    for example in ("examples/grid.toml", "examples/grids.toml"):
        argv = [str(ROOT / a) if a == example else a for a in argv]
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (cmd, res.stderr[-3000:])


def test_every_docs_page_is_listed_and_the_readme_is_short():
    listed = {p.name for p in PAGES}
    assert {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"} <= listed
    assert len(README.splitlines()) <= 160
    for page in PAGES:  # each page links back, and every relative link on it resolves
        text = page.read_text()
        assert "[README](../README.md)" in text, page.name
        for link in re.findall(r"\]\((?!https?:)([^)#]+)", text):
            assert (page.parent / link).exists(), (page.name, link)


def test_the_cli_reference_is_current():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, "docs/cli.md is out of date: run python scripts/cli_reference.py"


def test_readme_toml_snippets_are_the_examples_and_valid():
    from poe_jax import grid
    from poe_jax.grid import spec as spec_module

    examples = {p.name: p.read_text() for p in (ROOT / "examples").glob("*.toml")}
    for body in _blocks("toml"):
        assert any(body in text for text in examples.values()), body[:80]
    for p in sorted((ROOT / "examples").glob("*.toml")):
        for spec in grid.load_specs(p):
            if p.name == "minari.toml":  # its actor is what the README's train command writes
                spec_module.check(spec)
                assert spec.env == "hopper-v5" and spec.actor.endswith("mujoco-hopper-medium-v0-iql")
                continue
            grid.validate(spec)
