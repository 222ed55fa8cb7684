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
    assert a.unit == unit and a.status in ("solved", "train_only", "target_missed")
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


def test_each_phase_runs_alone_and_gives_the_numbers_evaluate_records(small_adapter):
    """`prepare`, `full_model_phase`, `method_phase` and `search_phase` are functions of their own: run one by
    one on a unit, they give the rows and the circuit `evaluate` records for it."""
    import dataclasses

    from circuitbench.circuits.evaluate import full_model_phase, method_phase, prepare, search_phase
    from circuitbench.circuits.methods import get_method

    unit = _unit(small_adapter, method="random", method_kwargs={}, control=False)
    source = ablation_source("zero", small_adapter, NodeIndex.of(small_adapter))
    whole = evaluate(unit, small_adapter, source)
    state = prepare(unit, small_adapter, source)
    full_test, full_train = full_model_phase(state)
    assert full_test.accuracy == whole.full_accuracy and full_test.loss == whole.full_loss
    state.problem = dataclasses.replace(state.problem, ablation_values=source.values(state.train))
    ranking = method_phase(state, get_method("random"), None)
    assert ranking.signed is None and ranking.native is None and ranking.control_scores is None
    found, gates, _ = search_phase(state, ranking, max(unit.target_loss, full_train.loss))
    assert found.k == whole.nodes and int(gates.sum()) == whole.nodes
    rows = {(s, m): v for s, m, v in state.rows}
    assert rows[("", "edges")] == whole.edges and rows[("train", "circuit_loss")] == whole.circuit_train_loss


def test_method_capabilities_are_declared_by_protocols_not_probed():
    """A plugin method with only `node_scores`, `hyperparameters` and `cost` is none of the optional kinds;
    the built-in methods are the kinds they declare."""
    from dataclasses import dataclass

    from circuitbench.circuits.methods import (
        DiagnosedMethod,
        JointMethod,
        NativeSizeMethod,
        SignedMethod,
        get_method,
    )

    @dataclass
    class Plain:
        name = "plain"

        def node_scores(self, problem):
            return torch.zeros(3)

        def hyperparameters(self):
            return {}

        def cost(self, n_examples, n_nodes):
            return {"forward": 0, "backward": 0}

    plain = Plain()
    assert not any(isinstance(plain, p) for p in (JointMethod, SignedMethod, NativeSizeMethod, DiagnosedMethod))
    mask = get_method("learned_mask")
    assert isinstance(mask, JointMethod) and isinstance(mask, NativeSizeMethod) and isinstance(mask, DiagnosedMethod)
    assert not isinstance(get_method("eap"), JointMethod)
