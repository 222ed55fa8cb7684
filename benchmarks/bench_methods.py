"""Each circuit-finding method's wall time per task, relative to one forward and backward pass, in one run.

Usage: python benchmarks/bench_methods.py [--model tiny-sparse] [--tasks with_as,single_double_quote,while_return_true]
                                           [--ablation mean] [--threads 2] [--method-arg METHOD.KEY=VALUE] [--json PATH]

For every task, the baseline is one forward and backward pass of the gated model (the evaluator's gates,
as `eap` runs them) over 64 rows of the task's train split, median of 5; each method then scores the nodes
once with its default hyperparameters (`node_scores`, what the `method` phase of a unit times), and the
table gives its seconds and their ratio to the baseline, beside the passes the method declares (`cost`).
Everything runs in this process on the same threads, so the ratios are comparable across machines; the
seconds are not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from tabulate import tabulate

import circuitbench
from circuitbench.circuits.ablation import ablation_source
from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.methods import get_method, method_names
from circuitbench.circuits.methods.attribution import _logit_diff
from circuitbench.circuits.problem import Problem
from circuitbench.protocols import Batch
from circuitbench.tasks.encode import encode_task
from circuitbench.tasks.load import get_task


def forward_backward(problem: Problem, rows: Batch, reps: int = 5) -> float:
    """Median seconds of one forward and backward pass of the gated model over `rows`."""
    times = []
    for _ in range(reps + 1):
        gates = torch.ones(problem.index.size, requires_grad=True)
        t0 = time.perf_counter()
        _logit_diff(problem, rows, gates).backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first pass warms up


def main(argv: list[str] | None = None) -> list[dict]:
    """Time every method on every task; print the table (and write JSON with --json); return the records."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-sparse")
    ap.add_argument("--tasks", default="with_as,single_double_quote,while_return_true")
    ap.add_argument("--methods", default=",".join(method_names()))
    ap.add_argument("--ablation", default="mean")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method-arg", action="append", default=[], metavar="METHOD.KEY=VALUE",
                    help="a method's hyperparameter, e.g. activation_patching.max_examples=16")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from circuitbench.cli.run import per_method_args

    per_method = per_method_args(args.method_arg, args.methods.split(","))
    torch.set_num_threads(args.threads)
    adapter = circuitbench.load_model(args.model, device="cpu")
    index = NodeIndex.of(adapter)
    source = ablation_source(args.ablation, adapter, index)
    rows, out = [], []
    for task in args.tasks.split(","):
        train = Batch.of(encode_task(get_task(task), adapter.tokenizer, "train"), adapter.device)
        problem = Problem(adapter, index, source.values(train), train, 0, show_progress=False,
                          counterfactual=args.ablation == "counterfactual")
        base = forward_backward(problem, train.take(torch.arange(min(64, len(train)))))
        for name in args.methods.split(","):
            method = get_method(name, **per_method[name])
            t0 = time.perf_counter()
            method.node_scores(problem)
            s = time.perf_counter() - t0
            cost = method.cost(len(train), index.size)
            rec = {"task": task, "method": name, "hyperparameters": per_method[name],
                   "seconds": s, "fwd_bwd_s": base, "ratio": s / base,
                   "forward_passes": cost["forward"], "backward_passes": cost["backward"],
                   "train_examples": len(train), "nodes": index.size}
            out.append(rec)
            rows.append([task, name, f"{s:.2f}", f"{base * 1000:.1f}", f"{s / base:.1f}",
                         f"{cost['forward']} / {cost['backward']}"])
            print(f"{task} {name}: {s:.2f} s ({s / base:.1f}x one fwd+bwd)", flush=True)
    print()
    print(tabulate(rows, headers=["task", "method", "seconds", "fwd+bwd of 64 rows (ms)", "x fwd+bwd",
                                  "declared passes (fwd / bwd)"], tablefmt="github"))
    print(f"\n{args.model}, {index.size} nodes, {args.ablation} ablation, {args.threads} threads, torch "
          f"{torch.__version__}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
