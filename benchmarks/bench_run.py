"""The whole default `circuitbench run`: wall time, what dominates it, and its cost per solved task.

Usage: python benchmarks/bench_run.py [--model NAME|DIR] [--tasks all] [--threads 2] [-- extra run flags]

Runs `circuitbench run` in-process into a fresh temporary `--out` (nothing cached but the corpus-mean
ablation, which is keyed by model and corpus and lives in $CIRCUITBENCH_CACHE; pass --cold to time its
computation too), then reads the per-phase wall times every unit records (`time.<phase>_s` measurements)
and prints them as shares of the whole. The baseline measured in the same run is a plain evaluation of
the full model on every task's test split (the least any run does): the ratio says what circuit search
and measurement cost on top of it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import torch
from tabulate import tabulate

import circuitbench
from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.problem import Problem
from circuitbench.protocols import Batch
from circuitbench.results.store import unit_files
from circuitbench.runs.runner import RunConfig, resolve_tasks, run
from circuitbench.tasks.encode import encode_task
from circuitbench.tasks.load import get_task


def main() -> None:
    """Time the run and its phases; print markdown tables for BENCHMARKS.md."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-sparse")
    ap.add_argument("--tasks", default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="learned-mask steps (default: the method's)")
    ap.add_argument("--patience", type=int, default=None, help="learned-mask patience (default: the method's)")
    ap.add_argument("--cold", action="store_true", help="also time the corpus-mean ablation (fresh cache)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
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

        kwargs = {k: v for k, v in (("steps", args.steps), ("patience", args.patience)) if v is not None}
        cfg = RunConfig(model=args.model, tasks=args.tasks.split(","), out=Path(tmp) / "out", show_progress=False,
                        method_kwargs=kwargs)
        t0 = time.perf_counter()
        summaries = run(cfg, adapter)
        run_s = time.perf_counter() - t0

        phases: dict[str, float] = defaultdict(float)
        for unit in unit_files(Path(tmp) / "out"):
            table = pq.read_table(unit).to_pylist()
            for row in table:
                if row["metric"].startswith("time_"):
                    phases[row["metric"][5:-2]] += row["value"]
    solved = [s for s in summaries if s["status"] != "unsolved"]
    print(f"model {args.model}, {len(summaries)} tasks, {len(solved)} pruned, {args.threads} threads, "
          f"torch {torch.__version__}\n")
    rows = [["load model", load_s, ""], ["baseline: full-model evaluation of every task", baseline_s, ""],
            ["circuitbench run (everything below)", run_s, f"{run_s / baseline_s:.1f}x baseline"]]
    rows += [[f"  {k}", v, f"{100 * v / run_s:.0f}%"] for k, v in sorted(phases.items(), key=lambda kv: -kv[1])]
    other = run_s - sum(phases.values())
    rows.append(["  other (encoding tasks, writing Parquet)", other, f"{100 * other / run_s:.0f}%"])
    print(tabulate(rows, headers=["phase", "seconds", "share"], tablefmt="github", floatfmt=".1f"))
    if solved:
        print(f"\nper pruned task: {(run_s - phases.get('full_model', 0.0)) / len(solved):.1f} s")


if __name__ == "__main__":
    main()
