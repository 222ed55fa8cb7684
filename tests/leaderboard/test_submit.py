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

pytestmark = pytest.mark.slow  # every test here reads an end-to-end pruning run (`-m "not slow"` skips them)

TASKS = ["if_equals", "while_return_true"]
PROTOCOL = {"tasks": TASKS, "ablation": "zero", "search_examples": 64}
"""A small board's protocol (BOARD/protocol.json): two tasks the reference model solves, cheap settings."""


@pytest.fixture(scope="module")
def submission(tmp_path_factory):
    root = tmp_path_factory.mktemp("sub")
    adapter = circuitbench.load_model("tiny-sparse", device="cpu")
    run(RunConfig(model="tiny-sparse", tasks=TASKS, method_kwargs={"steps": 5}, ablation="zero",
                  out=root / "results", show_progress=False, search_examples=64), adapter)
    (root / "board").mkdir()
    (root / "board" / "protocol.json").write_text(json.dumps(PROTOCOL))
    meta = {"submission_format": "1",
            "model": {"name": "tiny-sparse", "weights_sha256": adapter.provenance["weights_sha256"]},
            "validation": {"loss": 4.0, "corpus": "pypi"}, "method": {"name": "learned_mask"},
            "submitter": "test", "description": "<b>bundled</b> model"}
    (root / "submission.json").write_text(json.dumps(meta))
    return root


def _copy(submission, tmp_path):
    shutil.copytree(submission, tmp_path / "s")
    return tmp_path / "s" / "results", tmp_path / "s" / "submission.json"


BOARD = "board"


def _board(tmp_path):
    return tmp_path / "s" / BOARD


def _edit(unit, summary=None, provenance=None):
    """Rewrite a unit file's summary and/or provenance in place, as a hand edit would."""
    table = pq.read_table(unit)
    md = dict(table.schema.metadata)
    for key, change in ((b"circuitbench.summary", summary), (b"circuitbench.provenance", provenance)):
        if change is not None:
            value = json.loads(md[key])
            change(value)
            md[key] = json.dumps(value).encode()
    pq.write_table(table.replace_schema_metadata(md), unit)


def test_a_clean_submission_is_accepted_once(submission, tmp_path):
    results, meta = _copy(submission, tmp_path)
    assert validate(results, meta, _board(tmp_path)).ok
    dest = accept(results, meta, _board(tmp_path))
    assert (dest / "results").is_dir() and (dest / "submission.json").is_file()
    with pytest.raises(CircuitbenchError, match="duplicate of accepted submission"):
        accept(results, meta, _board(tmp_path))
    # the same results described again (re-indented, another description) are the same submission
    m = json.loads(meta.read_text())
    m["description"] = "the same results, said again"
    meta.write_text(json.dumps(m, indent=4, sort_keys=True))
    with pytest.raises(CircuitbenchError, match="duplicate of accepted submission"):
        accept(results, meta, _board(tmp_path))


def test_a_hand_edited_edge_count_is_caught_naming_the_file(submission, tmp_path):
    results, meta = _copy(submission, tmp_path)
    unit = next(p for p in results.glob("*/if_equals.*.seed0.parquet"))
    _edit(unit, summary=lambda s: s.update(edges=(s["edges"] or 0) + 1))
    report = validate(results, meta, _board(tmp_path))
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
    problems = validate(results, meta, _board(tmp_path)).problems
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
    board = _board(tmp_path)
    report = validate(results, meta, board, verify=True)
    assert report.ok and report.verified == 2, report.problems
    unit = next(p for p in results.glob("*/if_equals.*.seed0.parquet"))
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
    assert validate(results, meta, board).ok  # the bookkeeping alone cannot see it
    problems = validate(results, meta, board, verify=True).problems
    assert any(str(unit) in p and "sufficiency_loss re-evaluates" in p for p in problems), problems
    assert main(["submit", str(results), "--meta", str(meta), "--board", str(board), "--check", "--verify"]) == 1
    assert "sufficiency_loss re-evaluates" in capsys.readouterr().err


def test_verify_draws_its_sample_at_random_seeded_and_says_which(submission, tmp_path, capsys):
    from circuitbench.leaderboard.submit import Report, SubmissionMeta, verify_sample

    results, meta_path = _copy(submission, tmp_path)
    meta = SubmissionMeta.model_validate_json(meta_path.read_text())
    units = sorted(p for p in results.glob("*/*.seed0.parquet") if not p.name.endswith(".edges.parquet"))
    drawn = {}
    for seed in range(6):  # one circuit per draw: every pruned unit can be drawn, not the first by name only
        report = Report()
        verify_sample(units, meta, report, sample=1, seed=seed)
        assert report.ok and report.verify_seed == seed and len(report.verified_units) == 1
        drawn[seed] = report.verified_units[0]
    assert len(set(drawn.values())) >= 2
    again = Report()
    verify_sample(units, meta, again, sample=1, seed=3)
    assert again.verified_units == [drawn[3]]  # the same seed, the same draw
    argv = ["submit", str(results), "--meta", str(meta_path), "--board", str(_board(tmp_path)), "--check"]
    assert main([*argv, "--verify", "--verify-seed", "7"]) == 0
    assert "drawn with --verify-seed 7: " in capsys.readouterr().out
    assert main([*argv, "--verify-seed", "7"]) == 1
    assert "add --verify" in capsys.readouterr().err


# --- the board's protocol, enforced ------------------------------------------------------------------------


def test_units_made_with_gamed_settings_are_refused_naming_each_difference(submission, tmp_path, capsys):
    results, meta = _copy(submission, tmp_path)
    for unit in results.glob("*/*.seed0.parquet"):
        if not unit.name.endswith(".edges.parquet"):
            _edit(unit, provenance=lambda p: p["unit"].update(target_loss=100.0, min_accuracy=0.0))
    assert main(["submit", str(results), "--meta", str(meta), "--board", str(_board(tmp_path)), "--check"]) == 1
    err = capsys.readouterr().err
    assert "target_loss = 100.0 (the board's protocol: 0.15)" in err and "min_accuracy = 0.0" in err, err
    assert "Traceback" not in err


def test_every_board_task_is_in_the_denominator(submission, tmp_path):
    results, meta = _copy(submission, tmp_path)
    for f in results.glob("*/if_equals.*"):
        f.unlink()
    problems = validate(results, meta, _board(tmp_path)).problems
    assert any("no unit for 1 of the 2 board tasks (if_equals)" in p for p in problems), problems
    # the official board's denominator is every bundled task
    problems = validate(results, meta).problems
    assert any("no unit for 19 of the 20 board tasks" in p for p in problems), problems


def test_an_edited_cpr_is_refused(submission, tmp_path):
    results, meta = _copy(submission, tmp_path)
    unit = next(p for p in results.glob("*/while_return_true.*.seed0.parquet"))
    _edit(unit, summary=lambda s: s.update(cpr=2.957))
    problems = validate(results, meta, _board(tmp_path)).problems
    assert any(str(unit) in p and "summary cpr = 2.957 does not follow" in p for p in problems), problems


@pytest.mark.parametrize("loss", ["NaN", "Infinity", "-5", "0"])
def test_a_validation_loss_that_is_not_finite_and_positive_is_refused(submission, tmp_path, loss, capsys):
    results, meta = _copy(submission, tmp_path)
    meta.write_text(meta.read_text().replace('"loss": 4.0', f'"loss": {loss}'))
    assert main(["submit", str(results), "--meta", str(meta), "--board", str(_board(tmp_path)), "--check"]) == 1
    err = capsys.readouterr().err
    assert "validation.loss" in err and len(err.strip().splitlines()) == 1, err


def test_a_loss_measured_by_circuitbench_must_be_of_the_submitted_weights(submission, tmp_path):
    results, meta = _copy(submission, tmp_path)
    m = json.loads(meta.read_text())
    m["validation"] = {"loss": 3.8, "measured_by": "circuitbench", "weights_sha256": "0" * 64}
    meta.write_text(json.dumps(m))
    problems = validate(results, meta, _board(tmp_path)).problems
    assert any("validation.weights_sha256" in p for p in problems), problems
    m["validation"]["weights_sha256"] = m["model"]["weights_sha256"]
    meta.write_text(json.dumps(m))
    assert validate(results, meta, _board(tmp_path)).ok


def test_a_custom_spec_unit_is_refused_naming_the_board_tasks(submission, tmp_path):
    results, meta = _copy(submission, tmp_path)
    unit = next(p for p in results.glob("*/while_return_true.*.seed0.parquet"))
    _edit(unit, provenance=lambda p: p["unit"].update(task="my_while_return_true"))
    problems = validate(results, meta, _board(tmp_path)).problems
    assert any("'my_while_return_true' is not one of the board's tasks" in p and "if_equals, while_return_true" in p
               for p in problems), problems


def test_a_board_protocol_whose_labels_would_be_untrue_is_refused(submission, tmp_path):
    from circuitbench.leaderboard.protocol import Protocol, load_protocol

    results, meta = _copy(submission, tmp_path)
    for bad in ({"target_loss": 0.7}, {"min_accuracy": 0.5}, {"tasks": ["no_such_task"]},
                {"tasks": ["if_equals", "while_return_true", "if_equals"]}):  # a task twice: "2 / 3" on 2 tasks
        (_board(tmp_path) / "protocol.json").write_text(json.dumps(bad))
        with pytest.raises(CircuitbenchError, match="protocol.json: not a valid board protocol"):
            load_protocol(_board(tmp_path))
        if "tasks" in bad and len(bad["tasks"]) > 1:
            with pytest.raises(CircuitbenchError, match="tasks listed more than once: if_equals"):
                load_protocol(_board(tmp_path))
        assert any("not a valid board protocol" in p for p in validate(results, meta, _board(tmp_path)).problems)
    official = Protocol()
    assert official.board_tasks() == sorted(official.board_tasks()) and len(official.board_tasks()) == 20
    assert "target loss 0.15" in official.text() and "control on" in official.text()


def test_the_board_shows_numbers_recomputed_from_the_measurements_not_the_summary(submission, tmp_path):
    from circuitbench.leaderboard.site import build, load_board

    results, meta = _copy(submission, tmp_path)
    dest = accept(results, meta, _board(tmp_path))
    unit = next(p for p in (dest / "results").glob("*/while_return_true.*.seed0.parquet"))
    true = next(u for u in load_board(_board(tmp_path))[0].units if u.summary["task"] == "while_return_true")
    _edit(unit, summary=lambda s: s.update(cpr=9.999, nodes=1, edges=1, status="solved"))  # edited after acceptance
    shown = next(u for u in load_board(_board(tmp_path))[0].units if u.summary["task"] == "while_return_true")
    assert shown.summary == true.summary and shown.summary["cpr"] != 9.999 and shown.summary["nodes"] > 1
    site = build(_board(tmp_path))
    assert "9.999" not in (site / "index.html").read_text()


@pytest.fixture(scope="module")
def two_seeds(submission, tmp_path_factory):
    """The same submission with seed 1 added for every task."""
    root = tmp_path_factory.mktemp("seeds")
    shutil.copytree(submission, root / "s")
    adapter = circuitbench.load_model("tiny-sparse", device="cpu")
    run(RunConfig(model="tiny-sparse", tasks=TASKS, method_kwargs={"steps": 5}, ablation="zero", seed=1,
                  out=root / "s" / "results", show_progress=False, search_examples=64), adapter)
    return root / "s"


def test_several_seeds_are_accepted_and_the_board_shows_their_spread(two_seeds, tmp_path):
    from circuitbench.leaderboard.site import build, load_board

    shutil.copytree(two_seeds, tmp_path / "s")
    results, meta, board = tmp_path / "s" / "results", tmp_path / "s" / "submission.json", tmp_path / "s" / BOARD
    assert validate(results, meta, board).problems == []
    accept(results, meta, board)
    (entry,) = load_board(board)
    assert entry.seeds == [0, 1] and {u.summary["seed"] for u in entry.units} == {0}  # headline: the first seed
    assert len(entry.seed_units) == 2 * len(TASKS)
    site = build(board, explore=False)
    index = (site / "index.html").read_text()
    mean, sd = entry.spread("nodes")
    assert f"{mean:.1f} &plusmn; {sd:.1f} over 2 seeds" in index
    page = (site / "submissions" / f"{entry.content_hash}.html").read_text()
    assert "Over seeds 0, 1" in page and "node overlap" in page and page.count("<td>if_equals</td>") == 1


def test_seeds_that_differ_between_tasks_are_refused(two_seeds, tmp_path):
    shutil.copytree(two_seeds, tmp_path / "s")
    results = tmp_path / "s" / "results"
    for f in results.glob("*/if_equals.*.seed1.*"):  # seed 1 kept only where it suits
        f.unlink()
    problems = validate(results, tmp_path / "s" / "submission.json", tmp_path / "s" / BOARD).problems
    assert any("different seeds (seeds 0: 1 task(s); seeds 0, 1: 1 task(s)" in p for p in problems), problems
