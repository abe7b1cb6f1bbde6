"""The CLI's commands run and print what a user expects."""

from poe_jax.cli import main


def test_demo_runs(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "poe" in out and "kl_reg" in out and "additive" in out and "kl_budget" in out


def test_rules_lists_registry(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for name in ("frozen", "prior_only", "additive", "poe", "kl_reg", "poe_adaptive", "iql_guided", "critic_greedy",
                 "critic_prior"):
        assert name in out
    assert "critic_prior   alpha in [0.0, 1.0]  (needs the actor's critic)" in out


def test_envs_lists_sizes_and_goals(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "hopper" in out and " 11 " in out and "111" in out
    assert "G3_target(target_speed=3.0, width=1.0)" in out  # halfcheetah's default target and width


def test_data_generate_passes_the_medium_rule_to_the_datasets_phase(tmp_path, monkeypatch):
    from poe_jax.data import generate

    seen = []
    for phase in ("datasets", "probe_states"):
        monkeypatch.setattr(generate, phase, lambda env, out, phase=phase, **kw: seen.append((phase, kw)))
    for phase in ("datasets", "probe"):  # the probe states come from the same medium policy
        base = ["data", "generate", "--env", "hopper", "--out", str(tmp_path), "--phase", phase]
        assert main(base) == 0
        assert main(base + ["--medium-fraction", "0.33"]) == 0
    assert [p for p, _ in seen] == ["datasets", "datasets", "probe_states", "probe_states"]
    assert [kw.get("medium_fraction", generate.MEDIUM_FRACTION) for _, kw in seen] == [0.5, 0.33, 0.5, 0.33]
