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
    assert "G3_target(target_speed=2.0)" in out  # halfcheetah's default target


def test_data_generate_passes_the_medium_rule_to_the_datasets_phase(tmp_path, monkeypatch):
    from poe_jax.data import generate

    seen = []
    monkeypatch.setattr(generate, "datasets", lambda env, out, **kw: seen.append((env, kw)))
    base = ["data", "generate", "--env", "hopper", "--out", str(tmp_path), "--phase", "datasets"]
    assert main(base) == 0
    assert main(base + ["--medium-fraction", "0.33"]) == 0
    assert seen[0][1].get("medium_fraction", generate.MEDIUM_FRACTION) == 0.5
    assert seen[1][1]["medium_fraction"] == 0.33
