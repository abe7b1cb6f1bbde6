"""AntMaze (``antmaze-umaze``, ``antmaze-medium``) with D4RL semantics.

Facts from D4RL (``d4rl/locomotion/{maze_env,ant}.py`` and ``assets/ant.xml``):

* the ant: Gymnasium's ant model with D4RL's changes -- timestep 0.02 (RK4), motors
  with gear 1 and control range +-30 -- and frame skip 5 (control dt 0.1 s);
* the maze: D4RL's evaluation maps (``U_MAZE_TEST``, ``BIG_MAZE_TEST``) at scaling
  4: every wall cell is a box of half-size (2, 2, 1) centred at
  ``(4 col - x_R, 4 row - y_R, 1)``, so the reset cell ``R`` is the origin;
* observation: ``qpos[:15], qvel[:14]`` (29), the torso's x, y included, the goal not;
* reset: ``qpos0 + U(-0.1, 0.1)``, ``qvel = 0.1 N(0, 1)`` (D4RL's ant);
* goal: the ``G`` cell's centre plus ``U(0, 1)`` plus ``U(0, 0.5)`` per axis, then
  clipped at 0 (D4RL's ``goal_sampler``), drawn at every reset from the episode's
  key, never from a global RNG;
* reward: 1 within 0.5 of the goal, else 0 (sparse); termination at the goal
  (D4RL's evaluation); episodes of 700 (umaze) or 1000 (medium) steps. D4RL
  scores are 100 x the success rate (reference (0, 1)).

The ant never terminates for falling over (as in D4RL's AntMaze).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from poe_jax.envs.base import Env, EnvSpec, State, free_body_tilt, gymnasium_asset
from poe_jax.envs.registry import register_env
from poe_jax.physics import Coords

SCALING = 4.0
WALL_HALF_HEIGHT = 0.5 / 2 * SCALING  # D4RL's maze_height 0.5
GOAL_RADIUS = 0.5

# '#' wall, '.' free, 'R' reset cell (the origin), 'G' goal cell.
MAZES = {
    "antmaze-umaze": ((
        "#####",
        "#R..#",
        "###.#",
        "#G..#",
        "#####",
    ), 700),
    "antmaze-medium": ((
        "########",
        "#R.##..#",
        "#..#...#",
        "##...###",
        "#..#...#",
        "#.#..#.#",
        "#...#.G#",
        "########",
    ), 1000),
}


def _cell(rows: tuple[str, ...], mark: str) -> tuple[int, int]:
    return next((i, j) for i, row in enumerate(rows) for j, c in enumerate(row) if c == mark)


def build_model(maze: str | tuple[str, ...]) -> mujoco.MjModel:
    """Gymnasium's ant with D4RL's timestep and motors, in D4RL's maze ``maze`` (a name, or
    map rows such as ``("R",)``: an open floor)."""
    rows = MAZES[maze][0] if isinstance(maze, str) else tuple(maze)
    spec = mujoco.MjSpec.from_file(str(gymnasium_asset("ant.xml")))
    spec.option.timestep = 0.02
    for act in spec.actuators:
        act.gear[0] = 1.0
        act.ctrlrange = [-30.0, 30.0]
    r_row, r_col = _cell(rows, "R")
    for i, row in enumerate(rows):
        for j, c in enumerate(row):
            if c == "#":
                spec.worldbody.add_geom(
                    name=f"block_{i}_{j}", type=mujoco.mjtGeom.mjGEOM_BOX,
                    pos=[(j - r_col) * SCALING, (i - r_row) * SCALING, WALL_HALF_HEIGHT],
                    size=[0.5 * SCALING, 0.5 * SCALING, WALL_HALF_HEIGHT],
                    contype=1, conaffinity=1, rgba=[0.7, 0.5, 0.3, 1.0])
    return spec.compile()


def goal_cell_xy(maze: str) -> np.ndarray:
    """The goal cell's corner point D4RL adds its noise to (cell index x 4, relative to R)."""
    rows, _ = MAZES[maze]
    (g_row, g_col), (r_row, r_col) = _cell(rows, "G"), _cell(rows, "R")
    return np.array([(g_col - r_col) * SCALING, (g_row - r_row) * SCALING])


def _obs(qpos, qvel):
    return jnp.concatenate([qpos[:15], qvel[:14]])


class AntMaze(Env):
    """An AntMaze env (module docstring); the functional API of :class:`~poe_jax.envs.Env`.

    ``State.metrics`` holds ``goal`` ([2], fixed for the episode), ``distance`` to it,
    ``success`` (1.0 once the goal is reached), and ``x_velocity``/``ctrl_cost``.
    """

    def __init__(self, maze: str, backend: str = "auto", max_steps: int | None = None, **physics_options):
        if maze not in MAZES:
            raise KeyError(f"unknown maze {maze!r}; known: {', '.join(MAZES)}")
        if "terminate_when_unhealthy" in physics_options:
            raise ValueError(f"{maze}: terminate_when_unhealthy does not apply; AntMaze episodes end only at "
                             "the goal or the time limit")
        rows, steps = MAZES[maze]
        spec = EnvSpec(name=maze, xml="ant.xml", frame_skip=5, obs_fn=_obs, healthy_fn=None, tilt_fn=free_body_tilt,
                       ctrl_cost_weight=0.0,
                       healthy_reward=0.0, qpos_noise=("uniform", 0.1), qvel_noise=("normal", 0.1), max_steps=steps,
                       ref_min_score=0.0, ref_max_score=1.0,
                       notes="D4RL AntMaze: sparse reward within 0.5 of the goal, termination at the goal")
        self._maze = maze
        super().__init__(spec, backend=backend, max_steps=max_steps, terminate_when_unhealthy=False,
                         model=build_model(maze), **physics_options)
        self.goal_corner = jnp.asarray(goal_cell_xy(maze), jnp.float32)

    def _metrics(self, q: Coords, goal, x_velocity, ctrl_cost):
        distance = jnp.sqrt(jnp.sum((q.qpos[:2] + q.qpos_lo[:2] - goal) ** 2))
        return {"x_velocity": x_velocity, "ctrl_cost": ctrl_cost, "tilt": self.spec.tilt_fn(q.qpos), "goal": goal,
                "distance": distance,
                "success": (distance <= GOAL_RADIUS).astype(jnp.float32)}

    def sample_goal(self, key) -> jax.Array:
        """D4RL's goal: the goal cell's corner + U(0, 1) + U(0, 0.5) per axis, clipped at 0."""
        k1, k2 = jax.random.split(key)
        xy = self.goal_corner + jax.random.uniform(k1, (2,), maxval=0.25 * SCALING)
        xy = xy + jax.random.uniform(k2, (2,), maxval=0.5) * 0.25 * SCALING
        return jnp.maximum(xy, 0.0)

    def reset(self, key: jax.Array) -> State:
        """Initial state with reset noise and a goal, both drawn from ``key``."""
        k_state, k_goal = jax.random.split(key)
        state = super().reset(k_state)
        zero = jnp.zeros((), jnp.float32)
        return state.replace(metrics=self._metrics(state.q, self.sample_goal(k_goal), zero, zero))

    def reset_to(self, qpos, qvel, goal=None) -> State:
        state = super().reset_to(qpos, qvel)
        goal = self.goal_corner if goal is None else jnp.asarray(goal, jnp.float32)
        zero = jnp.zeros((), jnp.float32)
        return state.replace(metrics=self._metrics(state.q, goal, zero, zero))

    def reset_to_batch(self, qpos, qvel, goal=None) -> State:
        """Batched :meth:`reset_to` from host arrays (float64 kept exact); ``goal [batch, 2]``."""
        state = super().reset_to_batch(qpos, qvel)
        n = state.obs.shape[0]
        goal = jnp.broadcast_to(self.goal_corner if goal is None else jnp.asarray(goal, jnp.float32), (n, 2))
        zero = jnp.zeros((n,), jnp.float32)
        return state.replace(metrics=jax.vmap(self._metrics)(state.q, goal, zero, zero))

    def outcome(self, state: State, q1: Coords, action: jax.Array, x_velocity: jax.Array):
        """Reward 1 and termination when within 0.5 of the goal (the :meth:`Env.step` hook)."""
        metrics = self._metrics(q1, state.metrics["goal"], x_velocity, jnp.zeros((), jnp.float32))
        return metrics["success"], metrics["success"] > 0, metrics


for _maze in MAZES:
    register_env(_maze, options=("max_steps", "forward_reward_weight"), success=True, tracked_body="torso",
                 metrics=("x_velocity", "ctrl_cost", "tilt", "goal", "distance", "success"))(functools.partial(AntMaze, _maze))

__all__ = ["MAZES", "AntMaze", "build_model", "goal_cell_xy"]
