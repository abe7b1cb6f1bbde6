"""The device benchmark stays runnable: its --smoke run (CPU, native backend, seconds) measures every mode and
writes its JSON and table."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_throughput_smoke(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--smoke", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (path,) = tmp_path.glob("gpu-throughput-*.json")
    record = json.loads(path.read_text())
    assert record["smoke"] is True and record["machine"]["cores"] >= 1 and not record["skipped"]
    modes = {r["mode"]: r for r in record["results"]}
    assert set(modes) == {"physics", "frozen", "poe", "paper"}
    for r in modes.values():
        assert "error" not in r and r["env_steps_per_s"] > 0 and r["compile_s"] >= 0, r
    assert "x physics" in res.stdout and "paper" in res.stdout.splitlines()[-1]
