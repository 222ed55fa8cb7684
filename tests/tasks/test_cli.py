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


def _user_spec(tmp_path: Path, name: str = "my_else_elif") -> Path:
    """A user's own spec file: a bundled spec under another name."""
    import yaml

    data = yaml.safe_load((specs_dir() / "else_elif.yaml").read_text())
    data["name"] = name
    path = tmp_path / "specs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_spec_file_works_wherever_tasks_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--tasks path/to/spec.yaml` for run, tasks show/encode and export lm-eval, in the same form everywhere."""
    spec = _user_spec(tmp_path)
    assert main(["tasks", "show", str(spec), "-n", "1"]) == 0
    assert "--- my_else_elif [test] pair" in capsys.readouterr().out
    tok = str(specs_dir().parent / "baselines" / "models" / "tiny-sparse" / "tokenizer.json")
    if not Path(tok).is_file():  # installed wheel: the bundled models sit beside task_specs as package data
        from circuitbench.models.hub import bundled_models

        tok = str(bundled_models()["tiny-sparse"] / "tokenizer.json")
    assert main(["tasks", "encode", "--tokenizer", tok, "--tasks", f"{spec},var_if", "--format", "json"]) == 0
    assert [r["task"] for r in json.loads(capsys.readouterr().out)] == ["my_else_elif", "var_if"]
    out = tmp_path / "lm"
    assert main(["export", "lm-eval", "--out", str(out), "--tokenizer", tok, "--tasks", str(spec),
                 "--format", "json"]) == 0
    assert (out / "circuitbench_my_else_elif.yaml").is_file() or any("my_else_elif" in p.name for p in out.iterdir())
    capsys.readouterr()
    res = tmp_path / "results"
    assert main(["run", "--model", "tiny-sparse", "--tasks", str(spec), "--method", "random", "--ablation", "zero",
                 "--min-accuracy", "0", "--no-control", "--device", "cpu", "--search-examples", "64", "--quiet",
                 "--out", str(res)]) == 0
    assert (res / "tiny-sparse" / "my_else_elif.random.seed0.parquet").is_file()
    assert main(["run", "--model", "tiny-sparse", "--tasks", f"{spec}:inverted", "--method", "random", "--ablation",
                 "zero", "--min-accuracy", "0", "--no-control", "--device", "cpu", "--search-examples", "64",
                 "--quiet", "--out", str(res)]) == 0
    assert (res / "tiny-sparse" / "my_else_elif__inverted.random.seed0.parquet").is_file()
    # The unit records its spec: it re-evaluates in a later session, with the spec file gone.
    from circuitbench.tasks import load

    load._USER_SPECS.clear()
    spec.unlink()
    capsys.readouterr()
    unit = res / "tiny-sparse" / "my_else_elif.random.seed0.parquet"
    assert main(["circuit", "eval", str(unit), "--format", "json"]) == 0
    assert all(r["equal"] for r in json.loads(capsys.readouterr().out))


def test_a_bundled_spec_given_by_its_own_path_is_the_bundled_task() -> None:
    from circuitbench.tasks.load import use_task

    assert use_task(str(specs_dir() / "if_equals.yaml")) == "if_equals"
    assert use_task(str(specs_dir() / "if_equals.yaml") + ":inverted") == "if_equals:inverted"


def test_a_truncation_that_erases_the_contrast_names_the_task_and_the_fix() -> None:
    from circuitbench.errors import TaskError
    from circuitbench.models.hub import bundled_models
    from circuitbench.models.tokenizer import load_tokenizer
    from circuitbench.tasks.encode import encode_task
    from circuitbench.tasks.load import get_task

    tok = load_tokenizer(bundled_models()["tiny-sparse"], 2048)
    # a spec whose own max_tokens is too short: the quote that decides it sits before its last 2 tokens
    spec = get_task("single_double_quote").model_copy(update={"max_tokens": 2})
    with pytest.raises(TaskError, match="single_double_quote \\[test\\]: left-truncating the prompts to 2 tokens "
                                        "makes the two members of every pair identical.*raise the spec's max_tokens"):
        encode_task(spec, tok, "test")
    assert encode_task(get_task("single_double_quote"), tok, "test").n == 256  # its real max_tokens keeps it


def test_a_spec_file_named_like_a_bundled_task_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    spec = _user_spec(tmp_path, "else_elif")
    assert main(["tasks", "show", str(spec), "-n", "1"]) == 0  # an unchanged copy is the bundled task itself
    capsys.readouterr()
    data = yaml.safe_load(spec.read_text())
    data["test"]["n_pairs"] = 7  # another task under a bundled name
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["tasks", "show", str(spec)]) == 1
    err = capsys.readouterr().err
    assert str(spec) in err and "like a bundled task" in err and len(err.strip().splitlines()) == 1


def test_tasks_take_commas_or_spaces_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "check", "--tasks", "var_if,lambda_func", "--format", "json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["tasks", "check", "--tasks", "var_if", "lambda_func", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == a and len(a) == 2


def test_export_into_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "export", "--format", "jsonl", "--out", f"{tmp_path / 'dir'}/", "--tasks", "var_if"]) == 0
    assert (tmp_path / "dir" / "tasks.jsonl").is_file()
    (tmp_path / "existing").mkdir()
    assert main(["tasks", "export", "--format", "parquet", "--out", str(tmp_path / "existing"), "--tasks",
                 "var_if"]) == 0
    assert (tmp_path / "existing" / "tasks.parquet").is_file()
