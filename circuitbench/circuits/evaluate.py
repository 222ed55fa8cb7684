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
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from circuitbench.circuits.ablation import AblationSource
from circuitbench.circuits.curves import CURVE_METRICS, faithfulness_curve, node_curve, top_k_scores
from circuitbench.circuits.edge_level import check_edge_level
from circuitbench.circuits.intervals import area_interval, faithfulness_interval, loss_interval, pair_resamples
from circuitbench.circuits.masks import NodeIndex, keep_top
from circuitbench.circuits.methods import (
    DiagnosedMethod,
    JointMethod,
    Method,
    NativeSizeMethod,
    SignedMethod,
    get_method,
)
from circuitbench.circuits.metrics import Scores, faithfulness, loss_recovered, score
from circuitbench.circuits.problem import (
    Calibration,
    EdgeProblem,
    Problem,
    circuit_scorer,
    make_problem,
    measure_circuit,
    search_subset,
)
from circuitbench.circuits.scores import check_scores, plugin_errors
from circuitbench.circuits.search import SearchResult, smallest_k
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import Batch, ModelAdapter
from circuitbench.results.circuit import Circuit
from circuitbench.results.status import circuit_status, effective_target
from circuitbench.results.unit import Measurement, Status, Unit, UnitResult

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


Row = tuple[str, str, float]
"""One measurement before it is typed: (split, metric, value)."""


@dataclasses.dataclass
class UnitState:
    """What the phases of one unit share: its inputs, the encoded splits, and the rows and fields so far."""

    unit: Unit
    adapter: ModelAdapter
    index: NodeIndex
    train: Batch
    test: Batch
    search_rows: Batch
    problem: Problem
    rows: list[Row]
    fields: dict[str, Any]
    phases: _Phases
    t_start: float

    def result(self, status: Status, circuit: Circuit | None = None) -> UnitResult:
        """The unit's result from the rows and fields gathered so far."""
        return UnitResult(unit=self.unit, status=status, **self.fields, wall_s=time.perf_counter() - self.t_start,
                          measurements=tuple(Measurement(split=s, metric=m, value=float(v))  # type: ignore[arg-type]
                                             for s, m, v in self.rows),
                          circuit=circuit)


@dataclasses.dataclass(frozen=True)
class Ranking:
    """What the method phase found: the node scores of the task (and of its control), and what else it said."""

    scores: Tensor
    native: int | None
    signed: Tensor | None
    control_scores: Tensor | None = None
    control_native: int | None = None


def evaluate(unit: Unit, adapter: ModelAdapter, ablation: AblationSource, show_progress: bool = False,
             eval_batch: int = 256) -> UnitResult:
    """Measure one unit: full model, method, curves, circuit search, sufficiency, necessity, control.

    Each phase is a function of its own below (`prepare`, `full_model_phase`, `method_phase`, `curve_phase`,
    `search_phase`, `measure_phase`, `control_phase`), run here in order.

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
    state = prepare(unit, adapter, ablation, show_progress, eval_batch)
    if len(state.train) < 2 or len(state.test) < 2:
        return state.result("no_examples")
    full_test, full_train = full_model_phase(state)
    if full_test.accuracy < unit.min_accuracy:
        log.info("%s: full-model accuracy %.3f < %.2f; not pruned", unit.task, full_test.accuracy, unit.min_accuracy)
        state.rows += state.phases.rows()
        return state.result("unsolved")
    with state.phases("ablation_values"):
        values = unit_ablation_values(state, ablation).to(adapter.device)
    state.problem = dataclasses.replace(state.problem, ablation_values=values)
    # The target on each split (`results.status`): the unit's target loss, or the full model's own loss there
    target = effective_target(unit.target_loss, full_train.loss)
    test_target = effective_target(unit.target_loss, full_test.loss)
    state.rows += [("train", "target_loss", target), ("test", "target_loss", test_target)]
    control = dataclasses.replace(state.problem, train=state.train.swapped()) if unit.control else None
    method = get_method(unit.method, **unit.method_kwargs)
    ranking = method_phase(state, method, control)
    empty = curve_phase(state, ranking, full_test)
    found, gates, calibration = search_phase(state, ranking, target)
    measure_phase(state, gates, calibration, full_test, empty)
    state.fields.update(target_loss=target, test_target_loss=test_target, circuit_train_loss=found.loss)
    if control is not None:
        control_phase(state, control, method, ranking, target)
    state.rows += state.phases.rows()
    circuit = state.problem.circuit(ranking.scores, found.k, values, n_head=adapter.n_heads,
                                    calibration=None if calibration is None else
                         {"scale": calibration.scale, "shift": {str(t): v for t, v in calibration.shift.items()}},
                         unit_key=unit.key(), model=unit.model.name, task=unit.task)
    return state.result(circuit_status(found.met_target, state.fields["sufficiency_loss"], test_target), circuit)


def unit_ablation_values(state: UnitState, ablation: AblationSource) -> Tensor:
    """The values pruned nodes (or the sources of pruned edges) take."""
    if not isinstance(state.problem, EdgeProblem):
        return ablation.values(state.train)
    from circuitbench.circuits.ablation import ablation_source

    # edges also ablate the attention's head-mixed values: the same kind of source over the wider layout
    return ablation_source(state.unit.ablation, state.adapter, state.problem.graph.values).values(state.train)


def prepare(unit: Unit, adapter: ModelAdapter, ablation: AblationSource, show_progress: bool = False,
            eval_batch: int = 256) -> UnitState:
    """Check that the model and the ablation are the unit's, encode its task and set up the problem.

    Raises:
        CircuitbenchError: when the adapter's weights or the ablation kind are not the unit's.
    """
    sha = adapter.provenance.get("weights_sha256")
    if unit.model.weights_sha256 is not None and sha != unit.model.weights_sha256:
        raise CircuitbenchError(f"unit {unit.key()} names weights {unit.model.weights_sha256}, the model has {sha}")
    if ablation.kind != unit.ablation:
        raise CircuitbenchError(f"unit {unit.key()} asks for {unit.ablation} ablation, got a {ablation.kind} source")
    t_start = time.perf_counter()
    index = NodeIndex.of(adapter)
    train_enc, test_enc = encode_unit_task(unit, adapter)
    train, test = Batch.of(train_enc, adapter.device), Batch.of(test_enc, adapter.device)
    rows: list[Row] = [("test", "examples", len(test)), ("test", "dropped", test_enc.n_dropped),
                       ("train", "examples", len(train))]
    fields: dict[str, Any] = dict(test_examples=len(test), dropped_examples=test_enc.n_dropped)
    if len(train) < 2 or len(test) < 2:
        log.warning("%s: no usable examples for this tokenizer (%s)", unit.task, test_enc.drop_reasons)
    # the full model ignores ablation values; they are computed only for tasks that get pruned
    counterfactual = unit.ablation == "counterfactual"
    if counterfactual and len(train) >= 2 and len(test) >= 2:  # rows patched position by position
        from circuitbench.circuits.ablation import aligned_examples

        rows += [(name, "counterfactual_aligned_examples", aligned_examples(split))
                 for name, split in (("train", train), ("test", test))]
    if unit.level == "edges":
        check_edge_level(adapter, unit.ablation)
    problem = make_problem(adapter, train, unit.seed, unit.level, None, counterfactual, show_progress, eval_batch)
    search_rows = search_subset(train, unit.search_examples, unit.seed) if len(train) >= 2 else train
    return UnitState(unit, adapter, index, train, test, search_rows, problem, rows, fields, _Phases(), t_start)


def full_model_phase(state: UnitState) -> tuple[Scores, Scores]:
    """The full model's scores on the test split and on the search examples (and an SAE model's loss recovered)."""
    with state.phases("full_model"):
        full_test, full_train = state.problem.scores(state.test, None), state.problem.scores(state.search_rows, None)
    state.rows += [("test", k, v) for k, v in full_test.as_dict("full").items()]
    state.rows += [("train", k, v) for k, v in full_train.as_dict("full").items()]
    if state.adapter.has_saes:  # an SAE-augmented model: SAEBench's loss recovered, pruned or not
        state.rows += [("test", k, v) for k, v in loss_recovered(state.adapter, state.test).items()]
    state.fields.update(full_accuracy=full_test.accuracy, full_loss=full_test.loss)
    return full_test, full_train


def method_phase(state: UnitState, method: Method, control: Problem | None) -> Ranking:
    """Run the method on the task and on its control.

    Jointly where the method can (`JointMethod`: the same numbers as two runs, in fewer passes); the phase
    then includes the control's training.
    """
    joint = control is not None and isinstance(method, JointMethod)
    c_scores: Tensor | None = None
    native: int | None = None
    c_native: int | None = None
    with state.phases("method"), plugin_errors(method, state.unit.method):
        if joint:
            assert isinstance(method, JointMethod) and control is not None
            scores, c_scores = method.joint_scores([state.problem, control])
            native, c_native = method.native_ks
        else:
            scores = method.node_scores(state.problem)
            native = method.native_k if isinstance(method, NativeSizeMethod) else None
    scores = check_scores(state.unit.method, "scores", scores, state.problem)
    if c_scores is not None:
        c_scores = check_scores(state.unit.method, "control scores", c_scores, state.problem)
    if isinstance(method, DiagnosedMethod):
        state.rows += [("", f"method_{k}", v) for k, v in method.diagnostics().items()]
    state.rows.append(("", "method_joint_control", float(joint)))
    state.rows += [("", f"method_cost_{k}_passes", v)
                   for k, v in method.cost(len(state.train), state.problem.size).items()]
    signed = method.signed_scores if isinstance(method, SignedMethod) else None
    return Ranking(scores, native, signed, c_scores, c_native)


def curve_phase(state: UnitState, ranking: Ranking, full_test: Scores) -> Scores:
    """MIB's faithfulness curves over circuit size on the test split (every metric), and their areas.

    Returns:
        The empty circuit's scores on the test split (the curves' zero point).
    """
    problem, test, size = state.problem, state.test, state.problem.size
    with state.phases("curve"):
        reference = problem.answer_logprobs(test)  # the full model's next-token distribution, for KL
        full_ref = dataclasses.replace(full_test, kl=0.0)
        empty = problem.scores(test, torch.zeros(size, device=state.adapter.device), reference)
        at = top_k_scores(problem, test, ranking.scores, full_ref, empty, reference)
        curves = {metric: faithfulness_curve(at, size, full_ref, empty, metric) for metric in CURVE_METRICS}
        for metric, curve in curves.items():
            tag = "" if metric == "logit_diff" else f"{metric}_"
            grid, grid_f = node_curve(at, size, full_ref, empty, metric)
            state.rows += [("test", f"curve_{tag}f_{frac:g}", f) for frac, f in zip(curve.fractions, curve.f,
                                                                                    strict=True)]
            state.rows += [("test", f"curve_{problem.level}_{tag}f_{k}", f) for k, f in zip(grid, grid_f,
                                                                                               strict=True)]
        absolute = curves["logit_diff"]
        # MIB: CPR ranks by the signed score, CMD by its absolute value (the same ranking for unsigned methods)
        at_signed = at if ranking.signed is None else top_k_scores(problem, test, ranking.signed, full_ref, empty,
                                                                   reference)
        signed = absolute if ranking.signed is None else faithfulness_curve(at_signed, size, full_ref, empty)
    state.rows += [("test", f"curve_signed_f_{frac:g}", f) for frac, f in zip(signed.fractions, signed.f, strict=True)]
    state.fields.update(cpr=signed.cpr(), cmd=absolute.cmd(), cpr_log=signed.cpr_log(), cmd_log=absolute.cmd_log())
    idx = pair_resamples(len(test), state.unit.seed)
    for name, curve, at_k in (("cpr", signed, at_signed), ("cmd", absolute, at)):
        _interval_rows(state, name, area_interval([at_k(k) for k in curve.k], curve.fractions, full_ref, empty, idx,
                                                  name))
    return empty


def _interval_rows(state: UnitState, name: str, interval: tuple[float, float]) -> None:
    """A number's 95% bootstrap interval over the test pairs, as `NAME_lo` / `NAME_hi` measurements and fields."""
    lo, hi = interval
    state.rows += [("test", f"{name}_lo", lo), ("test", f"{name}_hi", hi)]
    state.fields.update({f"{name}_lo": lo, f"{name}_hi": hi})


def search_phase(state: UnitState, ranking: Ranking, target: float
                 ) -> tuple[SearchResult, Tensor, Calibration | None]:
    """The smallest top-k circuit of the ranking that meets `target` on the search examples; its sizes."""
    on_search = circuit_scorer(state.problem, state.search_rows, state.unit.calibrate)
    with state.phases("search"):
        found = smallest_k(lambda k: on_search(keep_top(ranking.scores, k))[0].loss, state.problem.size, target,
                           ranking.native)
        gates = keep_top(ranking.scores, found.k)
        calibration = on_search(gates)[1]
    sizes = state.problem.circuit_sizes(gates)
    state.rows += [("", k, v) for k, v in sizes.items()]
    state.rows += [("train", "circuit_loss", found.loss), ("train", "search_evaluations", found.evaluations)]
    state.fields.update(nodes=sizes["nodes"], edges=sizes["edges"])
    return found, gates, calibration


def measure_phase(state: UnitState, gates: Tensor, calibration: Calibration | None, full_test: Scores,
                  empty: Scores) -> None:
    """Sufficiency, necessity and faithfulness of the circuit on the test split (with 95% intervals)."""
    with state.phases("measure"):
        suff, nec, _ = measure_circuit(state.problem, state.test, gates, calibration, empty)
        # faithfulness's zero point: the empty circuit, given the circuit's freedom (a calibration of its own)
        base = empty if calibration is None else calibrated_empty(state, torch.zeros_like(gates))
    if calibration is not None:
        uncalibrated = state.problem.scores(state.test, gates)
        state.rows += [("test", k, v) for k, v in uncalibrated.as_dict("sufficiency_uncalibrated").items()]
        state.rows += [("", "calibration_scale", calibration.scale), ("test", "empty_calibrated_logit_diff",
                                                                      base.logit_diff)]
        state.rows += [("", f"calibration_shift_{t}", v) for t, v in calibration.shift.items()]
    state.rows += [("test", k, v) for k, v in {**suff.as_dict("sufficiency"), **nec.as_dict("necessity"),
                                                **empty.as_dict("empty")}.items()]
    f = faithfulness(suff.logit_diff, full_test.logit_diff, base.logit_diff)
    state.rows.append(("test", "faithfulness", f))
    state.fields.update(sufficiency_loss=suff.loss, sufficiency_accuracy=suff.accuracy, necessity_loss=nec.loss,
                        necessity_accuracy=nec.accuracy, faithfulness=f)
    idx = pair_resamples(len(state.test), state.unit.seed)
    for name, interval in (("sufficiency_loss", loss_interval(suff, idx)), ("necessity_loss", loss_interval(nec, idx)),
                           ("faithfulness", faithfulness_interval(suff, full_test, base, idx))):
        _interval_rows(state, name, interval)


def calibrated_empty(state: UnitState, zeros: Tensor) -> Scores:
    """The empty circuit's test scores after a calibration fitted to it on the search examples, as a circuit's is."""
    cal = circuit_scorer(state.problem, state.search_rows, True)(zeros)[1]
    assert cal is not None
    return score(cal.apply(state.problem.two_logits(state.test, zeros), state.test))


def control_phase(state: UnitState, control: Problem, method: Method, ranking: Ranking, target: float) -> None:
    """The inverted-label control (Drori 2026: pruning can "solve" nonsense; this measures how easily)."""
    on_control = circuit_scorer(control, state.search_rows.swapped(), state.unit.calibrate)
    with state.phases("control"):
        c_scores, c_native = ranking.control_scores, ranking.control_native
        if c_scores is None:  # not trained jointly with the task
            with plugin_errors(method, state.unit.method):
                c_scores = method.node_scores(control)
            c_scores = check_scores(state.unit.method, "control scores", c_scores, control)
            c_native = method.native_k if isinstance(method, NativeSizeMethod) else None
        c_found = smallest_k(lambda k: on_control(keep_top(c_scores, k))[0].loss, state.problem.size, target,
                             c_native)
    sizes = control.circuit_sizes(keep_top(c_scores, c_found.k))
    state.rows += [("", "control_nodes", sizes["nodes"]), ("train", "control_loss", c_found.loss),
                   ("", "control_met_target", float(c_found.met_target))]
    state.fields.update(control_nodes=sizes["nodes"], control_met_target=c_found.met_target)
    if control.level == "edges":
        state.rows.append(("", "control_edges", sizes["edges"]))
        state.fields.update(control_edges=sizes["edges"])
