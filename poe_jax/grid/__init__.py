"""The grid: rule × coefficient × goal × prior quality × shift × seed × episode.

The public entry point, one name per step of the data flow; each step lives in its own
module and only looks down the flow:

==========================  ======================================================
step                        module
==========================  ======================================================
parse and check the spec    :mod:`poe_jax.grid.spec` (:class:`GridSpec`, :func:`load_spec`)
resolve it once             :mod:`poe_jax.grid.plan` (cards, backend, goals, cells, lanes)
the compiled program        :mod:`poe_jax.grid.program` (:class:`~poe_jax.grid.program.Lanes` in,
                            :class:`~poe_jax.grid.program.Totals` out)
the run folder              :mod:`poe_jax.grid.store` (Parquet parts, resume, lock, reading back)
running it                  :mod:`poe_jax.grid.runner` (chunks, records, summary)
==========================  ======================================================

Rules that ignore the goal prior (``frozen``, ``iql_guided``, ``critic_greedy``:
``Rule.uses_prior`` false) run once per (goal, shift, seed, episode), recorded with
``prior = "any"`` (:data:`PRIOR_BLIND`). :func:`read_episodes` serves those episodes
to every prior quality of the grid, so paired tests against ``frozen`` see the same
baseline episodes under every quality.
"""

from __future__ import annotations

from poe_jax import checkpoints
from poe_jax.kernels import priors
from poe_jax.grid.metrics import GAMMA, SUPPORT_EPS
from poe_jax.grid.plan import (LANE_LAYOUT, MIN_BATCH, PRIOR_BLIND, Cell, Plan, ProgramKey, cells, lane_table, resolve,
                               resolve_checkpoint)
from poe_jax.grid.program import Lanes, Totals, build_program
from poe_jax.grid.runner import RunResult, first_screen, headline, run, run_many, summary_table, versions
from poe_jax.grid.spec import GridSpec, Shift, SpecError, load_plugins, load_spec, load_specs, preset_names
from poe_jax.grid.store import done_lanes, grid_dirs, read_episodes

__all__ = ["GAMMA", "LANE_LAYOUT", "MIN_BATCH", "PRIOR_BLIND", "PRIOR_QUALITIES", "SUPPORT_EPS", "Cell", "GridSpec",
           "Lanes", "Plan", "ProgramKey", "RunResult", "Shift", "SpecError", "Totals", "build_program", "cells", "done_lanes", "grid_dirs",
           "lane_table", "load_plugins", "load_spec", "load_specs", "preset_names", "read_episodes",
           "first_screen", "headline", "resolve_checkpoint", "run", "run_many", "summary_table", "validate", "versions", "zoo_dirs"]

PRIOR_QUALITIES = priors.QUALITIES  # the registry (poe_jax.kernels.priors); names in registration order
zoo_dirs = checkpoints.zoo_dirs


def validate(spec: GridSpec) -> Plan:
    """Check every field of ``spec`` and resolve its checkpoints (:func:`poe_jax.grid.plan.resolve`)."""
    return resolve(spec)
