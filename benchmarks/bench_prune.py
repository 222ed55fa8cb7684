"""Pruning-step cost relative to a plain forward+backward of the same model and batch.

Usage: python benchmarks/bench_prune.py [--model NAME|DIR] [--batch-pairs 64] [--seq 96] [--reps 20]

Both timings are taken in the same process, on the same inputs, interleaved, so the ratio is robust to
machine load; the floor is about 1.0 (a pruning step is a forward and a backward, plus the gating).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import circuitbench
from circuitbench.circuits.masks import NodeIndex, gate_hook
from circuitbench.circuits.methods.learned_mask import hard_gate
from circuitbench.circuits.metrics import answer_logits, task_loss
from circuitbench.protocols import Batch


def main() -> None:
    """Time both steps and print the ratio."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" /
                                           "fixture-sparse-sink-bigram"))
    ap.add_argument("--batch-pairs", type=int, default=64)
    ap.add_argument("--seq", type=int, default=60)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    adapter = circuitbench.load_model(args.model, device="cpu")
    vocab = adapter.config.vocab_size
    seq = min(args.seq, adapter.config.block_size)
    gen = torch.Generator().manual_seed(0)
    n = 2 * args.batch_pairs
    rows = Batch(torch.randint(0, vocab, (n, seq), generator=gen), torch.full((n,), seq - 1),
                torch.randint(0, vocab, (n,), generator=gen), torch.randint(0, vocab, (n,), generator=gen))
    index = NodeIndex.of(adapter)
    ablation = torch.zeros(index.size)
    tau = (0.1 + 0.01 * torch.randn(index.size, generator=gen)).requires_grad_()
    model = adapter.model

    def plain() -> None:  # what training does: loss at the same positions, gradients for all weights
        model.requires_grad_(True)
        loss = task_loss(answer_logits(model(rows.tokens, None, rows.last), rows)).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)

    def prune() -> None:  # one learned-mask step: gated forward, gradients for the thresholds only
        gates = hard_gate(tau, 0.1)
        logits = adapter.forward(rows.tokens, gate_hook(index, gates, ablation), at=rows.last)
        (task_loss(answer_logits(logits, rows)).mean() + 1e-4 * gates.sum()).backward()
        tau.grad = None

    for f in (plain, prune):
        f()
    t_plain, t_prune = [], []
    for _ in range(args.reps):
        for f, acc in ((plain, t_plain), (prune, t_prune)):
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    mp, mq = statistics.median(t_plain), statistics.median(t_prune)
    print(f"model={args.model} nodes={index.size} batch={n}x{seq} threads={args.threads}")
    print(f"plain forward+backward: {mp * 1e3:.1f} ms   pruning step: {mq * 1e3:.1f} ms   ratio: {mq / mp:.2f}")


if __name__ == "__main__":
    main()
