"""`circuit backup`: pruning again with a circuit's nodes held at their ablation values."""

import json
from pathlib import Path

import pytest
import torch

from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.problem import Problem
from circuitbench.cli import main
from circuitbench.protocols import Batch
from tests.circuits.toy import toy_adapter, toy_task

UNIT = Path(__file__).resolve().parents[2] / "baselines/results/tiny-sparse/if_equals.eap.seed0.parquet"


def test_a_node_not_allowed_stays_ablated_whatever_its_gate():
    adapter = toy_adapter()
    index = NodeIndex.of(adapter)
    rows = Batch.of(toy_task(8), adapter.device)
    allowed = torch.ones(index.size)
    allowed[[3, 7, 20]] = 0.0
    p = Problem(adapter, index, torch.randn(index.value_size), rows, 0, False, allowed=allowed)
    free = Problem(adapter, index, p.ablation_values, rows, 0, False)
    assert torch.equal(p.two_logits(rows, torch.ones(index.size)), free.two_logits(rows, allowed))


@pytest.mark.slow
def test_backup_prunes_again_without_the_first_circuit(capsys):
    assert main(["circuit", "backup", str(UNIT), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["task"] == "if_equals" and row["method"] == "eap" and row["level"] == "nodes"
    assert row["first_nodes"] == 170  # the committed unit's circuit
    assert isinstance(row["backup_met_target"], bool) and row["backup_nodes"] > 0
    if row["backup_met_target"]:
        assert row["backup_circuit_loss"] <= row["target_loss"]
    from circuitbench.results.status import circuit_status  # the evaluator's rule, held out included

    assert row["backup_status"] == circuit_status(row["backup_met_target"], row["backup_sufficiency_loss"],
                                                  row["test_target_loss"])
    assert 0.0 <= row["backup_sufficiency_accuracy"] <= 1.0


def test_backup_of_an_unpruned_unit_is_one_line(capsys):
    unsolved = next(p for p in UNIT.parent.glob("*.eap.seed0.parquet")
                    if json.loads(__import__("pyarrow.parquet", fromlist=["x"]).read_schema(p).metadata[
                        b"circuitbench.summary"])["status"] == "unsolved")
    assert main(["circuit", "backup", str(unsolved)]) == 1
    assert "the task was not pruned" in capsys.readouterr().err


def test_backup_of_an_empty_circuit_says_there_is_nothing_to_exclude(tmp_path, capsys):
    import dataclasses
    import shutil

    from circuitbench.results.circuit import Circuit, circuit_paths

    for src in (UNIT, *circuit_paths(UNIT)):
        shutil.copy(src, tmp_path / src.name)
    unit = tmp_path / UNIT.name
    cpath = circuit_paths(unit)[0]
    empty = dataclasses.replace(Circuit.load(cpath), k=0)  # the ablated model alone met the target
    empty.save(cpath)
    assert main(["circuit", "backup", str(unit)]) == 1
    err = capsys.readouterr().err
    assert "the circuit is empty (0 nodes)" in err and "nothing to exclude" in err and "Traceback" not in err, err
