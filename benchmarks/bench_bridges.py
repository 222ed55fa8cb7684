"""What bridges cost: one training step, and one steer, against a plain forward and backward pass.

    python benchmarks/bench_bridges.py [--bridges tiny] [--batch 8] [--ctx 128] [--reps 5] [--threads 2]
                                       [--unit UNIT] [--json runs/bench_bridges.json]

In one process, on the bundled reference models: the baseline is one forward and backward pass of the
sparse model on a batch of random token windows; then one bridge training step on the same batch (both
models' residuals, the four losses at every location, backward into the maps; `--bridge-to`'s joint step
adds the sparse model's own gradients to that), and one `bridge steer` of a saved circuit (UNIT, default:
tiny-sparse's quote circuit; every intervention, both models, the random control). Prints a table with the
ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "baselines/results/tiny-sparse/single_double_quote.learned_mask.seed0.parquet"


def _best(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> list[dict]:
    """Time the baseline, a bridge step and a steer; print the table and return its rows."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bridges", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--unit", type=Path, default=UNIT)
    p.add_argument("--controls", type=int, default=8)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from tabulate import tabulate

    from circuitbench.bridges.bridge import load_bridged_models, load_bridges
    from circuitbench.bridges.losses import bridge_losses
    from circuitbench.bridges.steer import steer
    from circuitbench.runs.saved import load_saved

    torch.set_num_threads(args.threads)
    files = load_bridges(args.bridges)
    dense, sparse = load_bridged_models(files, None, None)
    bridges = files.bridges.requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, sparse.tokenizer.vocab_size, (args.batch, args.ctx), generator=gen)
    model = sparse.model  # the native SparseGPT: its parameters take gradients for the baseline
    model.requires_grad_(True)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()

    base = _best(forward_backward, args.reps)
    model.requires_grad_(False)

    def bridge_step() -> None:
        bridges.zero_grad(set_to_none=True)
        bridge_losses(bridges, dense.forward, sparse.forward, x).total.backward()

    step = _best(bridge_step, args.reps)
    saved = load_saved(args.unit)
    t0 = time.perf_counter()
    res = steer(files.bridges.requires_grad_(False), dense, sparse, saved, controls=args.controls)
    steer_s = time.perf_counter() - t0
    rows = [{"what": "forward+backward, sparse model", "s": base, "x baseline": 1.0},
            {"what": f"bridge training step ({len(bridges.locations)} locations)", "s": step,
             "x baseline": step / base},
            {"what": f"bridge steer {saved.prov.unit.task} ({len(res.rows)} rows, {args.controls} control draws)",
             "s": steer_s, "x baseline": steer_s / base}]
    print(f"batch {args.batch} x {args.ctx} tokens, {args.threads} threads, best of {args.reps}")
    print(tabulate(rows, headers="keys", floatfmt=".3f"))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
