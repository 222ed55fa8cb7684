"""The whole default `circuitbench run`, and per task the fast default path against the slow one.

Usage: python benchmarks/bench_run.py [--model NAME|DIR] [--tasks all] [--threads 2] [--no-compare]
       [--json FILE]

1. Baseline: a plain evaluation of the full model on every task's test split (the least any run does).
2. The whole default run (`circuitbench run`'s defaults: learned mask, mean ablation, the control on)
   into a fresh `--out`, timed, with the wall time every unit records per phase (`time_<phase>_s`).
3. `--compare` (on by default): every task the default run pruned is run twice more, one unit each,
   without the control, timed end to end: on the slow path the fast defaults replaced (float32 matrix
   products, one padded batch of 64 pairs per step, the paper's, 400 steps at lr 3e-3, the model's
   last block at every position), and on today's defaults. Per task: wall time, nodes, edges,
   train-split circuit loss against the target, test sufficiency and necessity, the overlap of the two
   node sets, whether the fast circuit is the default run's (where the control trained beside it in
   one batch), and whether the paths agree (both meet the target, fast nodes at most 1.25x slow).

Only the corpus-mean ablation values are cached between runs (keyed by model and corpus, in
$CIRCUITBENCH_CACHE); pass --cold to time their computation too.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from tabulate import tabulate

import circuitbench
from circuitbench.circuits.ablation import ablation_source
from circuitbench.circuits.evaluate import evaluate
from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.problem import Problem
from circuitbench.protocols import Batch
from circuitbench.results.circuit import Circuit, circuit_paths
from circuitbench.results.store import unit_files
from circuitbench.runs.config import make_units, model_ref
from circuitbench.runs.runner import RunConfig, resolve_tasks, run, unit_file
from circuitbench.tasks.encode import encode_task
from circuitbench.tasks.load import get_task

SLOW = {"precision": "float32", "length_groups": 1, "batch_pairs": 64, "steps": 400, "lr": 3e-3, "patience": None}
"""The learned mask before the fast path: 64 pairs per step (the paper's), a fixed 400 steps at lr 3e-3,
float32 matrix products, one padded batch per step."""


class FullForward:
    """The adapter without `answer_only`: every block at every position, as before the fast path."""

    supports_answer_only = False

    def __init__(self, adapter: Any) -> None:
        self._inner = adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def forward(self, tokens: Any, hook: Any = None, at: Any = None) -> Any:
        """The inner adapter's full forward."""
        return self._inner.forward(tokens, hook, at=at)


def _measurements(path: Path) -> dict[str, float]:
    return {r["metric"]: r["value"] for r in pq.read_table(path).to_pylist()}


def _nodes(circuit: Circuit) -> set[int]:
    return set(torch.nonzero(circuit.gates() > 0.5).flatten().tolist())


def main() -> None:
    """Time the default run and its phases, compare the paths; print markdown tables for BENCHMARKS.md."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-sparse")
    ap.add_argument("--tasks", default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compare", dest="compare", action="store_false", help="skip the slow path")
    ap.add_argument("--min-accuracy", type=float, default=0.9,
                    help="prune tasks the full model solves at least this well (lower it to time more tasks)")
    ap.add_argument("--cold", action="store_true", help="also time the corpus-mean ablation (fresh cache)")
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"model": args.model, "threads": args.threads, "torch": torch.__version__,
                              "load_avg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        if args.cold:
            os.environ["CIRCUITBENCH_CACHE"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        adapter = circuitbench.load_model(args.model, device="cpu")
        load_s = time.perf_counter() - t0

        # baseline: the full model on every task's test split, nothing else
        index = NodeIndex.of(adapter)
        t0 = time.perf_counter()
        for task in resolve_tasks(args.tasks.split(",")):
            test = Batch.of(encode_task(get_task(task), adapter.tokenizer, "test"), adapter.device)
            Problem(adapter, index, torch.zeros(index.size), test, 0, False).scores(test, None)
        baseline_s = time.perf_counter() - t0

        out = Path(tmp) / "out"
        cfg = RunConfig(model=args.model, tasks=args.tasks.split(","), out=out, show_progress=False,
                        min_accuracy=args.min_accuracy)
        t0 = time.perf_counter()
        summaries = run(cfg, adapter)
        run_s = time.perf_counter() - t0

        phases: dict[str, float] = defaultdict(float)
        for path in unit_files(out):
            for metric, value in _measurements(path).items():
                if metric.startswith("time_"):
                    phases[metric[5:-2]] += value
        pruned = [s for s in summaries if s["status"] != "unsolved"]
        print(f"model {args.model}, {len(summaries)} tasks, {len(pruned)} pruned (--min-accuracy "
              f"{args.min_accuracy}), {args.threads} threads, "
              f"torch {torch.__version__}, load average before {report['load_avg_before'][0]:.2f}\n")
        rows = [["load model", load_s, ""], ["baseline: full-model evaluation of every task", baseline_s, ""],
                ["circuitbench run, defaults (everything below)", run_s, f"{run_s / baseline_s:.1f}x baseline"]]
        rows += [[f"  {k}", v, f"{100 * v / run_s:.0f}%"] for k, v in sorted(phases.items(), key=lambda kv: -kv[1])]
        other = run_s - sum(phases.values())
        rows.append(["  other (encoding tasks, writing results)", other, f"{100 * other / run_s:.0f}%"])
        print(tabulate(rows, headers=["phase", "seconds", "share"], tablefmt="github", floatfmt=".1f"))
        report.update(load_s=load_s, baseline_s=baseline_s, default_run_s=run_s, phases=dict(phases),
                      pruned=[s["task"] for s in pruned], summaries=summaries)

        if args.compare and pruned:
            report["compare"] = compare(adapter, cfg, pruned, out)
    report["load_avg_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


def compare(adapter: Any, cfg: RunConfig, pruned: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """Each pruned task again on the slow path and on the fast one, both without the control; side by side.

    The fast side is run again without its control (the default run trains the control beside the task
    in one batch, so its time cannot be split); its circuit is checked against the default run's.
    """
    source = ablation_source(cfg.ablation, adapter, NodeIndex.of(adapter))
    tasks = [s["task"] for s in pruned]
    common = dict(model=cfg.model, tasks=tasks, control=False, out=out, show_progress=False,
                  min_accuracy=cfg.min_accuracy)
    ref = model_ref(cfg.model, adapter)
    slow_units = make_units(RunConfig(method_kwargs=SLOW, **common), ref, "float32", "cpu")
    fast_units = make_units(RunConfig(**common), ref, "float32", "cpu")
    run_units = {u.task: u for u in make_units(cfg, ref, "float32", "cpu")}
    table, rows = [], []
    for slow_unit, fast_unit in zip(slow_units, fast_units, strict=True):
        task = slow_unit.task
        t0 = time.perf_counter()
        slow = evaluate(slow_unit, FullForward(adapter), source)  # type: ignore[arg-type]
        slow_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast = evaluate(fast_unit, adapter, source)
        fast_s = time.perf_counter() - t0
        fast_nodes = _nodes(fast.circuit) if fast.circuit is not None else set()
        slow_nodes = _nodes(slow.circuit) if slow.circuit is not None else set()
        in_run = _nodes(Circuit.load(circuit_paths(unit_file(out, run_units[task]))[0]))
        jaccard = len(fast_nodes & slow_nodes) / max(1, len(fast_nodes | slow_nodes))
        ratio = fast.nodes / max(1, slow.nodes)
        agree = slow.status == "solved" and fast.status == "solved" and ratio <= 1.25
        row = dict(task=task, slow_s=slow_s, fast_s=fast_s, speedup=slow_s / fast_s, slow_nodes=slow.nodes,
                   fast_nodes=fast.nodes, nodes_ratio=ratio, slow_edges=slow.edges, fast_edges=fast.edges,
                   target=slow.target_loss, slow_train_loss=slow.circuit_train_loss,
                   fast_train_loss=fast.circuit_train_loss, slow_sufficiency=slow.sufficiency_loss,
                   fast_sufficiency=fast.sufficiency_loss, slow_necessity=slow.necessity_loss,
                   fast_necessity=fast.necessity_loss, node_jaccard=jaccard, agree=agree,
                   same_circuit_as_default_run=in_run == fast_nodes,
                   slow_method_s=slow.metric("time_method_s", ""), fast_method_s=fast.metric("time_method_s", ""))
        rows.append(row)
        table.append([task, f"{slow_s:.0f} / {fast_s:.0f} ({slow_s / fast_s:.1f}x)",
                      f"{slow.nodes} / {fast.nodes} ({ratio:.2f}x)", f"{slow.edges} / {fast.edges}",
                      f"{slow.circuit_train_loss:.3f} / {fast.circuit_train_loss:.3f} (<= {slow.target_loss:.3f})",
                      f"{slow.sufficiency_loss:.3f} / {fast.sufficiency_loss:.3f}",
                      f"{slow.necessity_loss:.2f} / {fast.necessity_loss:.2f}", f"{jaccard:.2f}",
                      "yes" if in_run == fast_nodes else "no", "yes" if agree else "NO"])
    print("\nPer task, slow path / fast path, each one unit without the control, timed end to end:\n")
    print(tabulate(table, headers=["task", "wall s", "nodes", "edges", "train loss (target)", "test sufficiency",
                                   "test necessity", "node overlap (Jaccard)", "= default run's circuit",
                                   "agree"], tablefmt="github"))
    n_agree = sum(r["agree"] for r in rows)
    print(f"\n{n_agree} of {len(rows)} tasks agree (both meet the target, fast nodes <= 1.25x slow).")
    return rows


if __name__ == "__main__":
    main()
