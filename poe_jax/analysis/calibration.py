"""Prior calibration: how well a goal prior's Gaussian covers actions it never trained on, at each prior quality.

A prior's quality has two parts that PoE weighs differently: its mean's *accuracy* and its std's *precision*.
PoE trusts the prior in proportion to its precision, so a confident, wrong prior steers hard the wrong way, and
a vague one barely steers. The measure here separates the two:

    E[z²],  z = (a − μ_q(s)) / σ_q(s),

over held-out rows (s, a) of the prior's own data (the last 5% of ``ENV-prior-data``, which no shipped prior
trained on) and their action entries inside the bounds (a clipped entry says only that the mean lies beyond it), where (μ_q, σ_q) is the prior at
quality ``q`` (:mod:`poe_jax.kernels.priors`). 1 is calibrated; above 1 the prior is overconfident (its errors
exceed its std: ``degraded``, ``adversarial``, a prior trained on too little data); below 1 it is too vague
(``vague``, ``uniform``). The Gaussian negative log-likelihood per action dimension is recorded beside it.

The rows are a shipped file named by the prior's card (``calibration_rows``, in the zoo's ``probe-states/``;
``poe-jax data generate --phase calibration`` writes them). A run measures every (goal, quality) of its grid
once, at its end (:func:`of_plan`), and stores it in its summary; the report plots PoE's return against it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax import checkpoints
from poe_jax.kernels import priors
from poe_jax.kernels.policy import untrained_prior

__all__ = ["CARD_FIELD", "SEEDS", "Calibration", "load_rows", "measure", "of_plan", "rows_file"]

CARD_FIELD = "calibration_rows"  # a prior card's field naming its held-out rows in the zoo's probe-states/
SEEDS = (0, 1, 2)  # keys of a stochastic quality's draws (and ``random``'s untrained networks), averaged: fixed, so
# a prior's calibration is a property of the prior and quality, the same in every grid


class Calibration(NamedTuple):
    goal: str
    quality: str
    ez2: float  # E[z²]: 1 calibrated, > 1 overconfident, < 1 too vague
    nll: float  # Gaussian negative log-likelihood per action entry
    rows: int
    entries: int  # action entries inside the bounds, which the two average


def rows_file(card: dict) -> Path | None:
    """The held-out rows a prior's card names (``calibration_rows``), in the shipped zoo's ``probe-states/``;
    ``None`` when it names none. A card is data: only a plain file name is accepted."""
    name = card.get(CARD_FIELD)
    if not checkpoints.plain_file_name(name):
        return None
    path = checkpoints.ZOO / "probe-states" / name
    return path if path.is_file() else None


def load_rows(path: Path, obs_size: int, act_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(observations [n, obs], actions [n, act], inside [n, act])`` of a calibration file, checked against the
    prior's sizes (``inside``: the action entries within the bounds, which the measure reads)."""
    with np.load(path, allow_pickle=False) as z:
        obs, act = np.asarray(z["observations"], np.float32), np.asarray(z["actions"], np.float32)
        inside = np.asarray(z["inside"], bool)
    if obs.ndim != 2 or act.ndim != 2 or len(obs) != len(act) or not len(obs) or inside.shape != act.shape \
            or obs.shape[1] != obs_size or act.shape[1] != act_size or not inside.any():
        raise ValueError(f"{path}: observations {obs.shape}, actions {act.shape} and inside {inside.shape}; the prior "
                         f"expects [n, {obs_size}] and [n, {act_size}] twice, with some entry inside the bounds")
    return obs, act, inside


def measure(prior, quality: str, obs, actions, inside, prior_goal: int, prior_param: float = 0.0, *,
            max_action: float, degraded_noise: float = 0.5, seeds=SEEDS) -> tuple[float, float]:
    """``(E[z²], NLL per action entry)`` of ``prior`` at ``quality`` on the rows ``(obs, actions)``, over the
    entries ``inside`` marks, for the prior's head ``prior_goal`` at ``prior_param``; a stochastic quality is
    averaged over ``seeds`` (each seed's key draws every row's noise, and for ``random`` its untrained network)."""
    q = priors.get(quality)
    obs, actions = jnp.asarray(obs, jnp.float32), jnp.asarray(actions, jnp.float32)
    inside = jnp.asarray(inside, bool)
    n = jnp.sum(inside)

    def head(net):  # one observation at a time, as the rollouts ask it
        return jax.vmap(lambda o: net.distribution(o, prior_goal, prior_param))(obs)

    trained = head(prior)
    rows = jnp.arange(obs.shape[0])
    ez2, nll = [], []
    for s in seeds:
        untrained = head(untrained_prior(prior, s)) if q.needs_untrained else trained
        keys = jax.vmap(lambda i, s=s: jax.random.fold_in(jax.random.key(s), i))(rows)
        d = jax.vmap(lambda t, u, k: q.fn(priors.QualityInputs(t, u, k, max_action, degraded_noise)))(
            trained, untrained, keys)
        z = (actions - d.mean) / d.std
        per_entry = 0.5 * z**2 + jnp.log(d.std) + 0.5 * math.log(2 * math.pi)  # -log N(a; μ, σ), entry by entry
        ez2.append(float(jnp.sum(jnp.where(inside, z**2, 0.0)) / n))
        nll.append(float(jnp.sum(jnp.where(inside, per_entry, 0.0)) / n))
    return float(np.mean(ez2)), float(np.mean(nll))


def of_plan(plan, prior) -> dict:
    """The calibration of ``prior`` at every (goal, quality) of ``plan``'s grid, for its run summary:
    ``{"rows_file", "rows", "entries": [Calibration as dict, ...]}``, or ``{"note": why not}``."""
    path = rows_file(plan.prior_card)
    if path is None:
        return {"note": f"{plan.prior_path.name}: its card names no held-out rows ({CARD_FIELD})"}
    try:
        obs, act, inside = load_rows(path, prior.spec.obs_size, prior.spec.act_size)
    except (OSError, ValueError, KeyError) as e:
        return {"note": f"{plan.prior_path.name}: {e}"}
    lanes = plan.lanes.lanes
    lane_goal = np.asarray(lanes.goal)
    entries = []
    for gi, goal in enumerate(plan.spec.goals):
        first = np.flatnonzero(lane_goal == gi)[:1]  # the prior head and parameter of the goal's lanes
        if not first.size:
            continue
        head, param = int(lanes.prior_goal[first[0]]), float(lanes.prior_param[first[0]])
        for quality in plan.spec.priors:
            ez2, nll = measure(prior, quality, obs, act, inside, head, param, max_action=float(prior.spec.max_action),
                               degraded_noise=float(plan.spec.degraded_noise), seeds=SEEDS)
            if math.isfinite(ez2) and math.isfinite(nll):
                entries.append(Calibration(goal, quality, ez2, nll, len(obs), int(inside.sum()))._asdict())
    return {"rows_file": path.name, "rows": len(obs), "entries": entries}
