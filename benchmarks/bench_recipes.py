"""Shorter learned-mask schedules against today's 400 steps: circuit size and held-out loss per task.

Usage: python benchmarks/bench_recipes.py [--model tiny-sparse] [--tasks T1,T2] [--recipes NAME,...]
       [--threads 2] [--json FILE]

Every recipe prunes each task once (one unit, without the control: a task's mask trains exactly as it
would beside its control) through the real `circuitbench run` path, in one process on one machine, so the
rows compare with each other (the machines' CPU kinds round differently; compare within a run). Per task
and recipe: wall time, nodes, edges and the held-out (test split) sufficiency loss; at the end, per recipe,
the nodes' ratio to the first recipe's (geometric mean and worst task) and how many tasks keep their
size within 10% and their held-out loss no worse.

The recipes are the levers named for a faster pruned task: fewer steps at a higher learning rate, a mask
warm-started from an attribution ranking (`init eap`), and a stronger size penalty.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

import circuitbench
from circuitbench.runs.runner import RunConfig, resolve_tasks, run

RECIPES: dict[str, dict[str, Any]] = {
    "default: 400 steps": {},
    "200 steps at lr 6e-3": {"steps": 200, "lr": 6e-3},
    "200 steps warm-started (top 256 by EAP)": {"steps": 200, "init": "eap", "warm_keep": 256},
    "200 steps at k_coef 3e-4": {"steps": 200, "k_coef": 3e-4},
    "200 steps at k_coef 1e-3": {"steps": 200, "k_coef": 1e-3},
}
SOLVED = "else_elif,for_while,if_equals,indent_for,lambda_func,single_double_quote,while_return_true"


def main() -> None:
    """Prune every task under every recipe; print the table (markdown) and the summary per recipe."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-sparse")
    ap.add_argument("--tasks", default=SOLVED, help="comma-separated (default: the 7 tasks tiny-sparse solves)")
    ap.add_argument("--recipes", default=",".join(RECIPES),
                    help="comma-separated names from RECIPES (the first is the one the others are compared with)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    adapter = circuitbench.load_model(args.model, device="cpu")
    tasks = resolve_tasks(args.tasks.split(","))
    names = args.recipes.split(",")
    rows: list[dict[str, Any]] = []
    for name in names:
        for task in tasks:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = RunConfig(model=args.model, tasks=[task], method_kwargs=RECIPES[name], control=False,
                                out=Path(tmp), show_progress=False)
                t0 = time.perf_counter()
                s = run(cfg, adapter)[0]
                wall = time.perf_counter() - t0
            rows.append(dict(recipe=name, task=task, wall_s=wall, status=s["status"], nodes=s["nodes"],
                             edges=s["edges"], sufficiency_loss=s["sufficiency_loss"]))
            print(json.dumps(rows[-1]), flush=True)
    base = {r["task"]: r for r in rows if r["recipe"] == names[0]}
    table = [[r["task"], r["recipe"], f"{r['wall_s']:.0f}", r["nodes"], r["edges"], f"{r['sufficiency_loss']:.3f}"]
             for r in sorted(rows, key=lambda r: (r["task"], names.index(r["recipe"])))]
    print(tabulate(table, headers=["task", "recipe", "wall s", "nodes", "edges", "test sufficiency loss"],
                   tablefmt="github"))
    summary = []
    for name in names:
        mine = [r for r in rows if r["recipe"] == name and r["task"] in base and base[r["task"]]["nodes"]]
        ratios = [r["nodes"] / base[r["task"]]["nodes"] for r in mine]
        same = sum(abs(x - 1) <= 0.10 and r["sufficiency_loss"] <= base[r["task"]]["sufficiency_loss"] + 1e-6
                   for x, r in zip(ratios, mine, strict=True))
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else math.nan
        summary.append([name, f"{sum(r['wall_s'] for r in mine):.0f}", f"{geo:.2f}x",
                        f"{max(ratios, default=math.nan):.2f}x", f"{same} / {len(mine)}"])
    print()
    print(tabulate(summary, headers=["recipe", "wall s (all tasks)", "nodes vs first (geo. mean)", "worst task",
                                     "tasks within 10% and no worse held out"], tablefmt="github"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
