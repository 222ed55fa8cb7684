"""Submissions are validated: a clean one is accepted once; tampered, stale or foreign ones are refused."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import circuitbench
from circuitbench.cli import main
from circuitbench.errors import CircuitbenchError
from circuitbench.leaderboard.submit import accept, validate
from circuitbench.runs.runner import RunConfig, run


@pytest.fixture(scope="module")
def submission(tmp_path_factory):
    root = tmp_path_factory.mktemp("sub")
    adapter = circuitbench.load_model("tiny-sparse", device="cpu")
    run(RunConfig(model="tiny-sparse", tasks=["else_elif", "while_return_true"], method_kwargs={"steps": 5},
                  ablation="zero", min_accuracy=0.0, control=False, out=root / "results", show_progress=False,
                  search_examples=64), adapter)
    meta = {"submission_format": "1",
            "model": {"name": "tiny-sparse", "weights_sha256": adapter.provenance["weights_sha256"]},
            "validation": {"loss": 4.0, "corpus": "pypi"}, "method": {"name": "learned_mask"},
            "submitter": "test", "description": "<b>bundled</b> model"}
    (root / "submission.json").write_text(json.dumps(meta))
    return root


def _copy(submission, tmp_path):
    shutil.copytree(submission, tmp_path / "s")
    return tmp_path / "s" / "results", tmp_path / "s" / "submission.json"


def test_a_clean_submission_is_accepted_once(submission, tmp_path):
    results, meta = _copy(submission, tmp_path)
    assert validate(results, meta).ok
    dest = accept(results, meta, tmp_path / "board")
    assert (dest / "results").is_dir() and (dest / "submission.json").is_file()
    with pytest.raises(CircuitbenchError, match="duplicate of accepted submission"):
        accept(results, meta, tmp_path / "board")


def test_a_hand_edited_edge_count_is_caught_naming_the_file(submission, tmp_path):
    results, meta = _copy(submission, tmp_path)
    unit = next(p for p in results.glob("*/else_elif.*.seed0.parquet"))
    table = pq.read_table(unit)
    md = dict(table.schema.metadata)
    summary = json.loads(md[b"circuitbench.summary"])
    summary["edges"] = (summary["edges"] or 0) + 1
    md[b"circuitbench.summary"] = json.dumps(summary).encode()
    pq.write_table(table.replace_schema_metadata(md), unit)
    report = validate(results, meta)
    assert not report.ok and any(str(unit) in p and "edges" in p for p in report.problems), report.problems


def test_a_stale_task_hash_and_a_foreign_model_are_refused(submission, tmp_path):
    results, meta = _copy(submission, tmp_path)
    unit = next(p for p in results.glob("*/while_return_true.*.seed0.parquet"))
    table = pq.read_table(unit)
    md = dict(table.schema.metadata)
    prov = json.loads(md[b"circuitbench.provenance"])
    prov["unit"]["task_hash"] = "0" * 16
    md[b"circuitbench.provenance"] = json.dumps(prov).encode()
    pq.write_table(table.replace_schema_metadata(md), unit)
    m = json.loads(meta.read_text())
    m["model"]["weights_sha256"] = "f" * 64
    meta.write_text(json.dumps(m))
    problems = validate(results, meta).problems
    assert any("task_hash" in p and "stale" in p for p in problems)
    assert any("weights_sha256" in p for p in problems)


def test_bad_metadata_lists_every_field(submission, tmp_path, capsys):
    results, meta = _copy(submission, tmp_path)
    meta.write_text(json.dumps({"submission_format": "1", "model": {"name": "x"}}))
    assert main(["submit", str(results), "--meta", str(meta), "--check"]) == 1
    err = capsys.readouterr().err
    assert "model.weights_sha256" in err and "method" in err and "submitter" in err


def test_verify_reevaluates_a_sample_and_catches_a_number_edited_consistently(submission, tmp_path, capsys):
    results, meta = _copy(submission, tmp_path)
    report = validate(results, meta, verify=True)
    assert report.ok and report.verified == 2, report.problems
    unit = next(p for p in results.glob("*/else_elif.*.seed0.parquet"))
    table = pq.read_table(unit)
    md = dict(table.schema.metadata)
    summary = json.loads(md[b"circuitbench.summary"])
    summary["sufficiency_loss"] = 0.001  # edited in the summary and in the measurement, so they agree
    md[b"circuitbench.summary"] = json.dumps(summary).encode()
    rows = table.to_pylist()
    for r in rows:
        if r["metric"] == "sufficiency_loss" and r["split"] == "test":
            r["value"] = 0.001
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema).replace_schema_metadata(md), unit)
    assert validate(results, meta).ok  # the bookkeeping alone cannot see it
    problems = validate(results, meta, verify=True).problems
    assert any(str(unit) in p and "sufficiency_loss re-evaluates" in p for p in problems), problems
    assert main(["submit", str(results), "--meta", str(meta), "--check", "--verify"]) == 1
    assert "sufficiency_loss re-evaluates" in capsys.readouterr().err
