import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from circuitbench.errors import TaskError
from circuitbench.tasks.export import (
    EXPORT_COLUMNS,
    export_examples,
    format_pair,
    load_specs,
    summary_rows,
)
from circuitbench.tasks.load import get_task, list_specs
from circuitbench.tasks.pairs import make_pairs


def test_jsonl_export_has_one_row_per_example_and_is_byte_identical(tmp_path: Path) -> None:
    specs = load_specs(["var_swap", "with_as:inverted"])
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    n = export_examples(a, "jsonl", specs)
    assert export_examples(b, "jsonl", specs) == n == 2 * 2 * (512 + 128)
    assert a.read_bytes() == b.read_bytes()
    rows = [json.loads(line) for line in a.read_text(encoding="utf-8").splitlines()]
    assert tuple(rows[0]) == EXPORT_COLUMNS
    first = rows[0]
    pair = make_pairs(get_task("var_swap"), "train")[0]
    assert first["task"] == "var_swap" and first["split"] == "train" and first["pair_id"] == 0
    assert (first["prompt"], first["correct"], first["incorrect"]) == (pair.prompts[0], *pair.answers)
    assert first["task_hash"] == get_task("var_swap").task_hash
    assert {r["task"] for r in rows} == {"var_swap", "with_as:inverted"}


def test_parquet_export_matches_jsonl(tmp_path: Path) -> None:
    specs = load_specs(["else_elif"])
    export_examples(tmp_path / "x.jsonl", "jsonl", specs, splits=["test"])
    export_examples(tmp_path / "x.parquet", "parquet", specs, splits=["test"])
    export_examples(tmp_path / "y.parquet", "parquet", specs, splits=["test"])
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.column_names == list(EXPORT_COLUMNS)
    assert table.equals(pq.read_table(tmp_path / "y.parquet"))
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert table.to_pylist() == rows


def test_export_leaves_no_partial_file_on_error(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="unknown export format 'csv'"):
        export_examples(tmp_path / "x.csv", "csv", load_specs(["var_if"]))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_summary_lists_every_task() -> None:
    rows = summary_rows(list_specs())
    assert len(rows) == 20
    assert set(rows[0]) == {"name", "probes", "provenance", "train", "test", "check", "task_hash"}
    assert all(r["train"] >= 512 and r["test"] >= 128 for r in rows)


def test_format_pair_marks_the_decision_point() -> None:
    pair = make_pairs(get_task("if_ternary"), "test")[0]
    text = format_pair(pair)
    assert pair.prompts[0] + "\u2588" in text and pair.prompts[1] + "\u2588" in text
    assert f"side 0: correct {pair.answers[0]!r}, incorrect {pair.answers[1]!r}" in text


def test_exports_are_readable_by_the_group_like_every_result_file(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        path = tmp_path / "tasks.jsonl"
        export_examples(path, "jsonl", load_specs(["var_swap"]), ["test"])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o664  # not mkstemp's private 0600
