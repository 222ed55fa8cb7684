"""What edge-level gates cost: a gated forward and backward pass over edges against one over nodes.

    python benchmarks/bench_edges.py [--model tiny-sparse] [--batch 64] [--reps 5] [--threads 2]
                                     [--json runs/bench_edges.json]

In one process, on a task's train prompts (if_equals, the model's tokenizer): the baseline is one forward
and backward pass with node gates (`--level nodes`: one multiply-add per site, the gradient reaching every
node's gate); then the same with edge gates (`--level edges`: every linear layer's masked extra product and
every read's residual correction, the gradient reaching every edge's gate, which is one edge-level EAP
batch), and the edge gates without gradients (one evaluation of an edge circuit). Building the edge graph
(`EdgeIndex.of`, once per unit) is timed too. Prints a table with the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _best(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> list[dict]:
    """Time node gates, edge gates with and without gradients, and the graph; print and return the rows."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-sparse")
    p.add_argument("--task", default="if_equals")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import torch
    from tabulate import tabulate

    import circuitbench
    from circuitbench.circuits.edge_level import EdgeIndex
    from circuitbench.circuits.masks import NodeIndex
    from circuitbench.circuits.metrics import answer_logits
    from circuitbench.circuits.problem import EdgeProblem, Problem
    from circuitbench.protocols import Batch
    from circuitbench.tasks.encode import encode_task
    from circuitbench.tasks.load import get_task

    torch.set_num_threads(args.threads)
    adapter = circuitbench.load_model(args.model, device="cpu")
    rows = Batch.of(encode_task(get_task(args.task), adapter.tokenizer, "train"), "cpu")
    rows = rows.take(torch.arange(min(args.batch, len(rows))))
    index = NodeIndex.of(adapter)
    t_graph = _best(lambda: EdgeIndex.of(adapter), args.reps)
    edges = EdgeIndex.of(adapter)
    node = Problem(adapter, index, torch.zeros(index.value_size), rows, 0, False)
    edge = EdgeProblem(adapter, index, torch.zeros(edges.values.value_size), rows, 0, False, edges=edges)

    def backward(problem: Problem) -> None:
        gates = torch.ones(problem.size, requires_grad=True)
        two = answer_logits(problem.logits_at(rows, gates), rows)
        (two[:, 0] - two[:, 1]).sum().backward()

    def forward(problem: Problem) -> None:
        with torch.no_grad():
            problem.logits_at(rows, torch.ones(problem.size))

    base = _best(lambda: backward(node), args.reps)
    out = [{"what": f"node gates ({index.size} nodes), forward + backward", "s": base, "x baseline": 1.0}]
    for what, fn in ((f"edge gates ({edges.size} edges), forward + backward", lambda: backward(edge)),
                     ("edge gates, forward only (one circuit evaluated)", lambda: forward(edge)),
                     ("node gates, forward only", lambda: forward(node)),
                     ("the edge graph (EdgeIndex.of, once per unit)", None)):
        s = t_graph if fn is None else _best(fn, args.reps)
        out.append({"what": what, "s": s, "x baseline": s / base})
    print(tabulate(out, headers="keys", tablefmt="github", floatfmt=".4f"))
    print(f"\n{args.model}, {len(rows)} rows of {args.task} (width {rows.tokens.shape[1]}), {args.threads} threads, "
          f"best of {args.reps}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": out}, indent=1))
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
