"""A grid resolved once: its checkpoints, cards, backend, bound goals, cells and lanes.

:func:`resolve` takes a checked :class:`~poe_jax.grid.spec.GridSpec` and reads what the run
needs exactly once: the checkpoints' cards (kind, env, critic, the prior's goals), the
physics backend, the goals bound to the env and the grid's parameters, the rules from the
registry. The :class:`Plan` then gives the cells, the lane table, the env (built once) and
the compiled program's inputs; everything below it (program, store, runner, report) reads
the plan or the stored records, never the spec's raw fields again.

Lanes. A grid flattens into *lanes*, one episode each, in a fixed order: cells in spec
order (rule, coefficient, goal, prior quality, shift), then seed, then episode. A rule
that ignores the prior (``Rule.uses_prior`` false: ``frozen``, ``iql_guided``,
``critic_greedy``) gets one cell per (coefficient, goal, shift), recorded with prior
:data:`PRIOR_BLIND`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from poe_jax import checkpoints, nets
from poe_jax.kernels import rules as kernels
from poe_jax.kernels import priors
from poe_jax.grid.program import Lanes, build_program
from poe_jax.grid.spec import GridSpec, Shift, SpecError, check

__all__ = ["LANE_LAYOUT", "MIN_BATCH", "PRIOR_BLIND", "Cell", "LaneTable", "Plan", "ProgramKey", "cells",
           "lane_table", "resolve", "resolve_checkpoint"]

PRIOR_BLIND = priors.PRIOR_BLIND  # the ``prior`` recorded for rules that ignore the prior
LANE_LAYOUT = 2  # bumped when cells() changes the lane order; a DIR of another layout is refused
NATIVE_CHUNK = 1024  # lanes per call on the native backend when the spec gives none (MuJoCo C threads over them)
MAX_AUTO_CHUNK = 65_536  # the most lanes per call an MJX grid chooses by itself
DEVICE_SHARE = 0.5  # the share of the device's memory an automatically sized MJX chunk may take
LANE_OVERHEAD = 8  # device bytes per lane, as a multiple of one mjx.Data (the loop's carries, temporaries, policy)
MIN_BATCH = 8  # the smallest lane batch a program is called with (a batch of 1 takes XLA's matrix-vector kernels),
# and on the native backend the block of lanes its policy is evaluated in (grid.rollout.lanes_in_blocks)


class ProgramKey(NamedTuple):
    """What one compiled program fixes: a lane runs the program of its own (rule, prior quality, noise
    switches), never a program shaped by the rest of the grid. Two rules in one program would share
    fusions (XLA contracts ``a*b + c`` into one FMA where the two ops land in one fused loop), so
    adding ``poe_adaptive`` to a grid changed ``poe``'s rounding and, through chaotic contacts, its
    episodes. ``quality`` is ``"trained"`` for rules that ignore the prior."""

    rule: str
    quality: str
    obs_noise: bool
    act_noise: bool


def resolve_checkpoint(ref: str, base_dir: str = ".", field: str = "actor") -> Path:
    """``zoo:NAME`` -> a shipped checkpoint; a relative path -> relative to ``base_dir``."""
    if ref.startswith("zoo:"):
        try:
            return checkpoints.zoo_path(ref)
        except checkpoints.CheckpointError as e:
            raise SpecError(f"{field}: {e}") from None
    path = Path(ref)
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not (path / "card.json").is_file():
        raise SpecError(f"{field}: no checkpoint at {path} (a directory with card.json)")
    return path


class Cell(NamedTuple):
    rule: str
    param: float
    goal: str
    prior: str
    shift: str

    def key(self) -> int:
        text = f"{self.rule}|{self.param!r}|{self.goal}|{self.prior}|{self.shift}"
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little") & 0x7FFFFFFF


def cells(spec: GridSpec) -> list[Cell]:
    """The grid's cells in lane order: rule, coefficient, goal, prior quality, shift. A rule
    without a coefficient records its ``Rule.default``; a rule that ignores the prior gets one
    cell per (coefficient, goal, shift), with prior :data:`PRIOR_BLIND`."""
    out = []
    for rule, params in spec.rules.items():
        r = kernels.RULES[rule]
        for p in (params if r.param is not None else [r.default]):
            for g in spec.goals:
                for q in (spec.priors if r.uses_prior else (PRIOR_BLIND,)):
                    for s in spec.shifts:
                        out.append(Cell(rule, float(p), g, q, s))
    return out


class CellTable(NamedTuple):
    """Per cell (in :func:`cells` order), what its episodes' records carry: the rule, its PoE-equivalent
    alpha (from the coefficient as the program sees it, float32), whether its alpha varies per state, the
    goal, prior quality and shift, and the targets of goals that track one (``{param: [n_cells]}``, NaN
    for the goals that do not)."""

    rule: np.ndarray
    alpha_equiv: np.ndarray
    adaptive: np.ndarray
    goal: np.ndarray
    prior: np.ndarray
    shift: np.ndarray
    targets: dict
    tracked: dict  # {param: the signal its goal tracks}


class LaneTable(NamedTuple):
    """The lanes of a grid, in lane order: the program's inputs and, per lane, its cell and lane index."""

    lanes: Lanes
    cell: np.ndarray  # [n] int32 index into cells(spec)
    lane: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return int(self.lane.size)


def lane_table(spec: GridSpec, prior_goals: Sequence[str], prior_params: Sequence = (),
               rules: Sequence[str] | None = None, bound: dict | None = None) -> LaneTable:
    """Per-lane arrays, in lane order (cell-major, then seed, then episode).

    ``prior_params``: the prior's continuous goal parameters (:attr:`PriorSpec.goal_params`);
    each lane whose goal has one gets the goal's bound value as ``prior_param``. ``rules``: the
    rules the program switches over, which ``Lanes.rule`` indexes (default: the spec's). ``bound``: the goals'
    bound parameters (``{goal: params}``, a plan's), bound here when not given."""
    from poe_jax.envs.goals import bound_params, prior_head

    cs = cells(spec)
    rules = list(spec.rules if rules is None else rules)
    bound = bound_params(spec.goals, spec.env, spec.goal_params) if bound is None else bound
    pvalue = nets.param_values(prior_params, bound)
    shifts = {s: Shift.parse(s) for s in spec.shifts}
    n_rep = len(spec.seeds) * spec.episodes
    cell_idx = np.repeat(np.arange(len(cs)), n_rep)
    f32, i32 = np.float32, np.int32
    per_cell = Lanes(
        rule=np.asarray([rules.index(c.rule) for c in cs], i32),
        param=np.asarray([c.param for c in cs], f32),
        goal=np.asarray([spec.goals.index(c.goal) for c in cs], i32),
        prior_goal=np.asarray([list(prior_goals).index(prior_head(c.goal, prior_goals)) for c in cs], i32),
        prior_param=np.asarray([pvalue.get(c.goal, 0.0) for c in cs], f32),
        quality=np.asarray([spec.priors.index(c.prior) if c.prior in spec.priors else 0 for c in cs], i32),
        obs_noise=np.asarray([shifts[c.shift].obs_noise for c in cs], f32),
        act_noise=np.asarray([shifts[c.shift].action_noise for c in cs], f32),
        mass_scale=np.asarray([shifts[c.shift].mass for c in cs], f32),
        friction_scale=np.asarray([shifts[c.shift].friction for c in cs], f32),
        cell_key=np.asarray([c.key() for c in cs], i32),
        seed=np.zeros(len(cs), np.uint32),
        episode=np.zeros(len(cs), i32),
    )
    lanes = per_cell.take(cell_idx)._replace(
        seed=np.tile(np.repeat(np.asarray(spec.seeds, np.int64), spec.episodes), len(cs)).astype(np.uint32),
        episode=np.tile(np.arange(spec.episodes), len(cs) * len(spec.seeds)).astype(i32))
    return LaneTable(lanes, cell_idx.astype(i32), np.arange(cell_idx.size, dtype=np.int64))


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """A resolved grid (see the module docstring). Build with :func:`resolve`."""

    spec: GridSpec
    backend: str
    rules: tuple[kernels.Rule, ...]
    goals: tuple  # bound goals (poe_jax.envs.goals.Goal), in spec order
    shifts: tuple[Shift, ...]
    actor_path: Path
    prior_path: Path
    actor_card: dict
    prior_card: dict

    @property
    def needs_critic(self) -> bool:
        return any(r.needs_critic for r in self.rules)

    @property
    def identity(self) -> dict:
        """What determines the results: the spec's identity, the lane layout, the backend, the checkpoints' hashes."""
        mjx = {"mjx": self.mjx_options._asdict()} if self.backend == "mjx" else {}  # the solver MJX ran
        return {**self.spec.identity(), "lanes": LANE_LAYOUT, "backend": self.backend,
                "actor_sha256": self.actor_card["sha256"], "prior_sha256": self.prior_card["sha256"], **mjx}

    @functools.cached_property
    def cells(self) -> list[Cell]:
        return cells(self.spec)

    @property
    def n_lanes(self) -> int:
        """The grid's episodes: cells × seeds × episodes."""
        return len(self.cells) * len(self.spec.seeds) * self.spec.episodes

    def n_lanes_per_program(self) -> list[int]:
        """The lanes each of the grid's programs runs (:meth:`program_keys`, first-seen order)."""
        per_cell = self.program_keys()
        reps = len(self.spec.seeds) * self.spec.episodes
        return [per_cell.count(k) * reps for k in dict.fromkeys(per_cell)]

    @functools.cached_property
    def env(self):
        """The grid's env, built once."""
        from poe_jax import envs

        physics = {"options": self.mjx_options} if self.backend == "mjx" else {}
        return envs.make(self.spec.env, backend=self.backend, **self.spec.env_options, **physics)

    @functools.cached_property
    def chunk(self) -> tuple[int, str]:
        """``(lanes per compiled call, how it was chosen)``: the spec's ``chunk_size``; else 1024 on the native
        backend; else, on MJX, the largest power of two whose lanes (one ``mjx.Data`` each, times
        :data:`LANE_OVERHEAD`) fit :data:`DEVICE_SHARE` of the first device's memory, at most
        :data:`MAX_AUTO_CHUNK` (1024 where the device does not report its memory)."""
        if self.spec.chunk_size is not None:
            return self.spec.chunk_size, "given"
        if self.backend != "mjx":
            return NATIVE_CHUNK, f"the native backend's default ({NATIVE_CHUNK})"
        import jax
        from mujoco import mjx

        limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
        if not limit:
            return NATIVE_CHUNK, f"{NATIVE_CHUNK} (the device reports no memory size)"
        data = mjx.make_data(self.env.physics.mjx_model)
        per_lane = LANE_OVERHEAD * sum(int(np.asarray(x).nbytes) for x in jax.tree_util.tree_leaves(data))
        fit = int(limit * DEVICE_SHARE // per_lane)
        n = int(min(MAX_AUTO_CHUNK, max(MIN_BATCH, 2 ** int(np.floor(np.log2(max(fit, 1)))))))
        return n, (f"{n:,} lanes from device memory: {DEVICE_SHARE:.0%} of {limit / 2**30:.1f} GiB at "
                   f"{per_lane / 2**10:.0f} KiB per lane ({LANE_OVERHEAD} x one mjx.Data)")

    @property
    def chunk_size(self) -> int:
        """Lanes per compiled call (:attr:`chunk`)."""
        return self.chunk[0]

    @functools.cached_property
    def mjx_options(self):
        """The MJX solver settings (:func:`poe_jax.grid.spec.mjx_options`); the native backend ignores them."""
        from poe_jax.grid.spec import mjx_options

        return mjx_options(self.spec)

    @property
    def env_info(self):
        """What the env declares it offers (:class:`poe_jax.envs.registry.EnvEntry`: success, metrics, ...)."""
        from poe_jax.envs import registry

        return registry.ENVS[self.spec.env]

    @functools.cached_property
    def actor_full(self):
        """The frozen actor with its critic (when it has one), loaded once."""
        return checkpoints.load(self.actor_path, env=self.env)

    @functools.cached_property
    def actor(self):
        """The frozen actor the grid runs (its critic only when a rule needs it), loaded once."""
        return self.actor_full if self.needs_critic else self.actor_full.replace(critic=None)

    @functools.cached_property
    def prior(self):
        """The goal prior, loaded once."""
        return checkpoints.load(self.prior_path, env=self.env)

    @functools.cached_property
    def lanes(self) -> LaneTable:
        """The grid's lanes (:func:`lane_table`), built once."""
        return lane_table(self.spec, self.prior.spec.goals, self.prior.spec.goal_params,
                          bound={g.name: g.params for g in self.goals})

    @functools.cached_property
    def cell_table(self) -> CellTable:
        """What each cell's records carry (:class:`CellTable`), resolved once."""
        from poe_jax.envs.goals import GOALS

        cs = self.cells
        rules = {r.name: r for r in self.rules}
        goals = {g.name: g for g in self.goals}
        decl = [GOALS[g.name].tracks for g in self.goals if GOALS[g.name].tracks] or \
            [d.tracks for d in GOALS.values() if d.tracks]  # the column exists (NaN) when no goal of the grid tracks
        tracked = {param: signal for signal, param in decl}
        return CellTable(
            rule=np.asarray([c.rule for c in cs], object),
            alpha_equiv=np.asarray([rules[c.rule].equiv(float(np.float32(c.param))) for c in cs]),
            adaptive=np.asarray([rules[c.rule].alpha_fn is not None for c in cs]),
            goal=np.asarray([c.goal for c in cs], object),
            prior=np.asarray([c.prior for c in cs], object),
            shift=np.asarray([c.shift for c in cs], object),
            targets={p: np.asarray([goals[c.goal].params.get(p, np.nan) if GOALS[c.goal].tracks and
                                    GOALS[c.goal].tracks[1] == p else np.nan for c in cs], np.float64)
                     for p in tracked},
            tracked=tracked,
        )

    def program_keys(self) -> list[ProgramKey]:
        """Per cell (in :attr:`cells` order), the program its lanes run (:class:`ProgramKey`)."""
        shifts = {s.name: s for s in self.shifts}
        return [ProgramKey(c.rule, "trained" if c.prior == PRIOR_BLIND else c.prior,
                           shifts[c.shift].obs_noise > 0, shifts[c.shift].action_noise > 0) for c in self.cells]

    def program(self, key: ProgramKey, on_step=None):
        """``program(actor, prior, lanes) -> Totals`` for the lanes of ``key`` (not yet jitted): one rule,
        one prior quality, so ``Lanes.rule`` and ``Lanes.quality`` are 0. ``on_step(t)``: progress."""
        sp = self.spec
        return build_program(self.env, self.goals, (kernels.RULES[key.rule],), (key.quality,),
                             max_steps=sp.max_steps, degraded_noise=sp.degraded_noise, sample=sp.sample,
                             obs_noise=key.obs_noise, act_noise=key.act_noise, on_step=on_step,
                             block=MIN_BATCH if self.backend == "native" else None)


def resolve(spec: GridSpec, backend: str | None = None) -> Plan:
    """Check ``spec`` (:func:`poe_jax.grid.spec.check`) and resolve it once (see the module docstring)."""
    from poe_jax.envs.goals import make_goal, prior_head
    from poe_jax.physics import resolve_backend

    check(spec)
    actor_path = resolve_checkpoint(spec.actor, spec.base_dir, "actor")
    prior_path = resolve_checkpoint(spec.prior, spec.base_dir, "prior")
    try:
        actor_card, prior_card = checkpoints.read_card(actor_path), checkpoints.read_card(prior_path)
    except checkpoints.CheckpointError as e:
        raise SpecError(str(e)) from None
    if actor_card["kind"] != "actor":
        raise SpecError(f"actor: {actor_path} is a {actor_card['kind']} checkpoint, not an actor")
    if prior_card["kind"] != "prior":
        raise SpecError(f"prior: {prior_path} is a {prior_card['kind']} checkpoint, not a goal prior")
    rules = tuple(kernels.RULES[r] for r in spec.rules)
    needs_critic = sorted(r.name for r in rules if r.needs_critic)
    if needs_critic and not actor_card.get("critic"):
        raise SpecError(f"rules: {needs_critic} need the actor's critic, and {actor_path} has none "
                        "(IQL actors from poe-jax train iql or port corl --algo iql carry theirs)")
    missing = [g for g in spec.goals if prior_head(g, prior_card["architecture"]["goals"]) is None]
    if missing:
        raise SpecError(f"goals: the prior {prior_path} was not trained on {missing}; it knows {prior_card['architecture']['goals']}")
    goals = tuple(make_goal(g, spec.env, **spec.goal_params.get(g, {})) for g in spec.goals)
    plan = Plan(spec, resolve_backend(backend or spec.backend), rules, goals, tuple(Shift.parse(s) for s in spec.shifts),
                actor_path, prior_path, actor_card, prior_card)
    try:  # the env, built once here and kept by the plan: the checkpoints' cards are checked against it
        env = plan.env
    except ValueError as e:  # an env option the model refuses (main_body)
        raise SpecError(f"env_options.{e}") from None
    try:
        checkpoints.check_env(actor_card, env, actor_path)
        checkpoints.check_env(prior_card, env, prior_path)
    except checkpoints.CheckpointError as e:
        raise SpecError(str(e)) from None
    return plan


class PresetSize(NamedTuple):
    """What ``poe-jax run --list-presets`` prints of a preset: its first comment's sentence, its grids and
    episodes (counted from its specs, nothing loaded), and its ``# measured:`` comment (or ``""``)."""

    name: str
    about: str
    grids: int
    episodes: int
    measured: str


def preset_sizes() -> list[PresetSize]:
    """Every shipped preset's :class:`PresetSize`."""
    from poe_jax.grid.spec import _PRESETS, load_specs, preset_names

    out = []
    for name in preset_names():
        comments = [ln[1:].strip() for ln in (_PRESETS / f"{name}.toml").read_text().splitlines() if ln.startswith("#")]
        about = comments[0].partition(":")[2].strip() or comments[0] if comments else ""
        about = about if len(about) <= 90 else about[:90].rsplit(" ", 1)[0] + " ..."
        measured = next((c.removeprefix("measured:").strip() for c in comments if c.startswith("measured:")), "")
        specs = load_specs(f"preset:{name}")
        episodes = sum(len(cells(s)) * len(s.seeds) * s.episodes for s in specs)
        out.append(PresetSize(name, about, len(specs), episodes, measured))
    return out
