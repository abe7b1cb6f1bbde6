"""poe_jax's D4RL reference scores against the d4rl distribution's own infos.py.

d4rl cannot be imported here (it needs gym < 0.25 and mujoco-py), so the file is
located without importing the package and its dict literals are parsed with
``ast``. Install it with ``pip install --no-deps d4rl`` (``.ci/run`` does).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from poe_jax import envs


def _d4rl_ref_scores() -> tuple[dict, dict]:
    spec = importlib.util.find_spec("d4rl")  # locates the package; does not execute it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the d4rl distribution is not installed (pip install --no-deps d4rl)")
    path = Path(list(spec.submodule_search_locations)[0]) / "infos.py"
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in (
                "REF_MIN_SCORE", "REF_MAX_SCORE"):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["REF_MIN_SCORE"], found["REF_MAX_SCORE"]


@pytest.mark.parametrize("name", ["hopper", "halfcheetah", "walker2d", "ant"])
def test_reference_scores_match_d4rl(name):
    ref_min, ref_max = _d4rl_ref_scores()
    spec = envs.spec(name)
    # infos.py gives v1/v2 the v0 reference scores (copied in a loop at import)
    assert spec.ref_min_score == ref_min[f"{name}-random-v0"]
    assert spec.ref_max_score == ref_max[f"{name}-random-v0"]
