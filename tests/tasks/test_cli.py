import json
from pathlib import Path

import pytest

from circuitbench.cli import main
from circuitbench.models.tokenizer import HFTokenizer
from circuitbench.tasks.load import TASK_NAMES, specs_dir


def test_tasks_list_shows_all_twenty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    for name in TASK_NAMES:
        assert name in out
    assert "reconstructed" in out and "confirmed" in out and "exec" in out
    assert main(["tasks", "list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(TASK_NAMES)


def test_tasks_show_prints_readable_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "show", "set_or_string", "--split", "train", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- set_or_string [train] pair") == 2
    assert "side 0: correct '.add(" in out and "side 1: correct ' += " in out


def test_unknown_task_exits_1_with_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "show", "lambda_fun"]) == 1
    err = capsys.readouterr().err
    assert "unknown task 'lambda_fun'. Did you mean 'lambda_func'?" in err and "Traceback" not in err


def test_export_twice_gives_identical_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        args = ["tasks", "export", "--format", "jsonl", "--out", str(tmp_path / f"{name}.jsonl")]
        assert main(args) == 0
    assert "25600 examples" in capsys.readouterr().out  # 20 tasks x (512 + 128) pairs x 2 sides
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    args = ["tasks", "export", "--format", "parquet", "--out", str(tmp_path / "c.parquet")]
    assert main([*args, "--tasks", "var_if", "var_if:inverted", "--splits", "test"]) == 0
    assert "512 examples" in capsys.readouterr().out


def test_encode_reports_kept_and_dropped(
    tmp_path: Path, python_bpe: HFTokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokenizer.json"
    python_bpe._tok.save(str(path))
    args = ["tasks", "encode", "--tokenizer", str(path), "--tasks", "bracket_counting", "var_swap"]
    assert main([*args, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in rows] == ["bracket_counting", "var_swap"]
    assert all(r["kept_fraction"] >= 0.9 and r["examples"] == 256 for r in rows)
    assert main(["tasks", "encode", "--tokenizer", str(tmp_path / "nope.json")]) == 1
    assert "no such tokenizer" in capsys.readouterr().err


def test_check_runs_the_validity_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "check", "--tasks", "final_kwarg", "var_if", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["task"], r["check"], r["failures"]) for r in rows] == [
        ("final_kwarg", "compile", 0),
        ("var_if", "exec", 0),
    ]


def test_schema_prints_the_committed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "schema"]) == 0
    assert capsys.readouterr().out == (specs_dir() / "schema.json").read_text(encoding="utf-8")
