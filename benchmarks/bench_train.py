"""Training speed: the float32 path of the previous release against today's fast path, in one run.

The baseline is the previous trainer exactly: float32 matrix products and AbsTopK as
`zeros.scatter(idx, x.gather(idx))` (kept here as `abs_topk_scatter`). The fast path is what
`circuitbench train` does today with `--precision auto` on these CPUs: bfloat16 autocast for the
forward and backward matrix products (float32 master weights, optimizer state, L0 projection and loss)
and the mask-multiply AbsTopK. Optionally a third variant adds `torch.compile` (`--compile`), its
compile time reported separately, so you can see whether it pays for a run of a given length.

For each shape, both paths train a weight-sparse model from the same seed on the same real token
batches for N steps (past the L0 anneal's start, so the projection runs every step). Reported per
path: median step time, tokens/s, the speed-up over the baseline, and the training loss averaged over
the last steps. The two losses must agree within bfloat16 noise (the run prints their difference).

    python benchmarks/bench_train.py --steps 30 --threads 2
    python benchmarks/bench_train.py --shapes 2x128,4x256 --steps 30 --threads 2 --corpus pypi
    python benchmarks/bench_train.py --shapes 2x128 --batch-size 16 --steps 20 --profile  # where a step goes

`--profile` times the fast path's step in its phases (forward and loss, backward, gradient normalisation,
optimizer, top-|w| projection) and prints torch.profiler's most expensive operators with their shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from circuitbench.models import sparse_gpt
from circuitbench.train import recipe
from circuitbench.train.loop import TrainConfig, _build, resolve_precision, train_step


def abs_topk_scatter(x: torch.Tensor, k: int) -> torch.Tensor:
    """The previous release's AbsTopK (the baseline)."""
    if k >= x.shape[-1]:
        return x
    idx = x.abs().topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


@contextlib.contextmanager
def baseline_topk() -> Iterator[None]:
    """Run with the scatter AbsTopK in place of today's."""
    fast = sparse_gpt.abs_topk
    sparse_gpt.abs_topk = abs_topk_scatter
    try:
        yield
    finally:
        sparse_gpt.abs_topk = fast


def batches(corpus: str | None, n: int, batch_size: int, ctx: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """N real training batches (seeded) from a cached corpus, or random tokens without one."""
    gen = torch.Generator().manual_seed(0)
    if corpus is None:
        out = []
        for _ in range(n):
            w = torch.randint(0, 2048, (batch_size, ctx + 1), generator=gen)
            out.append((w[:, :-1], w[:, 1:]))
        return out
    from circuitbench.train.data import prepare_data, sample_batch
    from circuitbench.train.loop import _cache_dir

    data, _ = prepare_data(_cache_dir(TrainConfig(out_dir=Path("unused"))), corpus, 2048,
                           TrainConfig.model_fields["tokenizer_bytes"].default)
    return [sample_batch(data.train, batch_size, ctx, gen) for _ in range(n)]


def measure(shape: dict, precision: str, baseline: bool, data: list, warmup: int, compile_: bool) -> dict:
    """Train one fresh sparse model over `data`; step times after warmup and the mean final loss."""
    cfg = TrainConfig(out_dir=Path("unused"), precision=precision, **shape)
    model, opt = _build(cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    sparse = recipe.sparsifiable(model)
    compile_s = 0.0
    if compile_:
        t0 = time.perf_counter()
        model.forward = torch.compile(model.forward)  # type: ignore[method-assign]
        x, y = data[0]
        train_step(model, opt, x, y, cfg, 0, params, sparse, resolve_precision(cfg))  # compiles
        compile_s = time.perf_counter() - t0
        model, opt = _build(cfg)  # start the measured run from the same initial state
        model.forward = torch.compile(model.forward)  # type: ignore[method-assign]
        params = [p for p in model.parameters() if p.requires_grad]
        sparse = recipe.sparsifiable(model)
    times, losses = [], []
    ctx = baseline_topk() if baseline else contextlib.nullcontext()
    with ctx:
        for i, (x, y) in enumerate(data):
            t0 = time.perf_counter()
            loss, *_ = train_step(model, opt, x, y, cfg, i + 20, params, sparse, resolve_precision(cfg))
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
            losses.append(float(loss))
    tail = max(1, len(losses) // 5)
    step_s = statistics.median(times)
    return {"step_s": round(step_s, 4), "tok_s": round(shape["batch_size"] * shape["ctx"] / step_s),
            "final_loss": round(statistics.fmean(losses[-tail:]), 4), "compile_s": round(compile_s, 1)}


def profile_step(shape: dict, data: list, warmup: int) -> dict:
    """The fast path's step by phase (ms per step) and torch.profiler's top operators by self time."""
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from circuitbench.hardware import autocast

    cfg = TrainConfig(out_dir=Path("unused"), precision="auto", **shape)
    model, opt = _build(cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    sparse = recipe.sparsifiable(model)
    precision = resolve_precision(cfg)
    density = cfg.weight_density
    for i, (x, y) in enumerate(data[:warmup]):
        train_step(model, opt, x, y, cfg, i + 20, params, sparse, precision)
    phases = dict.fromkeys(("forward and loss", "backward", "gradient normalisation", "optimizer", "projection"), 0.0)
    timed = data[warmup:]
    for x, y in timed:  # train_step's work, split where it can be timed
        marks = [time.perf_counter()]
        with autocast(precision):
            logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        marks.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        recipe.normalize_grads_(params)
        marks.append(time.perf_counter())
        opt.step()
        marks.append(time.perf_counter())
        recipe.project_(sparse, density)
        marks.append(time.perf_counter())
        for name, a, b in zip(phases, marks, marks[1:], strict=False):
            phases[name] += b - a
    total = sum(phases.values())
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i, (x, y) in enumerate(timed[:5]):
            train_step(model, opt, x, y, cfg, i + 20, params, sparse, precision)
    ops = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)[:15]
    n = min(5, len(timed))
    return {"precision": precision, "ms_per_step": round(1000 * total / len(timed), 1),
            "phases_ms": {k: round(1000 * v / len(timed), 1) for k, v in phases.items()},
            "top_ops": [{"op": e.key, "shapes": str(e.input_shapes)[:60],
                         "ms_per_step": round(e.self_cpu_time_total / 1000 / n, 1),
                         "share": round(e.self_cpu_time_total / 1000 / n / (1000 * total / len(timed)), 3)}
                        for e in ops]}


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="2x128,4x256", help="comma-separated LAYERSxD_MODEL")
    ap.add_argument("--steps", type=int, default=30, help="training steps per path and shape")
    ap.add_argument("--warmup", type=int, default=3, help="steps not timed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--density", type=float, default=1 / 8)
    ap.add_argument("--corpus", default=None, help="train on real batches of this corpus (e.g. pypi)")
    ap.add_argument("--compile", action="store_true", help="also measure the fast path under torch.compile")
    ap.add_argument("--profile", action="store_true", help="profile the fast path's step instead (see above)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = batches(args.corpus, args.steps, args.batch_size, args.ctx)
    if args.profile:
        for spec in args.shapes.split(","):
            n_layer, d_model = map(int, spec.lower().split("x"))
            shape = dict(n_layer=n_layer, d_model=d_model, n_head=max(4, d_model // 32), batch_size=args.batch_size,
                         ctx=args.ctx, max_steps=args.steps * 4, weight_density=args.density)
            print(json.dumps({"shape": spec, **profile_step(shape, data, args.warmup)}, indent=1), flush=True)
        return
    results = []
    for spec in args.shapes.split(","):
        n_layer, d_model = map(int, spec.lower().split("x"))
        shape = dict(n_layer=n_layer, d_model=d_model, n_head=max(4, d_model // 32), batch_size=args.batch_size,
                     ctx=args.ctx, max_steps=args.steps * 4, weight_density=args.density)
        row = {"shape": spec, "params": shape}
        row["baseline_float32"] = measure(shape, "float32", True, data, args.warmup, False)
        row["fast"] = measure(shape, "auto", False, data, args.warmup, False)
        row["fast"]["precision"] = resolve_precision(TrainConfig(out_dir=Path("unused")))
        if args.compile:
            row["fast_compiled"] = measure(shape, "auto", False, data, args.warmup, True)
        base = row["baseline_float32"]
        for key in ("fast", "fast_compiled"):
            if key in row:
                row[key]["speedup"] = round(base["step_s"] / row[key]["step_s"], 2)
                row[key]["loss_minus_baseline"] = round(row[key]["final_loss"] - base["final_loss"], 4)
        results.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"threads": args.threads, "steps": args.steps, "corpus": args.corpus,
                      "torch": torch.__version__, "results": results}, indent=2))


if __name__ == "__main__":
    main()
