"""A unit's status: one rule (`circuitbench.results.status`), true on the held-out test pairs, used everywhere."""

import math
from pathlib import Path

import pytest

from circuitbench.results.status import (
    HELD_OUT_TOLERANCE,
    circuit_status,
    effective_target,
    status_from_measurements,
)
from circuitbench.results.store import read_unit

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "baselines" / "results" / "tiny-sparse"


def _table(path):
    table, summary, prov = read_unit(path)
    return {(r["split"], r["metric"]): r["value"] for r in table.to_pylist()}, summary, prov.unit


def test_the_rule_on_numbers():
    assert effective_target(0.15, 0.05) == 0.15 and effective_target(0.15, 0.4) == 0.4
    assert circuit_status(False, 0.01, 0.15) == "target_missed"  # the search decides first; the test split never
    assert circuit_status(True, 0.15, 0.15) == "solved"
    assert circuit_status(True, HELD_OUT_TOLERANCE * 0.15, 0.15) == "solved"  # the tolerance is inclusive
    assert circuit_status(True, HELD_OUT_TOLERANCE * 0.15 * 1.001, 0.15) == "train_only"
    assert circuit_status(True, math.nan, 0.15) == "train_only"  # an unmeasured test loss is not a success
    assert circuit_status(True, None, 0.15) == "train_only"


def test_a_committed_circuit_that_fits_only_the_train_prompts_reads_as_train_only():
    # indent_for's learned-mask circuit: train loss 0.143, test loss 0.667 (4.4x the target), written as `solved`
    # under the earlier rule; read today, the file's own numbers give its status
    m, summary, unit = _table(RESULTS / "indent_for.learned_mask.seed0.parquet")
    assert m[("train", "circuit_loss")] <= m[("train", "target_loss")]
    assert summary["sufficiency_loss"] > HELD_OUT_TOLERANCE * summary["test_target_loss"]
    assert summary["status"] == "train_only"
    assert status_from_measurements(m, unit.target_loss, unit.min_accuracy) == "train_only"
    m, summary, unit = _table(RESULTS / "if_equals.learned_mask.seed0.parquet")  # test loss 0.132: holds
    assert summary["status"] == "solved" and summary["sufficiency_loss"] <= summary["test_target_loss"]


def test_the_board_and_read_unit_give_every_committed_unit_the_same_status():
    from circuitbench.leaderboard.protocol import board_numbers

    statuses = set()
    for path in sorted((REPO / "baselines").glob("results*/*/*.seed*.parquet")):
        if path.name.endswith((".edges.parquet", ".steer.parquet", ".nodes.parquet")):
            continue
        m, summary, unit = _table(path)
        assert board_numbers(m, unit)["status"] == summary["status"], path
        statuses.add(summary["status"])
    assert {"solved", "train_only", "unsolved"} <= statuses


def test_the_evaluator_writes_the_status_its_numbers_give(quote_unit):
    summary, path = quote_unit
    m, read, unit = _table(path)
    assert summary["status"] == read["status"] == status_from_measurements(m, unit.target_loss, unit.min_accuracy)
    assert m[("test", "target_loss")] == summary["test_target_loss"] == effective_target(
        unit.target_loss, m[("test", "full_loss")])


@pytest.mark.slow
def test_run_reports_a_circuit_that_misses_held_out_as_train_only_and_says_so(tmp_path, capsys):
    from circuitbench.cli import main

    assert main(["run", "--tasks", "indent_for", "--method", "eap", "--search-examples", "64", "--no-control",
                 "--device", "cpu", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    (path,) = (tmp_path / "tiny-sparse").glob("indent_for.eap.seed0.parquet")
    m, summary, unit = _table(path)
    assert m[("train", "circuit_loss")] <= m[("train", "target_loss")]  # met on the search pairs ...
    assert summary["sufficiency_loss"] > HELD_OUT_TOLERANCE * summary["test_target_loss"]  # ... not held out
    assert summary["status"] == "train_only"
    assert "0/1 tasks solved by the full model and pruned to a circuit that meets the target held out" in out
    assert "(status train_only, not counted above" in out and "indent_for (test loss" in out


def test_the_readme_states_the_rule():
    text = (REPO / "README.md").read_text()
    assert f"at most {HELD_OUT_TOLERANCE:g} x the test target" in text and "`train_only`" in text


def test_the_control_against_the_circuit_and_what_counts_as_specific():
    from circuitbench.results.status import SPECIFIC_CONTROL_RATIO, control_text, is_specific

    base = {"status": "solved", "level": "nodes", "nodes": 50, "edges": 200}
    missed = {**base, "control_nodes": 2816, "control_met_target": False}
    cheap = {**base, "control_nodes": 60, "control_met_target": True}
    dear = {**base, "control_nodes": int(50 * SPECIFIC_CONTROL_RATIO), "control_met_target": True}
    assert (control_text(missed), control_text(cheap), control_text(dear)) == ("missed", "1.2x", "2.0x")
    assert is_specific(missed) and is_specific(dear) and not is_specific(cheap)
    assert not is_specific({**missed, "status": "train_only"})  # a circuit that misses held out is not specific
    assert is_specific({**base, "control_nodes": None, "control_met_target": None}) is None  # no control ran
    edges = {**base, "level": "edges", "control_nodes": 10, "control_edges": 1000, "control_met_target": True}
    assert control_text(edges) == "5.0x"  # edge-level circuits are compared by edges
