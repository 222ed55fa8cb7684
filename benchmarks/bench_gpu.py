"""The pruning loop at the scale of openai/circuit-sparsity, on a random-weight model of the same shape.

Usage: python benchmarks/bench_gpu.py [--shape paper|tiny] [--device auto] [--dtype bfloat16|float32]
       [--steps 100] [--task with_as] [--batch-pairs 32] [--json FILE]

`--shape paper` is the released model's shape: 8 layers, d_model 2048, 128 heads x d_head 16, d_mlp
8192, vocabulary 2048, attention sink, bigram table, AbsTopK 0.25 at the eight node sites (its weights
are random, 1/1000 nonzero as in the paper's sparsest models; the kernels are dense, so the sparsity
does not change the time). `--shape tiny` is a 2 x 64 model of the same kind, for the CPU test that keeps
this script working. Measured, in this order:

1. a plain forward and backward (task loss at the answer positions, gradients into every weight) and a
   learned-mask pruning step (gated forward, gradients into the thresholds only) on the same batch,
   interleaved; the ratio of their medians is the overhead of pruning;
2. one task's learned mask (`--steps` steps of `--batch-pairs` pairs) and its bisection on 512 train
   examples, each timed (on CUDA after a synchronize);
3. peak memory (CUDA: `max_memory_allocated`; CPU: the process's peak resident set).

Everything is printed as a table, and written as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

import circuitbench
from circuitbench.circuits.masks import NodeIndex, gate_hook, keep_top
from circuitbench.circuits.methods import get_method
from circuitbench.circuits.methods.learned_mask import hard_gate
from circuitbench.circuits.metrics import answer_logits, task_loss
from circuitbench.circuits.problem import Problem, search_subset
from circuitbench.circuits.search import smallest_k
from circuitbench.hardware import autocast, resolve_precision
from circuitbench.models.config import GPTConfig
from circuitbench.models.native import SparseGPTAdapter, resolve_device
from circuitbench.models.sparse_gpt import SparseGPT
from circuitbench.protocols import Batch, forward_at
from circuitbench.tasks.encode import encode_task
from circuitbench.tasks.load import get_task

LOCS = "attn_in,attn_out,mlp_in,mlp_out,attn_q,attn_k,attn_v,mlp_neuron"
SHAPES = {
    "paper": dict(n_layer=8, d_model=2048, n_head=128, d_head=16, d_mlp=8192),
    "tiny": dict(n_layer=2, d_model=64, n_head=4, d_head=16, d_mlp=256),
}


def random_sparse_gpt(shape: str, density: float, seed: int = 0) -> SparseGPT:
    """A SparseGPT of the named shape with random weights, `density` of each matrix nonzero."""
    cfg = GPTConfig(block_size=256, vocab_size=2048, rms_norm=True, sink=True, enable_bigram_table=True,
                    tied_unembed=False, afrac=0.25, afrac_loctypes=LOCS, **SHAPES[shape])
    torch.manual_seed(seed)
    model = SparseGPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "wte" not in name and "lm_head" not in name:
                p.mul_(torch.rand_like(p) < density).mul_(1 / max(density, 1e-3) ** 0.5)
        model.transformer.wpe.weight.zero_()
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Any, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurements; print them and return them."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="paper")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                    help="model weights (default: bfloat16 on CUDA, float32 on CPU)")
    ap.add_argument("--steps", type=int, default=100, help="learned-mask steps for the task")
    ap.add_argument("--batch-pairs", type=int, default=32)
    ap.add_argument("--reps", type=int, default=10, help="interleaved repetitions of the step comparison")
    ap.add_argument("--task", default="with_as")
    ap.add_argument("--density", type=float, default=1e-3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    precision = resolve_precision("auto", device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tokenizer = circuitbench.load_model("tiny-sparse", device="cpu").tokenizer  # tinypython_2k, as the paper's
    model = random_sparse_gpt(args.shape, args.density).to(device=device, dtype=dtype)
    adapter = SparseGPTAdapter(model, tokenizer, f"random-{args.shape}")
    index = NodeIndex.of(adapter)
    train = Batch.of(encode_task(get_task(args.task), tokenizer, "train"), device)
    ablation = torch.zeros(index.value_size, device=device)
    problem = Problem(adapter, index, ablation, train, 0, show_progress=False, eval_batch=128)
    rows = search_subset(train, 2 * args.batch_pairs, 0)
    tau = torch.full((index.size,), 0.1, device=device, requires_grad=True)

    def plain() -> None:  # what training does: the loss at the answer positions, gradients for every weight
        model.requires_grad_(True)
        with autocast(precision, device):
            logits = forward_at(adapter, rows.tokens, None, rows.last)
        task_loss(answer_logits(logits, rows)).mean().backward()
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)

    def prune() -> None:  # one learned-mask step: gated forward, gradients for the thresholds only
        gates = hard_gate(tau, 0.1)
        with autocast(precision, device):
            logits = forward_at(adapter, rows.tokens, gate_hook(index, gates, ablation), rows.last)
        (task_loss(answer_logits(logits, rows)).mean() + 1e-4 * gates.sum()).backward()
        tau.grad = None

    plain(), prune()  # warm-up
    t_plain, t_prune = [], []
    for _ in range(args.reps):
        t_plain.append(_timed(plain, device))
        t_prune.append(_timed(prune, device))
    method = get_method("learned_mask", steps=args.steps, batch_pairs=args.batch_pairs)
    scores: list[torch.Tensor] = []
    mask_s = _timed(lambda: scores.append(method.node_scores(problem)), device)
    search_rows = search_subset(train, 512, 0)
    found: list[Any] = []
    search_s = _timed(lambda: found.append(smallest_k(
        lambda k: problem.scores(search_rows, keep_top(scores[0], k)).loss, index.size, 0.15,
        method.native_k)), device)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    out = {
        "shape": args.shape, "config": SHAPES[args.shape], "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."), "precision": precision, "nodes": index.size,
        "batch": f"{2 * args.batch_pairs} x {rows.tokens.shape[1]} tokens",
        "plain_step_ms": 1e3 * statistics.median(t_plain), "prune_step_ms": 1e3 * statistics.median(t_prune),
        "prune_over_plain": statistics.median(t_prune) / statistics.median(t_plain),
        "mask_steps": args.steps, "mask_s": mask_s, "mask_step_ms": 1e3 * mask_s / args.steps,
        "search_s": search_s, "search_evaluations": found[0].evaluations, "circuit_nodes": found[0].k,
        "peak_memory_gib": peak / 2**30, "torch": torch.__version__,
    }
    print(tabulate([[k, f"{v:.3f}" if isinstance(v, float) else v] for k, v in out.items()], tablefmt="github",
                   headers=["measurement", "value"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
