"""The CLI's commands run and print what a user expects."""

import pytest

from poe_jax.cli import main


def test_demo_covers_every_rule_with_its_coefficient_named_and_no_nan(capsys):
    from poe_jax.kernels import rules

    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("trained ", "random "))]
    for name, rule in rules.RULES.items():
        mine = [r for r in rows if r[1] == name]
        assert mine, name
        for r in mine:
            assert r[2] == "-" if rule.param is None else r[2].startswith(f"{rule.param}=")
    assert "nan" not in out.lower() and "inf " not in out
    # kl_reg's mean is poe's at alpha = beta / (1 + beta): beta = 1 moves the mean as far as alpha = 0.5
    shift = {(r[0], r[1], r[2]): r[-1] for r in rows}
    assert shift[("trained", "kl_reg", "beta=1")] == shift[("trained", "poe", "alpha=0.5")]
    assert any(r[1] == "poe|kl_budget=0.5" and r[2].startswith("alpha=") for r in rows)  # the selector's choice


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


def _actions(parser, path=("poe-jax",)):
    import argparse

    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _actions(sub, (*path, name))
        elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            yield path, a


def test_every_option_has_help_and_states_its_default_once():
    from poe_jax import cli

    parser = cli._build_parser()
    seen = 0
    for path, action in _actions(parser):
        seen += 1
        assert action.help, f"{' '.join(path)} {action.option_strings or action.dest}: no help"
    assert seen > 60
    import argparse

    def helps(p):
        yield p.format_help()
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    yield from helps(sub)
    for text in helps(parser):
        flat = " ".join(text.split())
        assert "(default: None)" not in flat and "default: default" not in flat.lower()
        for chunk in flat.split(" -"):
            assert chunk.lower().count("default") <= 1, chunk
    usage = cli._build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "required, except with --list-presets" in " ".join(usage.split())


def test_version(capsys):
    from poe_jax import __version__, cli

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"poe-jax {__version__}"


def test_set_overrides_a_field_of_every_preset():
    from poe_jax import cli, grid

    fields = cli._fields(["seeds=[7]", "episodes=1", "rules.poe=[0.3]", "name=x"])
    assert fields == {"seeds": [7], "episodes": 1, "rules": {"poe": [0.3]}, "name": "x"}
    for name in grid.preset_names():
        specs = grid.load_specs(f"preset:{name}", **cli._fields(["seeds=[7]", "episodes=1", "rules.poe=[0.3]"]))
        for s in specs:
            assert s.seeds == (7,) and s.episodes == 1 and s.rules["poe"] == [0.3]
            assert "frozen" in s.rules  # a table is merged entry by entry, not replaced
    with pytest.raises(grid.SpecError, match="seeds: expected a list of integers"):
        grid.load_specs("preset:smoke", **cli._fields(["seeds=zero"]))
    with pytest.raises(cli.UsageError, match="expected KEY=VALUE"):
        cli._fields(["seeds"])


def test_list_presets_prints_sizes_and_measured_times(capsys):
    from poe_jax import cli, grid

    assert cli.main(["run", "--list-presets"]) == 0
    text = capsys.readouterr().out
    for name in grid.preset_names():
        (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
        assert line.split()[1].isdigit() and line.split()[2].replace(",", "").isdigit()
    assert "47-78 s end to end on a 2-core CPU" in text and "not measured" in text


def test_several_process_flags_go_together(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["run", "--preset", "smoke", "--out", out, "--coordinator", "localhost:1"]) == 2
    assert "--coordinator, --num-processes and --process-id go together" in capsys.readouterr().err
    assert main(["run", "--preset", "smoke", "--out", out, "--coordinator", "localhost:1", "--num-processes", "2",
                 "--process-id", "2"]) == 2
    assert "--process-id must be in 0..1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything is written
