"""The evaluator: one pure function from a unit, a model and its ablation values to a typed result.

`evaluate(unit, adapter, ablation)` encodes the unit's task for the model's tokenizer, scores the full
model, and, where the full model solves the task, runs the method, finds the smallest circuit by
bisection, and measures it: nodes and edges, sufficiency, necessity, the empty circuit, MIB faithfulness,
and the inverted-label control. It reads no files of its own (the ablation source may read a corpus
cache), writes nothing, parses no flags and keeps no state between calls: the runner does all of that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from circuitbench.circuits.ablation import AblationSource
from circuitbench.circuits.circuit import Circuit
from circuitbench.circuits.curves import CURVE_METRICS, faithfulness_curve, node_curve, top_k_scores
from circuitbench.circuits.edges import count_edges
from circuitbench.circuits.masks import NodeIndex, keep_top
from circuitbench.circuits.methods import get_method
from circuitbench.circuits.metrics import Scores, count_nodes, faithfulness, loss_recovered, score
from circuitbench.circuits.problem import Calibration, Problem, fit_calibration, search_subset
from circuitbench.circuits.search import smallest_k
from circuitbench.circuits.unit import Measurement, Unit, UnitResult
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import Batch, ModelAdapter

log = logging.getLogger(__name__)


class _Phases:
    """Wall time per phase of one unit, recorded as `time_<phase>_s` measurements."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def rows(self) -> list[tuple[str, str, float]]:
        return [("", f"time_{k}_s", v) for k, v in self.seconds.items()]


def circuit_scorer(
    problem: Problem, rows: Batch, calibrate: bool
) -> Callable[[Tensor], tuple[Scores, Calibration | None]]:
    """Scores of a gate vector on `rows`, after fitting a calibration to them when asked."""

    def at(gates: Tensor) -> tuple[Scores, Calibration | None]:
        two = problem.two_logits(rows, gates)
        if not calibrate:
            return score(two), None
        cal = fit_calibration(two, rows)
        return score(cal.apply(two, rows)), cal

    return at


def encode_unit_task(unit: Unit, adapter: ModelAdapter) -> tuple[Any, Any]:
    """The unit's task encoded for the model, train and test splits; checks the task hash.

    Raises:
        CircuitbenchError: when the task spec changed since the unit was made.
    """
    from circuitbench.tasks.encode import encode_task
    from circuitbench.tasks.load import get_task

    spec = get_task(unit.task)
    if spec.task_hash != unit.task_hash:
        raise CircuitbenchError(f"task {unit.task}: the spec's hash is {spec.task_hash}, the unit's "
                                f"{unit.task_hash}; the task changed since this unit was made")
    max_len = min(spec.max_tokens, adapter.context_length or spec.max_tokens)
    return (encode_task(spec, adapter.tokenizer, "train", max_len=max_len),
            encode_task(spec, adapter.tokenizer, "test", max_len=max_len))


def evaluate(unit: Unit, adapter: ModelAdapter, ablation: AblationSource, show_progress: bool = False,
             eval_batch: int = 256) -> UnitResult:
    """Measure one unit: full model, circuit search, sufficiency, necessity, faithfulness, control.

    Args:
        unit: What to compute (the model it names must be `adapter`: same weights hash).
        adapter: The model.
        ablation: Where pruned nodes' values come from; its kind must be the unit's.
        show_progress: Show the method's progress bar.
        eval_batch: Examples per forward pass when scoring circuits (memory is bounded by it, not by the
            task; the numbers do not depend on it beyond float rounding).

    Returns:
        The result, with the circuit when the task was pruned.

    Raises:
        CircuitbenchError: when the adapter or the ablation source is not the one the unit names.
    """
    sha = adapter.provenance.get("weights_sha256")
    if unit.model.weights_sha256 is not None and sha != unit.model.weights_sha256:
        raise CircuitbenchError(f"unit {unit.key()} names weights {unit.model.weights_sha256}, the model has {sha}")
    if ablation.kind != unit.ablation:
        raise CircuitbenchError(f"unit {unit.key()} asks for {unit.ablation} ablation, got a {ablation.kind} source")
    t_start = time.perf_counter()
    method = get_method(unit.method, **unit.method_kwargs)
    index = NodeIndex.of(adapter)
    train_enc, test_enc = encode_unit_task(unit, adapter)
    train, test = Batch.of(train_enc, adapter.device), Batch.of(test_enc, adapter.device)
    rows: list[tuple[str, str, float]] = [("test", "examples", len(test)), ("test", "dropped", test_enc.n_dropped),
                                          ("train", "examples", len(train))]
    fields: dict[str, Any] = dict(test_examples=len(test), dropped_examples=test_enc.n_dropped)

    def result(status: str, **more: Any) -> UnitResult:
        return UnitResult(unit=unit, status=status, **fields, **more, wall_s=time.perf_counter() - t_start,
                          measurements=tuple(Measurement(split=s, metric=m, value=float(v))  # type: ignore[arg-type]
                                             for s, m, v in rows))

    if len(train) < 2 or len(test) < 2:
        log.warning("%s: no usable examples for this tokenizer (%s)", unit.task, test_enc.drop_reasons)
        return result("unsolved")
    phases = _Phases()
    search_rows = search_subset(train, unit.search_examples, unit.seed)
    # the full model ignores ablation values; they are computed only for tasks that get pruned
    counterfactual = unit.ablation == "counterfactual"
    if counterfactual:  # how many rows are patched position by position (the rest: an aligned suffix)
        from circuitbench.circuits.ablation import aligned_examples

        rows += [(name, "counterfactual_aligned_examples", aligned_examples(split))
                 for name, split in (("train", train), ("test", test))]
    problem = Problem(adapter, index, torch.zeros(index.value_size, device=adapter.device), train, unit.seed,
                      show_progress, eval_batch, counterfactual)
    with phases("full_model"):
        full_test, full_train = problem.scores(test, None), problem.scores(search_rows, None)
    rows += [("test", k, v) for k, v in full_test.as_dict("full").items()]
    rows += [("train", k, v) for k, v in full_train.as_dict("full").items()]
    if hasattr(adapter, "splices"):  # an SAE-augmented model: SAEBench's loss recovered, pruned or not
        rows += [("test", k, v) for k, v in loss_recovered(adapter, test).items()]
    fields.update(full_accuracy=full_test.accuracy, full_loss=full_test.loss)
    if full_test.accuracy < unit.min_accuracy:
        log.info("%s: full-model accuracy %.3f < %.2f; not pruned", unit.task, full_test.accuracy, unit.min_accuracy)
        rows += phases.rows()
        return result("unsolved")

    with phases("ablation_values"):
        values = ablation.values(train).to(adapter.device)
    problem = dataclasses.replace(problem, ablation=values)
    # The circuit must reach the target loss, or the full model's own loss where the full model is weaker than
    # the target (it solves the task, just less confidently): keeping every node always meets that.
    target = max(unit.target_loss, full_train.loss)
    rows.append(("train", "target_loss", target))
    on_search = circuit_scorer(problem, search_rows, unit.calibrate)
    control = dataclasses.replace(problem, train=train.swapped()) if unit.control else None
    # A method that can train the task and its control side by side in one batch (`joint_scores`: the same
    # numbers as two runs, in fewer passes) does; the method phase then includes the control's training.
    joint = control is not None and hasattr(method, "joint_scores")
    with phases("method"):
        if joint:
            node_scores, c_scores = method.joint_scores([problem, control])
            native, c_native = method.native_ks
        else:
            node_scores = method.node_scores(problem)
            native = getattr(method, "native_k", None)
    rows += [("", f"method_{k}", v) for k, v in getattr(method, "diagnostics", dict)().items()]
    rows.append(("", "method_joint_control", float(joint)))
    cost = method.cost(len(train), index.size) if hasattr(method, "cost") else {}
    rows += [("", f"method_cost_{k}_passes", v) for k, v in cost.items()]
    with phases("curve"):
        reference = problem.answer_logprobs(test)  # the full model's next-token distribution, for KL
        full_ref = dataclasses.replace(full_test, kl=0.0)
        empty = problem.scores(test, torch.zeros(index.size, device=adapter.device), reference)
        at = top_k_scores(problem, test, node_scores, full_ref, empty, reference)
        curves = {metric: faithfulness_curve(at, index.size, full_ref, empty, metric) for metric in CURVE_METRICS}
        for metric, curve in curves.items():
            tag = "" if metric == "logit_diff" else f"{metric}_"
            grid, grid_f = node_curve(at, index.size, full_ref, empty, metric)
            rows += [("test", f"curve_{tag}f_{frac:g}", f) for frac, f in zip(curve.fractions, curve.f, strict=True)]
            rows += [("test", f"curve_nodes_{tag}f_{k}", f) for k, f in zip(grid, grid_f, strict=True)]
        absolute = curves["logit_diff"]
        # MIB: CPR ranks by the signed score, CMD by its absolute value (the same ranking for unsigned methods)
        signed_scores = getattr(method, "signed_scores", None)
        signed = absolute if signed_scores is None else faithfulness_curve(
            top_k_scores(problem, test, signed_scores, full_ref, empty, reference), index.size, full_ref, empty)
    rows += [("test", f"curve_signed_f_{frac:g}", f) for frac, f in zip(signed.fractions, signed.f, strict=True)]
    fields.update(cpr=signed.cpr(), cmd=absolute.cmd(), cpr_log=signed.cpr_log(), cmd_log=absolute.cmd_log())
    with phases("search"):
        found = smallest_k(lambda k: on_search(keep_top(node_scores, k))[0].loss, index.size, target,
                           native)
        gates = keep_top(node_scores, found.k)
        calibration = on_search(gates)[1]
    sizes = {**count_nodes(index, gates), **count_edges(adapter, index, gates)}
    rows += [("", k, v) for k, v in sizes.items()]
    rows += [("train", "circuit_loss", found.loss), ("train", "search_evaluations", found.evaluations)]
    with phases("measure"):
        suff, nec, _ = measure_circuit(problem, test, gates, calibration, empty)
    if calibration is not None:
        uncalibrated = problem.scores(test, gates)
        rows += [("test", k, v) for k, v in uncalibrated.as_dict("sufficiency_uncalibrated").items()]
        rows += [("", "calibration_scale", calibration.scale)]
        rows += [("", f"calibration_shift_{t}", v) for t, v in calibration.shift.items()]
    rows += [("test", k, v) for k, v in {**suff.as_dict("sufficiency"), **nec.as_dict("necessity"),
                                          **empty.as_dict("empty")}.items()]
    f = faithfulness(suff.logit_diff, full_test.logit_diff, empty.logit_diff)
    rows.append(("test", "faithfulness", f))
    fields.update(target_loss=target, nodes=sizes["nodes"], edges=sizes["edges"], circuit_train_loss=found.loss,
                  sufficiency_loss=suff.loss, sufficiency_accuracy=suff.accuracy, necessity_loss=nec.loss,
                  necessity_accuracy=nec.accuracy, faithfulness=f)
    if control is not None:
        # Drori 2026: pruning can "solve" nonsense; the inverted-label control measures how easily.
        on_control = circuit_scorer(control, search_rows.swapped(), unit.calibrate)
        with phases("control"):
            if not joint:
                c_scores = method.node_scores(control)
                c_native = getattr(method, "native_k", None)
            c_found = smallest_k(lambda k: on_control(keep_top(c_scores, k))[0].loss, index.size, target, c_native)
        rows += [("", "control_nodes", c_found.k), ("train", "control_loss", c_found.loss),
                 ("", "control_met_target", float(c_found.met_target))]
        fields.update(control_nodes=c_found.k, control_met_target=c_found.met_target)
    rows += phases.rows()
    circuit = Circuit.of(index, node_scores, found.k, values, n_head=_n_head(adapter),
                         calibration=None if calibration is None else
                         {"scale": calibration.scale, "shift": {str(t): v for t, v in calibration.shift.items()}},
                         unit_key=unit.key(), model=unit.model.name, task=unit.task)
    return result("solved" if found.met_target else "target_missed", circuit=circuit)


def measure_circuit(problem: Problem, rows: Batch, gates: Tensor, calibration: Calibration | None,
                    empty: Scores | None = None) -> tuple[Scores, Scores, Scores]:
    """Sufficiency (only the circuit kept, calibrated when it was), necessity (only it ablated), empty circuit.

    `empty`, when the caller has it already for these rows, is returned instead of being measured again.
    """
    two = problem.two_logits(rows, gates)
    suff = score(two if calibration is None else calibration.apply(two, rows))
    nec = problem.scores(rows, 1.0 - gates)
    if empty is None:
        empty = problem.scores(rows, torch.zeros_like(gates))
    return suff, nec, empty


def _n_head(adapter: ModelAdapter) -> int | None:
    cfg = getattr(adapter, "config", None)
    if getattr(cfg, "n_head", None):
        return int(cfg.n_head)  # type: ignore[union-attr]
    hf = getattr(adapter, "hf_config", None)
    for key in ("num_attention_heads", "n_head"):
        if getattr(hf, key, None):
            return int(getattr(hf, key))
    return None
