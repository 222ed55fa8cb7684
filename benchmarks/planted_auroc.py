"""Known-circuit recovery: each method's node ranking against the planted circuit of the hand-built toy model.

Usage: python benchmarks/planted_auroc.py [--seeds 5]

The toy model (`tests/circuits/toy.py`) has a 4-node circuit that carries the answer and a distractor
that never reaches it. For every method and for task-mean and counterfactual ablation, the AUROC of the
method's scores with the planted nodes as positives (1: every planted node ranked above every other
node; 0.5: chance). `random` is averaged over `--seeds` seeds. The tests hold learned_mask, eap, eap_ig
and activation_patching to >= 0.95 (`tests/circuits/test_attribution.py::test_planted_circuit_auroc`).
The last column ranks edges instead (`--level edges`, task-mean ablation): the planted circuit's 4 weighted
edges against the other edges of the toy's graph (`tests/circuits/test_edge_level.py` holds the same bar).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.circuits.toy

from circuitbench.circuits.ablation import task_mean  # noqa: E402
from circuitbench.circuits.edge_level import EdgeIndex  # noqa: E402
from circuitbench.circuits.masks import NodeIndex  # noqa: E402
from circuitbench.circuits.methods import get_method, method_names  # noqa: E402
from circuitbench.circuits.problem import EdgeProblem, Problem  # noqa: E402
from circuitbench.protocols import Batch  # noqa: E402
from tests.circuits.test_edge_level import PLANTED_EDGES  # noqa: E402
from tests.circuits.toy import PLANTED, toy_adapter, toy_task  # noqa: E402


def auroc(scores: list[float], positives: set[int]) -> float:
    """P(score of a planted node > score of another node), ties counting half."""
    pos = [s for i, s in enumerate(scores) if i in positives]
    neg = [s for i, s in enumerate(scores) if i not in positives]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def main(argv: list[str] | None = None) -> list[dict]:
    """AUROC per method and ablation; prints the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args(argv)
    adapter = toy_adapter()
    index = NodeIndex.of(adapter)
    rows = Batch.of(toy_task(), adapter.device)
    names = [s.name for s in index.sites]
    planted = {index.offsets[names.index(n)] + c for n, c in PLANTED}
    out = []
    for name in method_names():
        rec = {"method": name}
        for cf in (False, True):
            p = Problem(adapter, index, task_mean(adapter, index, rows), rows, 0, show_progress=False,
                        counterfactual=cf)
            kw = {"steps": 300} if name == "learned_mask" else {}
            seeds = range(args.seeds) if name == "random" else range(1)
            vals = [auroc(get_method(name, **kw).node_scores(dataclasses.replace(p, seed=s)).tolist(), planted)
                    for s in seeds]
            rec["counterfactual" if cf else "task-mean"] = sum(vals) / len(vals)
        rec["edges"] = _edge_auroc(name, args.seeds, adapter, index, rows)
        out.append(rec)
    print(tabulate([[r["method"], f"{r['task-mean']:.3f}", f"{r['counterfactual']:.3f}",
                     "-" if r["edges"] is None else f"{r['edges']:.3f}"] for r in out],
                   headers=["method", "AUROC, task-mean ablation", "AUROC, counterfactual ablation",
                            "AUROC of edges (--level edges)"], tablefmt="github"))
    print(f"\n{index.size} nodes, {len(planted)} planted; {EdgeIndex.of(adapter).size} edges, {len(PLANTED_EDGES)} "
          f"planted; random: mean of {args.seeds} seeds; -: the method scores nodes only")
    return out


def _edge_auroc(name: str, seeds: int, adapter, index, rows) -> float | None:
    """The method's AUROC over the toy's edges, the planted circuit's edges positive (None: nodes only)."""
    if name == "magnitude":
        return None
    edges = EdgeIndex.of(adapter)
    names = [s.name for s in index.sites]
    planted = {i for i, (a, b, c, d) in enumerate(edges.layout().tolist())
               if (names[a], b, names[c], d) in PLANTED_EDGES}
    p = EdgeProblem(adapter, index, task_mean(adapter, edges.values, rows), rows, 0, show_progress=False, edges=edges)
    kw = {"steps": 300} if name == "learned_mask" else {}
    vals = [auroc(get_method(name, **kw).node_scores(dataclasses.replace(p, seed=s)).tolist(), planted)
            for s in (range(seeds) if name == "random" else range(1))]
    return sum(vals) / len(vals)


if __name__ == "__main__":
    main()
