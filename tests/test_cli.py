import json

import pytest

from circuitbench.cli import main
from tests.models.conftest import FIXTURE_MODEL


def test_inspect_prints_shapes_counts_and_sparsity(capsys):
    assert main(["inspect", str(FIXTURE_MODEL)]) == 0
    out = capsys.readouterr().out
    assert "AbsTopK afrac=0.25" in out and "attention sink" in out
    assert "transformer.h.0.attn.c_attn.weight" in out and "192x64" in out and "0.0500" in out


def test_inspect_json_reports_nonzero_counts(capsys):
    assert main(["inspect", str(FIXTURE_MODEL), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    row = next(r for r in data["weights"] if r["tensor"] == "transformer.h.0.mlp.c_fc.weight")
    assert row["params"] == 256 * 64 and row["nonzero"] == 819


def test_user_error_exits_1_with_one_line_and_no_traceback(capsys):
    assert main(["inspect", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("circuitbench: error: no-such-model") and "Traceback" not in err


@pytest.mark.parametrize("command", [["run"], ["compare"], ["sweep"], ["tasks", "encode"], ["leaderboard", "build"],
                                     ["submit"], ["export", "lm-eval"]])
def test_help_shows_every_default_and_choice(command, capsys):
    from circuitbench.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--help"])
    text = "".join(capsys.readouterr().out.split())  # no whitespace: help lines wrap anywhere
    sub = parser._subparsers._group_actions[0].choices[command[0]]
    for name in command[1:]:
        sub = sub._subparsers._group_actions[0].choices[name]
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False, "==SUPPRESS==") and action.dest != "help":
            shown = ",".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default)
            shown = "".join(shown.split())
            assert f"default:{shown}" in text or f"default{shown}" in text, (action.option_strings, shown)
        if action.choices and action.option_strings:
            assert "{" + ",".join(action.choices) + "}" in text


def test_the_unit_settings_flags_are_built_from_the_one_declaration():
    """`run` and `compare` take every `UnitSettings` field as a flag with its declared default; a sweep file and
    a board's protocol take the same fields with the same defaults."""
    from circuitbench.cli import build_parser
    from circuitbench.cli.common import setting_values
    from circuitbench.leaderboard.protocol import Protocol
    from circuitbench.results.unit import Unit, UnitSettings
    from circuitbench.runs.config import RunConfig
    from circuitbench.runs.sweep import SweepSpec

    defaults = UnitSettings().settings()
    parser = build_parser()
    for command in ("run", "compare"):
        assert setting_values(parser.parse_args([command]), UnitSettings) == defaults
    args = parser.parse_args(["run", "--no-control", "--search-examples", "64", "--ablation", "zero", "--calibrate"])
    assert setting_values(args, UnitSettings) == {**defaults, "control": False, "search_examples": 64,
                                                  "ablation": "zero", "calibrate": True}
    for model in (RunConfig, SweepSpec, Protocol, Unit):
        assert issubclass(model, UnitSettings)
    assert RunConfig().settings() == Protocol().settings() == SweepSpec(models=["m"]).settings() == defaults
