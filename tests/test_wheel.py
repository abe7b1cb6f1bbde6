"""The wheel carries the zoo (``checkpoints/``, mapped to ``poe_jax/zoo/``): a non-editable install finds
``zoo:NAME`` outside the source tree."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from poe_jax import checkpoints

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True)
    (path,) = out.glob("poe_jax-*.whl")
    return path


def test_wheel_contains_every_shipped_checkpoint(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # checkpoints/ of the source tree is mapped to poe_jax/zoo/ in the wheel (pyproject.toml), not copied
    shipped = sorted("poe_jax/zoo/" + p.relative_to(checkpoints.ZOO).as_posix()
                     for p in checkpoints.ZOO.rglob("*") if p.is_file())
    cards = [p for p in shipped if p.endswith("/card.json")]
    assert len(cards) >= 20  # every actor and prior of the zoo
    missing = [p for p in shipped if p not in names]
    assert not missing, f"the wheel lacks {missing[:5]}"
    assert any(n.startswith("poe_jax/zoo/probe-states/") for n in names)


def test_installed_wheel_resolves_the_zoo_outside_the_source_tree(wheel, tmp_path):
    # A bare venv whose site-packages holds only the wheel, plus this interpreter's site-packages
    # as a plain path (so jax & co. import, but no .pth there runs: no editable install leaks in).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import json, poe_jax; from poe_jax import checkpoints, offpolicy;"
            "a = checkpoints.load('zoo:hopper-medium-iql', env='hopper');"
            "print(json.dumps([poe_jax.__file__, str(checkpoints.zoo_path('hopper-medium-iql')),"
            " offpolicy.find_states('hopper-medium') is not None]))")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([str(py), "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    module, zoo, probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(module).is_relative_to(site) and not Path(module).is_relative_to(ROOT)
    assert Path(zoo).is_relative_to(site) and probe
    # the command works there too (python -m poe_jax is the poe-jax script)
    out = subprocess.run([str(py), "-m", "poe_jax", "zoo"], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "hopper-medium-iql" in out.stdout, out.stderr[-2000:]


def test_wheel_metadata_license_extras_and_entry_point(wheel):
    z = zipfile.ZipFile(wheel)
    meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = z.read(meta_name).decode()
    fields = [line.split(": ", 1) for line in meta.splitlines() if ": " in line and not line.startswith(" ")]
    assert ["License-Expression", "Apache-2.0"] in fields  # an SPDX expression, not the deprecated table
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in z.namelist())
    extras = {v for k, v in fields if k == "Provides-Extra"}
    assert {"port", "minari", "gpu", "dev"} <= extras
    requires = [v for k, v in fields if k == "Requires-Dist"]
    assert any(r.startswith("jax[cuda12]") and 'extra == "gpu"' in r for r in requires)
    # the test command's extra pulls no PyTorch (PyPI's default build is CUDA's)
    assert not [r for r in requires if r.startswith("torch") and 'extra == "dev"' in r]
    entry = z.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    assert "poe-jax = poe_jax.__main__:run" in entry
    assert (ROOT / "CITATION.cff").is_file() and "2604.22873" in (ROOT / "CITATION.cff").read_text()


def test_the_test_command_resolves_no_cuda_package(tmp_path):
    """What `pip install -e ".[dev]"` (the README's test command) would install on a machine without any of it:
    no nvidia-*, cuda-* or torch package (the resolver's report, nothing installed)."""
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
                    str(report), f"{ROOT}[dev]"], check=True, capture_output=True, text=True)
    names = sorted(i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"])
    assert "jax" in names and "mujoco" in names
    assert [n for n in names if n.startswith(("nvidia", "cuda")) or n in ("torch", "triton")] == []
