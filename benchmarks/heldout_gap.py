"""Why circuits miss the held-out pairs: the same ranking under other ablation values, searched again.

Usage: python benchmarks/heldout_gap.py [--units FILE ...] [--threads 2] [--json FILE]

For each committed unit (default: every node- and edge-level unit under baselines/ whose status is
`train_only`, then tiny-sparse's `solved` learned-mask units for comparison), the unit's own ranking
(the saved circuit's scores) is searched again by the evaluator's bisection on the search pairs, with pruned
nodes (or edges' sources) taking their values from:

- `corpus`: the mean over pretraining-corpus windows (`--ablation mean`, the board's protocol);
- `task-train`: the mean over the task's train split (`--ablation task-mean`);
- `task-test`: the mean over the test split itself, a diagnostic only (a search may never look at the test
  split): it says how much of the gap is the ablation values' distribution, not the circuit;
- `zero`.

Per unit and source: the smallest circuit meeting the target on the search pairs, its test sufficiency loss
against the test target, and the committed circuit's own test loss under that source. The ranking stays the
same, so only the values pruned nodes take change; a method retrained under each source is another
experiment (`circuitbench run --ablation`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("corpus", "task-train", "task-test", "zero")


def _values(state: Any, adapter: Any, source: str) -> torch.Tensor:
    from circuitbench.circuits.ablation import ablation_source
    from circuitbench.circuits.masks import NodeIndex
    from circuitbench.circuits.problem import EdgeProblem

    kind = {"corpus": "mean", "task-train": "task-mean", "task-test": "task-mean", "zero": "zero"}[source]
    # the edge level ablates the attention's head-mixed values too: a source over the edge graph's wider layout
    # (the evaluator's `unit_ablation_values` takes the unit's own kind there, so it is not used here)
    index = state.problem.graph.values if isinstance(state.problem, EdgeProblem) else NodeIndex.of(adapter)
    return ablation_source(kind, adapter, index).values(state.test if source == "task-test" else state.train)


def measure(path: Path, adapters: dict[str, Any]) -> list[dict[str, Any]]:
    """Every source's search on one unit's saved ranking."""
    from circuitbench.circuits.ablation import ablation_source
    from circuitbench.circuits.evaluate import full_model_phase, prepare
    from circuitbench.circuits.masks import NodeIndex, keep_top
    from circuitbench.circuits.search import smallest_k
    from circuitbench.results.status import effective_target
    from circuitbench.runs.saved import load_saved

    saved = load_saved(path)
    u = saved.prov.unit
    if u.model.name not in adapters:
        import circuitbench

        adapters[u.model.name] = circuitbench.load_model(u.model.name, device="cpu")
    adapter = adapters[u.model.name]
    state = prepare(u, adapter, ablation_source(u.ablation, adapter, NodeIndex.of(adapter)))
    full_test, full_train = full_model_phase(state)
    target, test_target = effective_target(u.target_loss, full_train.loss), effective_target(u.target_loss,
                                                                                            full_test.loss)
    scores, base = saved.circuit.scores, state.problem
    rows = []
    for source in SOURCES:
        t0 = time.perf_counter()
        problem = dataclasses.replace(base, ablation_values=_values(state, adapter, source).to(adapter.device))
        found = smallest_k(lambda k, p=problem: p.scores(state.search_rows, keep_top(scores, k)).loss,
                           problem.size, target)
        rows.append({
            "model": u.model.name, "task": u.task, "method": u.method, "level": u.level,
            "status": saved.summary["status"],
            "unit_ablation": u.ablation, "source": source, "size": found.k, "met": found.met_target,
            "test_loss": problem.scores(state.test, keep_top(scores, found.k)).loss,
            "committed_size": saved.circuit.k,
            "committed_test_loss": problem.scores(state.test, keep_top(scores, saved.circuit.k)).loss,
            "test_target": test_target, "wall_s": round(time.perf_counter() - t0, 1)})
    return rows


def default_units() -> list[Path]:
    """Every committed `train_only` unit, then tiny-sparse's `solved` learned-mask units for comparison."""
    from circuitbench.results.store import read_unit, unit_files

    missed, held = [], []
    for folder in ("results", "results-edges"):
        for path in unit_files(REPO / "baselines" / folder):
            summary, prov = read_unit(path)[1:]
            if summary["status"] == "train_only" and prov.unit.ablation != "counterfactual":
                missed.append(path)
            elif (summary["status"] == "solved" and prov.unit.method == "learned_mask" and folder == "results"
                  and prov.unit.model.name == "tiny-sparse"):
                held.append(path)
    return sorted(missed) + sorted(held)


def main() -> None:
    """Measure the units, print a markdown table, write JSON rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", nargs="*", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    adapters: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for path in args.units or default_units():
        rows += measure(path, adapters)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    cols = ["model", "task", "method", "level", "status", "source", "size", "test_loss", "test_target",
            "committed_size", "committed_test_loss"]
    print(tabulate([{c: r[c] for c in cols} for r in rows], headers="keys", tablefmt="github", floatfmt=".3f"))


if __name__ == "__main__":
    main()
