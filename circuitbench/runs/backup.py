"""Is a circuit the only one? Prune again with its nodes (or edges) excluded: `circuitbench circuit backup`.

Follow-ups of Gao et al. 2025 find that a model can hold more than one circuit for a task: ablate the first
and a second takes over. `backup(saved, adapter)` reruns the unit's own method, settings and seed on the
same task with every node of the saved circuit held at its ablation value (`Problem.allowed`), searches the
smallest circuit of the remaining nodes that meets the same target, and measures it on the test split.
A backup that meets the target with a size near the first circuit's says the first is not unique; one that
misses it (or needs most of the model) says the task goes through the first circuit's nodes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from circuitbench.circuits.ablation import ablation_source
from circuitbench.circuits.evaluate import (
    Ranking,
    calibrated_empty,
    full_model_phase,
    measure_circuit,
    method_phase,
    prepare,
    search_phase,
    unit_ablation_values,
)
from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.methods import get_method
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import ModelAdapter
from circuitbench.results.status import circuit_status, effective_target
from circuitbench.runs.saved import SavedUnit


def backup(saved: SavedUnit, adapter: ModelAdapter, show_progress: bool = False) -> dict[str, Any]:
    """The smallest circuit that meets the unit's target without the saved circuit's nodes (or edges).

    Returns:
        The first circuit's and the backup's sizes, whether the backup met the target, its search loss, and
        its test sufficiency, necessity and faithfulness.

    Raises:
        CircuitbenchError: for a unit that was not pruned, an empty circuit, an imported one (no method to
            rerun), or another model than the unit's.
    """
    u = saved.prov.unit
    if saved.circuit.k == 0:  # the ablated model alone meets the target: nothing to exclude, no backup to find
        raise CircuitbenchError(f"{saved.path}: the circuit is empty (0 {u.level}): the model with every "
                                f"{u.level[:-1]} ablated already meets the target, so there is nothing to exclude "
                                "and no second circuit to look for")
    if u.method == "imported":
        raise CircuitbenchError(f"{saved.path}: an imported circuit; a backup reruns the unit's method, and an "
                                "imported circuit has none. Run a method on the task first (`circuitbench run`)")
    source = ablation_source(u.ablation, adapter, NodeIndex.of(adapter))
    state = prepare(u, adapter, source, show_progress)
    full_test, full_train = full_model_phase(state)
    first = saved.circuit.gates()
    if len(first) != state.problem.size:
        raise CircuitbenchError(f"{saved.path}: the circuit has {len(first)} gates, this model's problem "
                                f"{state.problem.size}; load the model it was found on")
    values = unit_ablation_values(state, source).to(adapter.device)
    allowed = 1.0 - first.to(adapter.device)
    state.problem = dataclasses.replace(state.problem, ablation_values=values, allowed=allowed)
    target = effective_target(u.target_loss, full_train.loss)
    ranking = method_phase(state, get_method(u.method, **u.method_kwargs), None)
    scores = ranking.scores.clone().float()
    scores[first.to(scores.device) > 0.5] = -math.inf  # never kept: the search ranks the other nodes only
    found, gates, calibration = search_phase(state, Ranking(scores, None, None), target)
    gates = state.problem.gate(gates.to(adapter.device))
    sizes = state.problem.circuit_sizes(gates)
    empty = state.problem.scores(state.test, torch.zeros_like(gates))
    suff, nec, _ = measure_circuit(state.problem, state.test, gates, calibration, empty)
    from circuitbench.circuits.metrics import faithfulness

    base = empty if calibration is None else calibrated_empty(state, torch.zeros_like(gates))  # as the evaluator
    test_target = effective_target(u.target_loss, full_test.loss)
    return {"task": u.task, "method": u.method, "level": u.level, "first_nodes": saved.summary.get("nodes"),
            "first_edges": saved.summary.get("edges"), "backup_met_target": found.met_target,
            "backup_status": circuit_status(found.met_target, suff.loss, test_target),
            "backup_nodes": sizes["nodes"], "backup_edges": sizes["edges"], "target_loss": target,
            "test_target_loss": test_target,
            "backup_circuit_loss": found.loss, "backup_sufficiency_loss": suff.loss,
            "backup_sufficiency_accuracy": suff.accuracy, "backup_necessity_loss": nec.loss,
            "backup_faithfulness": faithfulness(suff.logit_diff, full_test.logit_diff, base.logit_diff)}
