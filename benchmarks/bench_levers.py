"""What each lever of the fast pruning path buys: learned-mask time per step, cumulative, same run.

Usage: python benchmarks/bench_levers.py [--model tiny-sparse] [--task with_as] [--steps 24] [--threads 2]

Each configuration trains the masks of one task and its inverted-label control for `--steps` steps (the
real `LearnedMask` code) and reports the seconds per step of the pair, median of `--reps` runs, as a ratio
against the first configuration (the previous path), measured in the same process:

1. previous path: float32, 64 pairs per step, one padded batch, the last block at every position,
   task and control trained one after the other;
2. + the last block at the answer position only (`forward_at`);
3. + two sub-batches of similar prompt length per step;
4. + bfloat16 autocast (`--precision auto`, where the CPU has AMX/AVX512-BF16);
5. + 32 pairs per step (the default; the paper uses 64);
6. + task and control side by side in one batch (`joint_scores`): today's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from bench_run import FullForward  # benchmarks/ is on the path when run as a script
from tabulate import tabulate

import circuitbench
from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.methods import get_method
from circuitbench.circuits.problem import Problem
from circuitbench.protocols import Batch
from circuitbench.tasks.encode import encode_task
from circuitbench.tasks.load import get_task


def main() -> None:
    """Time every configuration; print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-sparse")
    ap.add_argument("--task", default="with_as")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    adapter = circuitbench.load_model(args.model, device="cpu")
    index = NodeIndex.of(adapter)
    train = Batch.of(encode_task(get_task(args.task), adapter.tokenizer, "train"), adapter.device)
    values = torch.zeros(index.value_size)
    steps = [
        ("previous path (float32, 64 pairs, one padded batch, full last block, control after task)",
         dict(precision="float32", batch_pairs=64, length_groups=1), False, False),
        ("+ last block at the answer position only", dict(precision="float32", batch_pairs=64, length_groups=1),
         True, False),
        ("+ two length groups per step", dict(precision="float32", batch_pairs=64, length_groups=2), True, False),
        ("+ bfloat16 autocast (auto)", dict(precision="auto", batch_pairs=64, length_groups=2), True, False),
        ("+ 32 pairs per step", dict(precision="auto", batch_pairs=32, length_groups=2), True, False),
        ("+ task and control in one batch (today's default)", {}, True, True),
    ]
    rows, base = [], None
    for label, kwargs, answer_only, joint in steps:
        model = adapter if answer_only else FullForward(adapter)
        problem = Problem(model, index, values, train, 0, show_progress=False)  # type: ignore[arg-type]
        control = dataclasses.replace(problem, train=train.swapped())
        method = get_method("learned_mask", steps=args.steps, **kwargs)
        times = []
        for _ in range(args.reps + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            if joint:
                method.joint_scores([problem, control])
            else:
                method.node_scores(problem)
                method.node_scores(control)
            times.append((time.perf_counter() - t0) / args.steps)
        per_step = statistics.median(times[1:])
        base = base or per_step
        rows.append([label, f"{1e3 * per_step:.0f}", f"{base / per_step:.2f}x"])
    print(f"model {args.model}, task {args.task} ({len(train)} train examples), {args.threads} threads, "
          f"torch {torch.__version__}; one step = the task's mask and its control's\n")
    print(tabulate(rows, headers=["configuration (cumulative)", "ms per step", "speed-up"], tablefmt="github"))


if __name__ == "__main__":
    main()
