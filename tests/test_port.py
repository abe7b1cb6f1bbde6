"""Porting CORL PyTorch actors: exact numerics, safe loading, clear errors.

The PyTorch modules below are written from CORL's published architectures
(module names and layer order as in CORL's single-file algorithms), given random
weights, saved the way CORL's trainers save them, ported, and compared.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the port tests need its CPU build (.ci/run installs it; pip install torch --index-url https://download.pytorch.org/whl/cpu)")
from torch import nn  # noqa: E402

from poe_jax import checkpoints, compose, nets, port  # noqa: E402
from poe_jax.grid import rollout  # noqa: E402
from poe_jax.kernels.gaussian import DiagGaussian, kl  # noqa: E402

OBS, ACT = 11, 3
N_OBS = 1000


# ---------------------------------------------------------------- reference PyTorch modules
def _mlp(dims, out_act=None):
    layers = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.ReLU()]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class TorchMLP(nn.Module):  # CORL iql.py MLP: attribute `net`
    def __init__(self, dims, out_act=None, squeeze=False):
        super().__init__()
        self.net = _mlp(dims, out_act)
        self.squeeze = squeeze

    def forward(self, x):
        y = self.net(x)
        return y.squeeze(-1) if self.squeeze else y


class IQLGaussian(nn.Module):
    def __init__(self, max_action=1.0):
        super().__init__()
        self.net = TorchMLP([OBS, 256, 256, ACT], nn.Tanh())
        self.log_std = nn.Parameter(torch.zeros(ACT))
        self.max_action = max_action

    def forward(self, obs):
        mean = self.net(obs)
        std = torch.exp(self.log_std.clamp(-20.0, 2.0))
        return mean, std.expand_as(mean)

    def act(self, obs):
        return torch.clamp(self.max_action * self(obs)[0], -self.max_action, self.max_action)


class IQLDeterministic(nn.Module):
    def __init__(self, max_action=1.0):
        super().__init__()
        self.net = TorchMLP([OBS, 256, 256, ACT], nn.Tanh())
        self.max_action = max_action

    def forward(self, obs):
        return self.net(obs), None

    def act(self, obs):
        return torch.clamp(self.net(obs) * self.max_action, -self.max_action, self.max_action)


class TD3BCActor(nn.Module):  # also any_percent_bc.Actor
    def __init__(self, max_action=1.0):
        super().__init__()
        self.net = _mlp([OBS, 256, 256, ACT], nn.Tanh())
        self.max_action = max_action

    def forward(self, obs):
        return self.net(obs), None

    def act(self, obs):
        return self.max_action * self.net(obs)


class AWACActor(nn.Module):
    def __init__(self):
        super().__init__()
        self._mlp = _mlp([OBS, 256, 256, 256, ACT])
        self._log_std = nn.Parameter(torch.zeros(ACT))

    def forward(self, obs):
        mean = self._mlp(obs)
        return mean, self._log_std.clamp(-20.0, 2.0).exp().expand_as(mean)

    def act(self, obs):
        return self(obs)[0]


class Scalar(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.constant = nn.Parameter(torch.tensor(v, dtype=torch.float32))

    def forward(self):
        return self.constant


class CQLPolicy(nn.Module):
    def __init__(self, max_action=1.0):
        super().__init__()
        self.base_network = _mlp([OBS, 256, 256, 256, 2 * ACT])
        self.log_std_multiplier = Scalar(1.0)
        self.log_std_offset = Scalar(-1.0)
        self.max_action = max_action

    def forward(self, obs):
        mean, log_std = torch.split(self.base_network(obs), ACT, dim=-1)
        log_std = self.log_std_multiplier() * log_std + self.log_std_offset()
        return mean, torch.exp(torch.clamp(log_std, -20.0, 2.0))

    def act(self, obs):
        return self.max_action * torch.tanh(self(obs)[0])


class SACNActor(nn.Module):
    def __init__(self, max_action=1.0):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(OBS, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                   nn.Linear(256, 256), nn.ReLU())
        self.mu = nn.Linear(256, ACT)
        self.log_sigma = nn.Linear(256, ACT)
        self.max_action = max_action

    def forward(self, obs):
        h = self.trunk(obs)
        return self.mu(h), torch.exp(torch.clip(self.log_sigma(h), -5, 2))

    def act(self, obs):
        return torch.tanh(self(obs)[0]) * self.max_action


class TwinQ(nn.Module):
    def __init__(self):
        super().__init__()
        self.q1 = TorchMLP([OBS + ACT, 256, 256, 1], squeeze=True)
        self.q2 = TorchMLP([OBS + ACT, 256, 256, 1], squeeze=True)

    def forward(self, s, a):
        sa = torch.cat([s, a], 1)
        return torch.min(self.q1(sa), self.q2(sa))


class ValueFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.v = TorchMLP([OBS, 256, 256, 1], squeeze=True)

    def forward(self, s):
        return self.v(s)


TORCH_ACTORS = {"iql": IQLGaussian, "iql_det": IQLDeterministic, "td3_bc": TD3BCActor, "bc": TD3BCActor,
                "awac": AWACActor, "cql": CQLPolicy, "sac_n": SACNActor}


def _randomise(module: nn.Module, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = 0.3 if p.ndim < 2 else 1.0 / np.sqrt(p.shape[-1])
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


@pytest.fixture(scope="module")
def obs_batch():
    return np.random.default_rng(0).normal(size=(N_OBS, OBS)).astype(np.float32) * 2.0


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    rng = np.random.default_rng(1)
    mean, std = rng.normal(size=OBS).astype(np.float32), (0.5 + rng.random(OBS)).astype(np.float32)
    path = tmp_path_factory.mktemp("stats") / "stats.npz"
    np.savez(path, mean=mean, std=std)
    return path, mean, std


def _save_corl(tmp_path: Path, algo: str, seed: int = 0, with_critics: bool = True):
    actor = _randomise(TORCH_ACTORS[algo](), seed).eval()
    state = {"actor": actor.state_dict(), "actor_optimizer": torch.optim.Adam(actor.parameters()).state_dict(),
             "total_it": 7}
    extra = {}
    if algo == "iql" and with_critics:
        qf, vf = _randomise(TwinQ(), seed + 1), _randomise(ValueFunction(), seed + 2)
        state.update(qf=qf.state_dict(), vf=vf.state_dict())
        extra = {"qf": qf, "vf": vf}
    path = tmp_path / f"{algo}.pt"
    torch.save(state, path)
    return path, actor, extra


# ---------------------------------------------------------------- numerics
@pytest.mark.parametrize("algo", nets.ALGOS)
def test_port_matches_pytorch(tmp_path, algo, obs_batch, stats):
    stats_path, mean, std = stats
    path, tactor, extra = _save_corl(tmp_path, algo, seed=nets.ALGOS.index(algo))
    actor = port.from_corl(path, algo, obs_stats=stats_path)
    with torch.no_grad():
        x = torch.from_numpy((obs_batch - mean) / std)
        t_mean, t_std = tactor(x)
        t_act = tactor.act(x).numpy()
    base = jax.jit(actor.base)(jnp.asarray(obs_batch))
    np.testing.assert_allclose(np.asarray(jax.jit(actor.act)(jnp.asarray(obs_batch))), t_act, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(base.mean), t_mean.numpy(), rtol=1e-5, atol=1e-5)
    if t_std is not None:
        np.testing.assert_allclose(np.asarray(base.std), t_std.numpy(), rtol=1e-5, atol=1e-6)
    dist = actor.distribution(jnp.asarray(obs_batch))
    np.testing.assert_allclose(np.asarray(dist.mean), t_act, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(dist.std) > 0)
    if algo == "iql":
        with torch.no_grad():
            a = torch.from_numpy(np.random.default_rng(2).uniform(-1, 1, (N_OBS, ACT)).astype(np.float32))
            tq, tv = extra["qf"](x, a).numpy(), extra["vf"](x).numpy()
        assert actor.critic is not None
        np.testing.assert_allclose(np.asarray(actor.critic.q(jnp.asarray(obs_batch), jnp.asarray(a.numpy()))), tq,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(actor.critic.v(jnp.asarray(obs_batch))), tv, rtol=1e-5, atol=1e-5)


def test_squashed_distribution_is_delta_method(tmp_path, obs_batch):
    path, tactor, _ = _save_corl(tmp_path, "cql")
    actor = port.from_corl(path, "cql")
    b, d = actor.base(obs_batch), actor.distribution(obs_batch)
    t = np.tanh(np.asarray(b.mean, np.float64))
    want = np.maximum((1 - t * t) * np.asarray(b.std, np.float64), nets.STD_FLOOR)
    np.testing.assert_allclose(np.asarray(d.std), want, rtol=1e-5)


def test_deterministic_actor_uses_configured_std(tmp_path):
    path, _, _ = _save_corl(tmp_path, "td3_bc")
    actor = port.from_corl(path, "td3_bc", det_std=0.25)
    d = actor.distribution(jnp.zeros(OBS))
    np.testing.assert_array_equal(np.asarray(d.std), np.full(ACT, 0.25, np.float32))


# ---------------------------------------------------------------- safety and errors
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"actor": {"net.0.weight": torch.zeros(2, 2)}, "payload": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(port.PortError, match="refused"):
        port.from_corl(path, "td3_bc")
    assert not marker.exists(), "the pickle's code ran"


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    path, tactor, _ = _save_corl(tmp_path, "iql", with_critics=False)
    sd = dict(tactor.state_dict())
    del sd["log_std"]
    torch.save({"actor": sd}, tmp_path / "missing.pt")
    with pytest.raises(port.PortError, match=r"missing keys \['log_std'\]"):
        port.from_corl(tmp_path / "missing.pt", "iql")
    sd = dict(tactor.state_dict(), **{"extra.weight": torch.zeros(1)})
    torch.save({"actor": sd}, tmp_path / "extra.pt")
    with pytest.raises(port.PortError, match=r"unexpected keys .*extra\.weight"):
        port.from_corl(tmp_path / "extra.pt", "iql")
    # the wrong algo for the file: CQL keys read as TD3+BC
    path, _, _ = _save_corl(tmp_path, "cql")
    with pytest.raises(port.PortError, match="missing keys"):
        port.from_corl(path, "td3_bc")


def test_bad_inputs(tmp_path):
    path, _, _ = _save_corl(tmp_path, "td3_bc")
    with pytest.raises(port.PortError, match="unknown algo 'ppo'"):
        port.from_corl(path, "ppo")
    with pytest.raises(port.PortError, match="no such file"):
        port.from_corl(tmp_path / "nope.pt", "td3_bc")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(port.PortError, match="not a readable PyTorch checkpoint"):
        port.from_corl(tmp_path / "trunc.pt", "td3_bc")
    with pytest.raises(port.PortError, match="env 'walker2d' has 17 and 6"):
        port.from_corl(path, "td3_bc", env="walker2d")
    np.savez(tmp_path / "s.npz", mean=np.zeros(5), std=np.ones(5))
    with pytest.raises(port.PortError, match="size 5 but the actor takes 11"):
        port.from_corl(path, "td3_bc", obs_stats=tmp_path / "s.npz")
    np.savez(tmp_path / "neg.npz", mean=np.zeros(OBS), std=-np.ones(OBS))
    with pytest.raises(port.PortError, match=r"std >= 1e-06"):
        port.from_corl(path, "td3_bc", obs_stats=tmp_path / "neg.npz")


# ---------------------------------------------------------------- CLI, checkpoint, rollout
def test_cli_port_writes_a_loadable_checkpoint(tmp_path, obs_batch, stats, capsys):
    from poe_jax.cli import main

    stats_path, mean, std = stats
    path, tactor, _ = _save_corl(tmp_path, "iql")
    out = tmp_path / "ported"
    assert main(["port", "corl", str(path), "--algo", "iql", "--env", "hopper", "--obs-stats", str(stats_path),
                 "--out", str(out)]) == 0
    card = checkpoints.read_card(out)
    assert card["env"] == "hopper" and card["algo"] == "iql" and card["critic"] is not None
    assert card["normalization"]["applied"] and card["provenance"]["source"].startswith("CORL")
    actor = checkpoints.load(out, env="hopper")
    with torch.no_grad():
        t_act = tactor.act(torch.from_numpy((obs_batch - mean) / std)).numpy()
    np.testing.assert_allclose(np.asarray(actor.act(obs_batch)), t_act, rtol=1e-5, atol=1e-5)
    # without stats the card says no normalisation is applied
    out2 = tmp_path / "raw"
    assert main(["port", "corl", str(path), "--algo", "iql", "--env", "hopper", "--out", str(out2)]) == 0
    card2 = checkpoints.read_card(out2)
    assert not card2["normalization"]["applied"] and "raw observations" in card2["normalization"]["note"]
    # an existing output is not overwritten
    capsys.readouterr()
    before = (out2 / "card.json").read_bytes()
    assert main(["port", "corl", str(path), "--algo", "iql", "--env", "hopper", "--out", str(out2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("poe-jax: error: ") and "already exists" in err and "--overwrite" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and (out2 / "card.json").read_bytes() == before
    # an IQL file without its critics ports the actor alone, and says so
    (tmp_path / "bare").mkdir()
    bare, _, _ = _save_corl(tmp_path / "bare", "iql", with_critics=False)
    assert main(["port", "corl", str(bare), "--algo", "iql", "--env", "hopper", "--out", str(tmp_path / "b")]) == 0
    assert "has no IQL critics" in capsys.readouterr().err


def test_ported_actor_runs_under_poe_on_hopper(tmp_path, get_env):
    path, _, _ = _save_corl(tmp_path, "iql")
    actor = port.from_corl(path, "iql", env="hopper")
    env = get_env("hopper", "native")
    alpha = 0.3

    def policy(obs, key):
        a = actor.distribution(obs)
        g = DiagGaussian(jnp.zeros_like(a.mean), jnp.full_like(a.std, 0.5))
        mixed = compose.poe(a, g, alpha)
        return mixed.mean, {"kl": kl(mixed, a)}

    run = jax.jit(lambda k: rollout.rollout(env, policy, k, max_steps=30))
    ep = run(jax.random.split(jax.random.key(0), 4))
    assert ep.length.shape == (4,)
    assert np.all(np.isfinite(np.asarray(ep.return_task)))
    assert np.all(np.asarray(ep.metrics["kl"]) > 0)


def test_non_finite_weights_are_refused(tmp_path):
    """A NaN or inf weight would give NaN actions, which MuJoCo turns into plausible returns: refused at the door."""
    path, tactor, _ = _save_corl(tmp_path, "td3_bc")
    sd = {k: v.clone() for k, v in tactor.state_dict().items()}
    key = sorted(sd)[0]
    sd[key].view(-1)[3] = float("nan")
    torch.save({"actor": sd}, tmp_path / "nan.pt")
    with pytest.raises(port.PortError, match=rf"tensor '{re.escape(key)}' has 1 non-finite values"):
        port.port_corl(tmp_path / "nan.pt", "td3_bc", "hopper", tmp_path / "out")
    assert not (tmp_path / "out").exists()
