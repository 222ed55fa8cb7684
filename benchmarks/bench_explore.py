"""What a circuit explorer page costs: measuring a saved circuit's nodes, against one plain forward pass.

    python benchmarks/bench_explore.py UNIT [UNIT ...] [--threads 2] [--json runs/bench_explore.json]

For each unit (a saved circuit of a bundled or local model), in one process: the baseline, one forward pass
of the full model over the task's test split; then `node_data` (the circuit's activations, and each node
ablated alone on the first test pairs) and the page itself. Prints a table and the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("units", type=Path, nargs="+")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import torch
    from tabulate import tabulate

    from circuitbench.circuits.evaluate import encode_unit_task
    from circuitbench.leaderboard.explore import explorer_data, explorer_html
    from circuitbench.protocols import Batch
    from circuitbench.runs.explore import node_data
    from circuitbench.runs.saved import load_saved, load_unit_model

    torch.set_num_threads(args.threads)
    rows = []
    for unit in args.units:
        saved = load_saved(unit)
        adapter = load_unit_model(saved, "cpu")
        test = Batch.of(encode_unit_task(saved.prov.unit, adapter)[1])
        adapter.logits(test.tokens)  # warm-up
        t0 = time.perf_counter()
        adapter.logits(test.tokens)
        forward = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = node_data(saved, adapter)
        measure = time.perf_counter() - t0
        t0 = time.perf_counter()
        html = explorer_html(explorer_data(saved, table), [s.name for s in saved.circuit.sites])
        render = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            from circuitbench.results.nodes import write_node_table

            size = write_node_table(Path(tmp) / "n.parquet", table).stat().st_size
        rows.append({"unit": unit.name, "nodes": saved.circuit.k, "test rows": len(test),
                     "forward s": round(forward, 3), "measure s": round(measure, 2),
                     "x forward": round(measure / forward, 1), "page s": round(render, 2),
                     "page KB": round(len(html.encode()) / 1024), "node table KB": round(size / 1024)})
    print(tabulate(rows, headers="keys", tablefmt="github"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
