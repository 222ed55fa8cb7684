"""Training throughput of weight-sparse vs dense steps at the same shape, and the projection's cost.

Both models are built by `circuitbench.train.loop` and stepped by its `train_step` on the same random
batches, alternating one sparse and one dense step so both see the same machine load (the 2 CPU
cores are shared). The sparse model is measured after the L0 anneal (at the target density), where
every step projects every weight matrix and bias. Reported: median step times, tokens/s, their ratio,
and the projection's share of the sparse step.

    python benchmarks/bench_train.py --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from circuitbench.train import recipe
from circuitbench.train.loop import TrainConfig, _build, train_step


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="measured steps per model")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured steps per model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = dict(d_model=args.d_model, n_layer=args.n_layer, n_head=args.n_head,
                 batch_size=args.batch_size, ctx=args.ctx, max_steps=1000)
    runs = {}
    for dense in (False, True):
        cfg = TrainConfig(out_dir="unused", dense=dense, **shape)
        model, opt = _build(cfg)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        runs[dense] = (cfg, model, opt, params, recipe.sparsifiable(model))
    gen = torch.Generator().manual_seed(0)
    times: dict[bool, list[float]] = {False: [], True: []}
    proj: list[float] = []
    step0 = 600  # past the anneal (ends at 50%): the sparse model is at its target density
    for i in range(args.warmup + args.steps):
        x = torch.randint(0, 2048, (args.batch_size, args.ctx), generator=gen)
        y = torch.randint(0, 2048, (args.batch_size, args.ctx), generator=gen)
        for dense in (False, True):
            cfg, model, opt, params, sparse = runs[dense]
            t0 = time.perf_counter()
            _, _, _, t_proj = train_step(model, opt, x, y, cfg, step0 + i, params, sparse)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times[dense].append(dt)
                if not dense:
                    proj.append(t_proj / dt)
    tokens = args.batch_size * args.ctx
    sparse_s, dense_s = statistics.median(times[False]), statistics.median(times[True])
    print(json.dumps({
        "shape": shape, "threads": args.threads, "steps": args.steps,
        "sparse_step_s": round(sparse_s, 4), "dense_step_s": round(dense_s, 4),
        "sparse_tok_s": round(tokens / sparse_s), "dense_tok_s": round(tokens / dense_s),
        "sparse_over_dense_throughput": round(dense_s / sparse_s, 3),
        "projection_fraction_of_sparse_step": round(statistics.median(proj), 4),
    }, indent=2))


if __name__ == "__main__":
    main()
