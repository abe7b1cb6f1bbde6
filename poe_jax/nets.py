"""Frozen actors, critics and goal priors in Flax.

The actor architectures match CORL's published single-file implementations
exactly, so CORL checkpoints port tensor for tensor (:mod:`poe_jax.port`):

==========  ==============================================================  ====================
algo        network                                                         CORL class
==========  ==============================================================  ====================
``iql``     MLP 256-256 → A, tanh on the mean; state-independent            ``GaussianPolicy``
            ``log_std`` clamped to [-20, 2]
``iql_det`` MLP 256-256 → A, tanh                                           ``DeterministicPolicy``
``td3_bc``  MLP 256-256 → A, tanh, × ``max_action``                         ``Actor`` (td3_bc.py)
``bc``      same as ``td3_bc``                                              ``Actor`` (any_percent_bc.py)
``awac``    MLP 256-256-256 → A, no tanh; ``log_std`` clamped to [-20, 2]   ``Actor`` (awac.py)
``cql``     MLP 256-256-256 → 2A (mean, log-std); log-std × multiplier +    ``TanhGaussianPolicy``
            offset, clamped to [-20, 2]; tanh squashing
``sac_n``   trunk 256-256-256, heads ``mu`` and ``log_sigma`` (clipped to   ``Actor`` (sac_n.py)
            [-5, 2]); tanh squashing
==========  ==============================================================  ====================

Hidden layers use ReLU. An :class:`Actor` is a pytree holding its parameters and
its observation normalisation, which it applies itself, so a jitted function that
takes an actor as an argument does not recompile for new weights.

Three views of an actor:

* :meth:`Actor.base` -- the network's own Gaussian exactly as the PyTorch module
  defines it (for tanh-squashed actors, the pre-tanh Gaussian; for IQL, before
  ``max_action``). Used to check ports.
* :meth:`Actor.act` -- the deterministic evaluation action CORL's ``act`` returns
  in eval mode.
* :meth:`Actor.distribution` -- a :class:`~poe_jax.kernels.gaussian.DiagGaussian` in
  action units, what the composition rules combine with a prior. Its mean is
  always ``act(obs)`` (before the env's clipping). Squashed actors (``cql``,
  ``sac_n``) are linearised at the mean: ``std = max_action * (1 - tanh(mu)^2) *
  sigma`` (delta method). Deterministic actors (``iql_det``, ``td3_bc``, ``bc``)
  have no spread of their own: they get ``det_std * max_action``, set in their
  :class:`ActorSpec` (default 0.1), and recorded in the checkpoint's card. Every
  std is floored at ``STD_FLOOR * max_action`` so saturated tanh units stay valid
  experts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from poe_jax.kernels.gaussian import DiagGaussian

__all__ = [
    "ALGOS",
    "STD_FLOOR",
    "Actor",
    "ActorSpec",
    "Critic",
    "CriticSpec",
    "GoalPrior",
    "ObsNorm",
    "PriorSpec",
    "init_actor",
    "init_critic",
    "init_prior",
]

ALGOS = ("iql", "iql_det", "td3_bc", "bc", "awac", "cql", "sac_n")
STD_FLOOR = 1e-6
_DETERMINISTIC = ("iql_det", "td3_bc", "bc")
_SQUASHED = ("cql", "sac_n")
_DEFAULT_HIDDEN = {"iql": (256, 256), "iql_det": (256, 256), "td3_bc": (256, 256), "bc": (256, 256),
                   "awac": (256, 256, 256), "cql": (256, 256, 256), "sac_n": (256, 256, 256)}


# ---------------------------------------------------------------- modules
class MLP(nn.Module):
    """Dense layers ``layers_0 .. layers_{n-1}`` with ReLU between them."""

    features: Sequence[int]

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate(self.features):
            x = nn.Dense(f, name=f"layers_{i}")(x)
            if i < len(self.features) - 1:
                x = nn.relu(x)
        return x


class _GaussianHead(nn.Module):
    """``iql`` / ``awac``: MLP mean (tanh for iql) and a free ``log_std`` vector."""

    hidden: Sequence[int]
    act_size: int
    tanh_mean: bool

    @nn.compact
    def __call__(self, obs):
        mean = MLP((*self.hidden, self.act_size), name="net")(obs)
        if self.tanh_mean:
            mean = jnp.tanh(mean)
        log_std = self.param("log_std", nn.initializers.zeros, (self.act_size,))
        return mean, jnp.exp(jnp.clip(log_std, -20.0, 2.0)) * jnp.ones_like(mean)


class _Deterministic(nn.Module):
    hidden: Sequence[int]
    act_size: int

    @nn.compact
    def __call__(self, obs):
        return jnp.tanh(MLP((*self.hidden, self.act_size), name="net")(obs))


class _CQLPolicy(nn.Module):
    hidden: Sequence[int]
    act_size: int

    @nn.compact
    def __call__(self, obs):
        out = MLP((*self.hidden, 2 * self.act_size), name="net")(obs)
        mean, log_std = out[..., : self.act_size], out[..., self.act_size :]
        mult = self.param("log_std_multiplier", nn.initializers.constant(1.0), ())
        offset = self.param("log_std_offset", nn.initializers.constant(-1.0), ())
        return mean, jnp.exp(jnp.clip(mult * log_std + offset, -20.0, 2.0))


class _SACNPolicy(nn.Module):
    hidden: Sequence[int]
    act_size: int

    @nn.compact
    def __call__(self, obs):
        h = obs
        for i, f in enumerate(self.hidden):
            h = nn.relu(nn.Dense(f, name=f"trunk_{i}")(h))
        mu = nn.Dense(self.act_size, name="mu")(h)
        log_sigma = nn.Dense(self.act_size, name="log_sigma")(h)
        return mu, jnp.exp(jnp.clip(log_sigma, -5.0, 2.0))


def _module(spec: "ActorSpec") -> nn.Module:
    h, a = spec.hidden, spec.act_size
    if spec.algo in ("iql", "awac"):
        return _GaussianHead(h, a, tanh_mean=spec.algo == "iql")
    if spec.algo in _DETERMINISTIC:
        return _Deterministic(h, a)
    if spec.algo == "cql":
        return _CQLPolicy(h, a)
    return _SACNPolicy(h, a)


# ---------------------------------------------------------------- specs
@dataclass(frozen=True)
class ActorSpec:
    """Static description of an actor (hashable; stored in the card).

    Attributes:
        algo: one of :data:`ALGOS`.
        obs_size, act_size: input and output sizes.
        hidden: hidden layer widths (default: the algo's published sizes).
        max_action: action scale (the env's actuator bound; 1 for MuJoCo locomotion).
        det_std: std in units of ``max_action`` given to deterministic actors by
            :meth:`Actor.distribution` (ignored by stochastic ones).
    """

    algo: str
    obs_size: int
    act_size: int
    hidden: tuple[int, ...] = ()
    max_action: float = 1.0
    det_std: float = 0.1

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ValueError(f"unknown actor algo {self.algo!r}; known: {', '.join(ALGOS)}")
        if not self.hidden:
            object.__setattr__(self, "hidden", _DEFAULT_HIDDEN[self.algo])
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("obs_size", "act_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"ActorSpec.{name} must be > 0; got {getattr(self, name)}")
        if not self.max_action > 0:
            raise ValueError(f"ActorSpec.max_action must be > 0; got {self.max_action}")
        if not self.det_std > 0:
            raise ValueError(f"ActorSpec.det_std must be > 0; got {self.det_std}")

    @property
    def deterministic(self) -> bool:
        return self.algo in _DETERMINISTIC

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


@dataclass(frozen=True)
class CriticSpec:
    """IQL critics: twin Q ``[obs + act] -> 1`` and V ``[obs] -> 1`` (MLP 256-256)."""

    obs_size: int
    act_size: int
    hidden: tuple[int, ...] = (256, 256)

    def to_dict(self) -> dict:
        return {"obs_size": self.obs_size, "act_size": self.act_size, "hidden": list(self.hidden)}


def param_values(goal_params, bound: dict) -> dict[str, float]:
    """``{goal: value}`` of each continuous goal parameter in ``goal_params`` (a prior's
    :attr:`PriorSpec.goal_params` entries), read from ``bound`` (``{goal: parameters}``, e.g.
    :func:`poe_jax.envs.goals.bound_params`); goals not in ``bound`` are left out."""
    return {g: float(bound[g][param]) for g, param, *_ in goal_params if g in bound}


@dataclass(frozen=True)
class PriorSpec:
    """Goal-conditioned Gaussian prior ``(obs, goal[, goal parameter]) -> DiagGaussian``.

    Attributes:
        obs_size, act_size: sizes.
        goals: the goal names the prior was trained on; goal ``i`` is embedded by
            a learned ``embed_size`` vector.
        hidden: hidden widths. max_action: action scale (the mean is
            ``max_action * tanh(.)``). log-std is clipped to [-5, 2].
        goal_params: continuous goal parameters the prior takes as an input, as
            ``(goal, param, lo, hi, default)`` entries (e.g. ``("G3_target",
            "target_speed", 0.2, 3.0, 0.5)``): trained over ``[lo, hi]`` (the range
            the dataset contains), fed as ``2 (x - lo) / (hi - lo) - 1`` clipped to
            [-1, 1] (a value outside the range is treated as its end); 0 for
            goals without one. Empty: no such input (older priors).
        likelihood: how the std was fitted: ``"censored"`` (actions at the bounds
            are censored observations, so the std does not collapse there) or
            ``"gaussian"`` (plain density on clipped actions; older priors).
        std_scale: the std head's unit: ``"max_action"`` (``std = max_action * exp(log_std)``,
            as the mean is ``max_action * tanh(.)``; priors trained now) or ``"absolute"``
            (``std = exp(log_std)``; older priors). The same at ``max_action = 1`` (MuJoCo
            locomotion). It matters for an untrained network (the ``random`` prior quality),
            whose ``log_std`` is about 0: in units of ``max_action`` it is as vague at AntMaze's
            ±30 as at locomotion's ±1; in absolute units it would be 30 times more confident.
    """

    obs_size: int
    act_size: int
    goals: tuple[str, ...]
    hidden: tuple[int, ...] = (256, 256)
    embed_size: int = 16
    max_action: float = 1.0
    goal_params: tuple[tuple, ...] = ()
    likelihood: str = "gaussian"
    std_scale: str = "absolute"

    def __post_init__(self):
        if self.std_scale not in ("absolute", "max_action"):
            raise ValueError(f"PriorSpec.std_scale: {self.std_scale!r}; expected 'absolute' or 'max_action'")
        object.__setattr__(self, "goal_params", tuple(
            (str(g), str(p), float(lo), float(hi), float(d)) for g, p, lo, hi, d in self.goal_params))
        for g, p, lo, hi, _ in self.goal_params:
            if g not in self.goals or not hi > lo:
                raise ValueError(f"PriorSpec.goal_params: ({g!r}, {p!r}, {lo}, {hi}) needs a goal of the prior "
                                 f"and hi > lo")

    def goal_index(self, goal: str) -> int:
        if goal not in self.goals:
            raise ValueError(f"this prior has no goal {goal!r}; it was trained on: {', '.join(self.goals)}")
        return self.goals.index(goal)

    def param_of(self, goal: str) -> tuple | None:
        """The ``(goal, param, lo, hi, default)`` entry of ``goal``, or None."""
        return next((e for e in self.goal_params if e[0] == goal), None)

    def param_feature(self, goal, value):
        """The network's continuous input for goal index ``goal`` at parameter ``value`` (traceable)."""
        goal = jnp.asarray(goal, jnp.int32)
        value = jnp.asarray(value, jnp.float32)
        out = jnp.zeros(jnp.broadcast_shapes(goal.shape, value.shape), jnp.float32)
        for g, _, lo, hi, _ in self.goal_params:
            # outside the trained range the prior would extrapolate: a value beyond it is fed as its end
            out = jnp.where(goal == self.goals.index(g), jnp.clip(2.0 * (value - lo) / (hi - lo) - 1.0, -1.0, 1.0), out)
        return out

    def default_param(self, goal) -> jax.Array:
        """Each goal's default parameter value (0 for goals without one), for a goal index."""
        goal = jnp.asarray(goal, jnp.int32)
        out = jnp.zeros(goal.shape, jnp.float32)
        for g, _, _, _, d in self.goal_params:
            out = jnp.where(goal == self.goals.index(g), d, out)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["goals"], d["hidden"] = list(self.goals), list(self.hidden)
        d["goal_params"] = [list(e) for e in self.goal_params]
        return d


# ---------------------------------------------------------------- normalisation
@struct.dataclass
class ObsNorm:
    """Observation normalisation ``(obs - mean) / std``.

    ``std`` already includes the epsilon it was computed with (CORL: dataset std
    + 1e-3); ``eps`` is kept for the record. The identity (mean 0, std 1) means no
    normalisation.
    """

    mean: jax.Array
    std: jax.Array
    eps: float = struct.field(pytree_node=False, default=0.0)

    @classmethod
    def identity(cls, size: int) -> "ObsNorm":
        return cls(jnp.zeros(size, jnp.float32), jnp.ones(size, jnp.float32), 0.0)

    @classmethod
    def from_data(cls, observations, eps: float = 1e-3) -> "ObsNorm":
        """CORL's statistics: mean and ``std + eps`` over the dataset's observations."""
        obs = jnp.asarray(observations, jnp.float32)
        return cls(obs.mean(0), obs.std(0) + eps, float(eps))

    def __call__(self, obs):
        return (obs - self.mean) / self.std


def _check_obs(obs, size: int, who: str):
    if obs.shape[-1] != size:
        raise ValueError(f"{who} expects observations of size {size}; got shape {tuple(obs.shape)}")


# ---------------------------------------------------------------- objects
@struct.dataclass
class Critic:
    """IQL critics with the actor's normalisation: ``q(obs, act)`` (min of twins), ``v(obs)``."""

    params: dict
    norm: ObsNorm
    spec: CriticSpec = struct.field(pytree_node=False)

    def _mlp(self, which: str, x):
        return MLP((*self.spec.hidden, 1)).apply({"params": self.params[which]}, x)[..., 0]

    def q_both(self, obs, action):
        _check_obs(obs, self.spec.obs_size, "critic")
        sa = jnp.concatenate([self.norm(obs), action], axis=-1)
        return self._mlp("q1", sa), self._mlp("q2", sa)

    def q(self, obs, action):
        return jnp.minimum(*self.q_both(obs, action))

    def v(self, obs):
        _check_obs(obs, self.spec.obs_size, "critic")
        return self._mlp("v", self.norm(obs))

    def advantage(self, obs, action):
        return self.q(obs, action) - self.v(obs)


@struct.dataclass
class Actor:
    """A frozen actor: parameters, normalisation, spec; optionally its critics.

    Works on one observation ``[obs_size]`` or a batch ``[..., obs_size]``.
    """

    params: dict
    norm: ObsNorm
    spec: ActorSpec = struct.field(pytree_node=False)
    critic: Critic | None = None

    def base(self, obs) -> DiagGaussian:
        """The network's own Gaussian, as the PyTorch module defines it (module docstring)."""
        _check_obs(obs, self.spec.obs_size, f"{self.spec.algo} actor")
        out = _module(self.spec).apply({"params": self.params}, self.norm(obs))
        if self.spec.deterministic:
            return DiagGaussian(out, jnp.zeros_like(out))
        return DiagGaussian(*out)

    def act(self, obs) -> jax.Array:
        """Deterministic evaluation action ``[..., act_size]`` (CORL's eval-mode ``act``)."""
        b, m = self.base(obs), self.spec.max_action
        algo = self.spec.algo
        if algo in ("iql", "iql_det"):
            return jnp.clip(m * b.mean, -m, m)
        if algo in ("td3_bc", "bc"):
            return m * b.mean
        if algo == "awac":
            return b.mean
        return m * jnp.tanh(b.mean)

    def distribution(self, obs) -> DiagGaussian:
        """The actor as a Gaussian in action units (module docstring)."""
        b, m = self.base(obs), self.spec.max_action
        algo = self.spec.algo
        mean = self.act(obs)
        if self.spec.deterministic:
            std = jnp.full_like(mean, self.spec.det_std * m)
        elif algo == "iql":
            std = m * b.std
        elif algo == "awac":
            std = b.std
        else:  # squashed: delta method at the mean, tanh'(u) = 1 - tanh(u)**2 = sech(u)**2
            # as exp(2 (log 2 - |u| - softplus(-2|u|))): 1 - t*t cancels in float32 (-70% at u = 8)
            au = jnp.abs(b.mean)
            std = m * jnp.exp(2.0 * (jnp.log(2.0) - au - jax.nn.softplus(-2.0 * au))) * b.std
        return DiagGaussian(mean, jnp.maximum(std, STD_FLOOR * m))


class _PriorNet(nn.Module):
    spec: PriorSpec

    @nn.compact
    def __call__(self, obs, goal, feature=None):
        s = self.spec
        # goal[..., None]: Flax's Embed with a single embedding broadcasts to the input's shape,
        # which fails for a scalar goal index; one trailing axis works for any number of goals.
        emb = nn.Embed(len(s.goals), s.embed_size, name="goal_embed")(jnp.asarray(goal)[..., None])[..., 0, :]
        emb = jnp.broadcast_to(emb, (*obs.shape[:-1], s.embed_size))
        parts = [obs, emb]
        if s.goal_params:
            f = jnp.zeros(()) if feature is None else jnp.asarray(feature, jnp.float32)
            parts.append(jnp.broadcast_to(f, obs.shape[:-1])[..., None])
        h = MLP(s.hidden, name="trunk")(jnp.concatenate(parts, axis=-1))
        h = nn.relu(h)
        mean = s.max_action * jnp.tanh(nn.Dense(s.act_size, name="mean")(h))
        log_std = jnp.clip(nn.Dense(s.act_size, name="log_std")(h), -5.0, 2.0)
        return mean, (s.max_action if s.std_scale == "max_action" else 1.0) * jnp.exp(log_std)


@struct.dataclass
class GoalPrior:
    """A goal-conditioned Gaussian prior: ``distribution(obs, goal, param=None)``.

    ``goal`` is a goal index (an int or an int32 array, traced is fine); use
    ``prior.spec.goal_index(name)`` to get one from a goal name. ``param`` is the
    goal's continuous parameter (e.g. G3's target speed, m/s) for priors that take
    one (:attr:`PriorSpec.goal_params`); None uses the goal's default.
    """

    params: dict
    norm: ObsNorm
    spec: PriorSpec = struct.field(pytree_node=False)

    def distribution(self, obs, goal, param=None) -> DiagGaussian:
        _check_obs(obs, self.spec.obs_size, "goal prior")
        goal = jnp.asarray(goal, jnp.int32)
        feature = None
        if self.spec.goal_params:
            value = self.spec.default_param(goal) if param is None else param
            feature = self.spec.param_feature(goal, value)
        return DiagGaussian(*_PriorNet(self.spec).apply({"params": self.params}, self.norm(obs), goal, feature))


# ---------------------------------------------------------------- init
def init_actor(spec: ActorSpec, key: jax.Array, norm: ObsNorm | None = None) -> Actor:
    """Random (PyTorch-default-like) weights for ``spec``: Flax's initialisers."""
    params = _module(spec).init(key, jnp.zeros((1, spec.obs_size)))["params"]
    return Actor(params, norm or ObsNorm.identity(spec.obs_size), spec)


def init_critic(spec: CriticSpec, key: jax.Array, norm: ObsNorm | None = None) -> Critic:
    k1, k2, k3 = jax.random.split(key, 3)
    mlp = MLP((*spec.hidden, 1))
    sa = jnp.zeros((1, spec.obs_size + spec.act_size))
    params = {
        "q1": mlp.init(k1, sa)["params"],
        "q2": mlp.init(k2, sa)["params"],
        "v": mlp.init(k3, jnp.zeros((1, spec.obs_size)))["params"],
    }
    return Critic(params, norm or ObsNorm.identity(spec.obs_size), spec)


def init_prior(spec: PriorSpec, key: jax.Array, norm: ObsNorm | None = None) -> GoalPrior:
    params = _PriorNet(spec).init(key, jnp.zeros((1, spec.obs_size)), jnp.zeros((), jnp.int32))["params"]
    return GoalPrior(params, norm or ObsNorm.identity(spec.obs_size), spec)


def flat_paths(tree, is_leaf=None) -> dict:
    """``{"a/b/kernel": leaf}`` for every leaf of a (nested dict) tree."""
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): v for path, v in flat}


def param_shapes(params) -> dict[str, list[int]]:
    """``{"a/b/kernel": shape}`` for every array in a parameter tree."""
    return {k: list(jnp.shape(v)) for k, v in flat_paths(params).items()}


def expected_shapes(kind: str, spec) -> dict[str, list[int]]:
    """Parameter shapes an object of ``kind`` ("actor", "critic", "prior") must have."""
    make = {"actor": init_actor, "critic": init_critic, "prior": init_prior}[kind]
    obj = jax.eval_shape(lambda k: make(spec, k), jax.random.key(0))
    return param_shapes(obj.params)

