"""poe-jax report on a smoke run: a readable report.md and real PNG figures."""

from __future__ import annotations

import pytest

from poe_jax import grid
from poe_jax.cli import main


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "smoke"
    grid.run(grid.load_spec("preset:smoke"), out, progress=False)
    return out


def test_report_on_smoke_run(smoke_run, capsys):
    assert main(["report", str(smoke_run)]) == 0
    text = (smoke_run / "report.md").read_text()
    for needle in ("HELP", "FROZEN", "HURT", "Holm", "Exclusions", "Support violation", '"versions"',
                   "| hopper | G1_speed | trained | none | poe |"):
        assert needle in text
    figs = sorted(p.name for p in (smoke_run / "figures").glob("*.png"))
    assert figs == ["kl_frontier.png", "prior_quality.png", "return_vs_coefficient.png"]
    for f in (smoke_run / "figures").glob("*.png"):
        data = f.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_refuses_a_dir_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no episodes.parquet" in capsys.readouterr().err
