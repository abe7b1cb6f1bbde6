"""AntMaze datasets from a scripted navigator, in D4RL's layout.

D4RL made its AntMaze data with a trained goal-reaching ant policy steered
through the maze by waypoints (``create_navigation_policy`` in
``d4rl/locomotion/maze_env.py``). poe_jax has no such policy, so its navigator is
scripted, with the same waypoint logic:

* **Gaits.** Four open-loop gaits, one per direction of the ant's body frame
  (+x, +y, -x, -y): every leg's hip gets ``30 sin(w t + phase)`` and its ankle
  ``30 sign sin(w t + phase + pi/2)``. :func:`find_gaits` picks frequency, phases
  and signs for each direction by a grid search on an open floor (10 s from rest,
  most displacement along the direction, upright); the results are :data:`GAITS`
  (about 1.0-1.4 m/s).
* **Waypoints.** The maze's cells form a graph; a breadth-first search from the
  goal cell gives each free cell its next cell towards the goal. The waypoint is
  the next cell's centre (the goal itself in the goal's cell).
* **Steering.** Each control step runs the gait whose world-frame direction (the
  body direction rotated by the torso's yaw) points most nearly at the waypoint.
* **Noise.** Gaussian action noise (std ``noise`` x 30) and, with probability
  ``p_random`` per step, a uniformly random action, so the data covers failures
  too.

Datasets: ``ENV-scripted.hdf5`` with D4RL's keys plus ``infos/goal``; episodes
end at the goal (the env's termination) or at the time limit.

**Diverse data** (:func:`generate_diverse`, ``ENV-diverse.hdf5``), D4RL's ``antmaze-*-diverse``
recipe: every episode starts in a uniformly random free cell (D4RL: random start positions)
and the navigator is driven to a uniformly random free cell's centre (plus ``U(-1, 1)`` m per
axis), a new one each time it gets within 0.5 m (D4RL: "random goals"), with more noise than the
fixed-goal data (``noise`` 0.3, ``p_random`` 0.1). Rewards and terminals are the maze's own
(sparse, at its evaluation goal), so an episode that passes the evaluation goal ends there;
``infos/goal`` is that goal. A behaviour-cloned actor learns the data's average behaviour, which
wanders: IQL's table 1 reports BC at 45.6 on ``antmaze-umaze-diverse`` and 0.0 on
``antmaze-medium-diverse``.
"""

from __future__ import annotations

import itertools
from collections import deque
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from poe_jax import data, envs
from poe_jax.envs.antmaze import GOAL_RADIUS, MAZES, SCALING

__all__ = ["GAITS", "DiverseMaze", "find_gaits", "generate", "generate_diverse", "navigator"]

DIRECTIONS = {"+x": (1.0, 0.0), "+y": (0.0, 1.0), "-x": (-1.0, 0.0), "-y": (0.0, -1.0)}
# direction: (angular frequency [rad/s], hip phases per leg, ankle signs per leg); legs in
# actuator order (hip_4/ankle_4, hip_1/ankle_1, hip_2/ankle_2, hip_3/ankle_3). From find_gaits().
_H = np.pi / 2
GAITS = {
    "+x": (10.0, (0.0, 0.0, _H, _H), (1, -1, -1, 1)),
    "+y": (10.0, (0.0, _H, _H, 0.0), (1, -1, -1, -1)),
    "-x": (10.0, (0.0, 0.0, 3 * _H, 3 * _H), (1, -1, -1, 1)),
    "-y": (10.0, (0.0, 3 * _H, 2 * _H, _H), (1, 1, 1, -1)),
}


def _gait_action(t, w, phases, signs):
    """``[..., 8]`` torques of a gait at time ``t`` (broadcasts over gaits)."""
    arg = w[..., None] * t + phases
    hips, ankles = 30.0 * jnp.sin(arg), 30.0 * signs * jnp.sin(arg + jnp.pi / 2)
    return jnp.stack([hips, ankles], axis=-1).reshape(*arg.shape[:-1], 8)


def find_gaits(seconds: float = 10.0) -> dict:
    """The grid search behind :data:`GAITS` (deterministic; about a minute on 2 cores)."""
    from poe_jax.envs.antmaze import build_model
    from poe_jax.physics.native import NativePhysics

    model = build_model(("R",))  # open floor
    phys = NativePhysics(model, 5)
    cands = [(w, (0.0, *ph), (1, *sg)) for w in (6.0, 8.0, 10.0)
             for ph in itertools.product([0, _H, 2 * _H, 3 * _H], repeat=3)
             for sg in itertools.product([1, -1], repeat=3)]
    w = np.array([c[0] for c in cands])
    ph = np.array([c[1] for c in cands])
    sg = np.array([c[2] for c in cands], float)
    qpos, qvel = np.tile(model.qpos0, (len(cands), 1)), np.zeros((len(cands), model.nv))
    lowest = np.full(len(cands), np.inf)
    for k in range(int(round(seconds / 0.1))):
        act = np.asarray(_gait_action(jnp.asarray(k * 0.1), jnp.asarray(w), jnp.asarray(ph), jnp.asarray(sg)))
        qpos, qvel = phys.step_host(qpos, qvel, act)
        lowest = np.minimum(lowest, qpos[:, 2])
    ok = (np.abs(qpos[:, 3]) > 0.7) & (lowest > 0.3)  # upright, never collapsed
    out = {}
    for name, d in DIRECTIONS.items():
        along, across = qpos[:, :2] @ np.array(d), qpos[:, :2] @ np.array(d[::-1])
        i = int(np.argmax(np.where(ok, along - 0.5 * np.abs(across), -np.inf)))
        out[name] = cands[i]
    return out


def _free_cells(rows: tuple[str, ...]) -> np.ndarray:
    """``[n, 2]`` (row, col) of every cell that is not a wall."""
    return np.array([(i, j) for i, r in enumerate(rows) for j, c in enumerate(r) if c != "#"], np.int32)


def _next_cells(rows: tuple[str, ...], goal: tuple[int, int] | None = None) -> np.ndarray:
    """``[rows, cols, 2]``: each free cell's next cell on a shortest path to ``goal`` (default: the G cell)."""
    goal = goal or next((i, j) for i, r in enumerate(rows) for j, c in enumerate(r) if c == "G")
    nxt = np.zeros((len(rows), len(rows[0]), 2), np.int32)
    nxt[goal] = goal
    seen, queue = {goal}, deque([goal])
    while queue:
        i, j = queue.popleft()
        for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            c = (i + di, j + dj)
            if 0 <= c[0] < len(rows) and 0 <= c[1] < len(rows[0]) and rows[c[0]][c[1]] != "#" and c not in seen:
                seen.add(c)
                nxt[c] = (i, j)
                queue.append(c)
    return nxt


def navigator(env: envs.AntMaze, noise: float = 0.1, p_random: float = 0.05, goal_key: str = "goal"):
    """``act(state, key) -> action``: the scripted waypoint navigator (module docstring), toward
    ``state.metrics[goal_key]`` (the maze's goal, or :class:`DiverseMaze`'s ``nav_goal``, any free cell)."""
    rows, _ = MAZES[env.name]
    origin = next((i, j) for i, r in enumerate(rows) for j, c in enumerate(r) if c == "R")
    # next cells toward every cell as the goal: [rows, cols (goal), rows, cols (here), 2]
    table = np.zeros((len(rows), len(rows[0]), len(rows), len(rows[0]), 2), np.int32)
    for i, j in _free_cells(rows):
        table[i, j] = _next_cells(rows, (int(i), int(j)))
    table = jnp.asarray(table)
    gaits = [GAITS[d] for d in DIRECTIONS]
    w = jnp.asarray([g[0] for g in gaits])
    phases = jnp.asarray([g[1] for g in gaits])
    signs = jnp.asarray([g[2] for g in gaits], jnp.float32)
    dirs = jnp.asarray(list(DIRECTIONS.values()), jnp.float32)

    def act(state, key):
        xy = state.q.qpos[:2]
        goal = state.metrics[goal_key]
        hi = jnp.asarray([len(rows) - 1, len(rows[0]) - 1])
        cell = jnp.clip(jnp.round(xy / SCALING).astype(jnp.int32)[::-1] + jnp.asarray(origin), 0, hi)
        goal_cell = jnp.clip(jnp.round(goal / SCALING).astype(jnp.int32)[::-1] + jnp.asarray(origin), 0, hi)
        step_cell = table[goal_cell[0], goal_cell[1], cell[0], cell[1]]
        waypoint = jnp.where(jnp.all(cell == goal_cell) | jnp.all(step_cell == goal_cell), goal,
                             (step_cell[::-1] - jnp.asarray(origin)[::-1]).astype(jnp.float32) * SCALING)
        qw, qx, qy, qz = state.q.qpos[3:7]
        yaw = jnp.arctan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
        rot = jnp.array([[jnp.cos(yaw), -jnp.sin(yaw)], [jnp.sin(yaw), jnp.cos(yaw)]])
        k = jnp.argmax((dirs @ rot.T) @ (waypoint - xy))
        t = state.step.astype(jnp.float32) * env.dt
        a = _gait_action(t, w[k], phases[k], signs[k])
        k_noise, k_coin, k_rand = jax.random.split(key, 3)
        a = a + noise * 30.0 * jax.random.normal(k_noise, (8,))
        a = jnp.where(jax.random.uniform(k_coin) < p_random, jax.random.uniform(k_rand, (8,), minval=-30, maxval=30), a)
        return jnp.clip(a, -30.0, 30.0)

    return act


def generate(env_name: str, out: str | Path, size: int = 100_000, lanes: int = 50, seed: int = 0,
             noise: float = 0.1, p_random: float = 0.05, log=print) -> Path:
    """``out/ENV-scripted.hdf5``: ``size`` transitions of the scripted navigator on ``env_name``."""
    env = envs.make(env_name, backend="native")
    d = data.collect(env, navigator(env, noise, p_random), size, lanes, jax.random.key(seed), on_state=True)
    path = data.write(Path(out) / f"{env_name}-scripted.hdf5", d, {
        "env": env_name, "size": size, "seed": seed, "generator": "poe_jax.data.antmaze (scripted navigator)",
        "noise": noise, "p_random": p_random})
    ends = np.flatnonzero(d["terminals"] | d["timeouts"])
    log(f"{path}: {len(d['rewards'])} transitions, {len(ends)} episodes, "
        f"{int(d['terminals'].sum())} reached the goal")
    return path


class DiverseMaze(envs.AntMaze):
    """An AntMaze whose episodes start in a random free cell and carry a navigation goal, ``nav_goal``
    (a random free cell's centre ± 1 m), redrawn whenever the ant gets within 0.5 m of it (module
    docstring). Reward, termination and ``goal`` are the maze's own. For data generation only."""

    def __init__(self, maze: str, **kw):
        super().__init__(maze, backend="native", **kw)
        rows, _ = MAZES[maze]
        origin = np.array(next((i, j) for i, r in enumerate(rows) for j, c in enumerate(r) if c == "R"))
        self._centres = jnp.asarray((_free_cells(rows) - origin)[:, ::-1] * SCALING, jnp.float32)  # [n, 2] x, y

    def _draw(self, key):
        k1, k2 = jax.random.split(key)
        centre = self._centres[jax.random.randint(k1, (), 0, self._centres.shape[0])]
        return centre, centre + jax.random.uniform(k2, (2,), minval=-1.0, maxval=1.0)

    @staticmethod
    def _nav(metrics, goal, key):
        return {**metrics, "nav_goal": goal, "nav_key": jax.random.key_data(key)}

    def reset(self, key):
        k_state, k_start, k_goal, k_next = jax.random.split(key, 4)
        state = super().reset(k_state)
        start, _ = self._draw(k_start)
        q = state.q.replace(qpos=state.q.qpos.at[:2].add(start))
        moved = self._state(q)
        return moved.replace(metrics=self._nav(self._metrics(q, state.metrics["goal"], *([jnp.zeros((), jnp.float32)] * 2)),
                                               self._draw(k_goal)[1], k_next))

    def outcome(self, state, q1, action, x_velocity):
        reward, terminated, metrics = super().outcome(state, q1, action, x_velocity)
        key = jax.random.wrap_key_data(state.metrics["nav_key"])
        k_goal, k_next = jax.random.split(key)
        goal = state.metrics["nav_goal"]
        reached = jnp.sum((q1.qpos[:2] - goal) ** 2) <= GOAL_RADIUS**2
        goal = jnp.where(reached, self._draw(k_goal)[1], goal)
        nav_key = jnp.where(reached, jax.random.key_data(k_next), state.metrics["nav_key"])
        return reward, terminated, {**metrics, "nav_goal": goal, "nav_key": nav_key}


def generate_diverse(env_name: str, out: str | Path, size: int = 200_000, lanes: int = 50, seed: int = 0,
                     noise: float = 0.3, p_random: float = 0.1, log=print) -> Path:
    """``out/ENV-diverse.hdf5``: ``size`` transitions of the navigator driven to random goals from random
    starts (module docstring, D4RL's ``diverse`` recipe)."""
    env = DiverseMaze(env_name)
    d = data.collect(env, navigator(env, noise, p_random, goal_key="nav_goal"), size, lanes, jax.random.key(seed),
                     on_state=True)
    path = data.write(Path(out) / f"{env_name}-diverse.hdf5", d, {
        "env": env_name, "size": size, "seed": seed, "noise": noise, "p_random": p_random,
        "generator": "poe_jax.data.antmaze (navigator to random goals from random starts, D4RL's diverse recipe)"})
    ends = np.flatnonzero(d["terminals"] | d["timeouts"])
    log(f"{path}: {len(d['rewards'])} transitions, {len(ends)} episodes, "
        f"{int(d['terminals'].sum())} passed the evaluation goal")
    return path
