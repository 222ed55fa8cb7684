"""The evaluator is a pure function of (unit, model, ablation source): no files, same inputs, same result."""

import math
import os

import pytest
import torch

from circuitbench.circuits.ablation import ABLATIONS, ablation_source
from circuitbench.circuits.evaluate import evaluate, search_subset
from circuitbench.circuits.masks import NodeIndex
from circuitbench.errors import CircuitbenchError
from circuitbench.runs.config import RunConfig, make_units, model_ref
from circuitbench.tasks.load import get_task


def _unit(adapter, **over):
    cfg = RunConfig(**{**dict(tasks=["lambda_func"], method_kwargs={"steps": 3}, ablation="zero", min_accuracy=0.0,
                               search_examples=32, control=True), **over})
    (unit,) = make_units(cfg, model_ref("small", adapter), "float32")
    return unit


def test_evaluate_writes_nothing_and_is_deterministic(tmp_path, small_adapter, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIRCUITBENCH_CACHE", str(tmp_path / "cache"))
    unit = _unit(small_adapter)
    index = NodeIndex.of(small_adapter)
    a = evaluate(unit, small_adapter, ablation_source("zero", small_adapter, index))
    b = evaluate(unit, small_adapter, ablation_source("zero", small_adapter, index))
    assert os.listdir(tmp_path) == []
    assert a.unit == unit and a.status in ("solved", "target_missed")
    strip = {"wall_s"}
    assert a.model_dump(exclude=strip | {"measurements"}) == b.model_dump(exclude=strip | {"measurements"})
    def numbers(r):  # NaN (an undefined faithfulness) as a string, so that equal runs compare equal
        return [(m.split, m.metric, "nan" if math.isnan(m.value) else m.value) for m in r.measurements
                if not m.metric.startswith("time_")]

    assert numbers(a) == numbers(b)
    assert a.circuit.k == a.nodes and a.control_nodes is not None
    assert a.metric("full_loss") == a.full_loss


def test_evaluate_refuses_a_mismatched_model_or_ablation(small_adapter):
    from circuitbench.models.native import SparseGPTAdapter

    unit = _unit(small_adapter)
    index = NodeIndex.of(small_adapter)
    with pytest.raises(CircuitbenchError, match="asks for zero ablation"):
        evaluate(unit, small_adapter, ablation_source("task-mean", small_adapter, index))
    other = SparseGPTAdapter(small_adapter.model, small_adapter.tokenizer, "small", {"weights_sha256": "x"})
    with pytest.raises(CircuitbenchError, match="names weights test-small"):
        evaluate(unit, other, ablation_source("zero", other, index))


def test_a_changed_task_spec_is_refused(small_adapter):
    unit = _unit(small_adapter).model_copy(update={"task_hash": "stale"})
    with pytest.raises(CircuitbenchError, match="changed since this unit was made"):
        evaluate(unit, small_adapter, ablation_source("zero", small_adapter, NodeIndex.of(small_adapter)))


def test_unsolved_units_are_measured_but_not_pruned(small_adapter):
    unit = _unit(small_adapter, min_accuracy=1.01)
    r = evaluate(unit, small_adapter, ablation_source("zero", small_adapter, NodeIndex.of(small_adapter)))
    assert r.status == "unsolved" and r.circuit is None and r.nodes is None and r.full_accuracy is not None


def test_search_subset_keeps_whole_pairs_and_depends_on_the_seed(small_adapter):
    from circuitbench.protocols import Batch
    from circuitbench.tasks.encode import encode_task

    train = Batch.of(encode_task(get_task("lambda_func"), small_adapter.tokenizer, "train"))
    a, b = search_subset(train, 16, 0), search_subset(train, 16, 1)
    assert len(a) == 16
    assert torch.equal(a.correct[0::2], a.incorrect[1::2])  # pair members have swapped answers
    assert not torch.equal(a.tokens[:, :8], b.tokens[:, :8])


def test_ablation_registry(small_adapter):
    index = NodeIndex.of(small_adapter)
    assert set(ABLATIONS) == {"mean", "task-mean", "zero", "counterfactual"}
    assert torch.equal(ablation_source("zero", small_adapter, index).values(None), torch.zeros(index.value_size))
    with pytest.raises(CircuitbenchError, match="unknown ablation; choose one of mean, task-mean, zero, count"):
        ablation_source("median", small_adapter, index)
