"""Shared fixtures: one env (and compiled program) per (name, backend) per session."""

import os
from pathlib import Path

import jax
import pytest

# Persistent compilation cache (MJX programs take tens of seconds to compile on CPU).
_cache = Path(os.environ.get("POE_JAX_CACHE", Path.home() / ".cache" / "poe_jax" / "jax"))
jax.config.update("jax_compilation_cache_dir", str(_cache))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

# User plugins for tests/test_plugins.py: imported only by the processes those tests start, never
# by doctest collection here (their registrations would leak into every later test).
collect_ignore = ["plugins"]

_ENVS = {}


@pytest.fixture(scope="session")
def get_env():
    from poe_jax import envs

    def get(name, backend="native"):
        if (name, backend) not in _ENVS:
            _ENVS[(name, backend)] = envs.make(name, backend=backend)
        return _ENVS[(name, backend)]

    return get
