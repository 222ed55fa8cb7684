"""What EAP-IG's own `Graph.prune()` (which its `evaluate_graph` runs first) does to circuitbench's MIB exports.

Usage: python benchmarks/mib_prune.py [--units GLOB ...] [--json FILE]

For each committed unit (default: every pruned unit of tiny-sparse under baselines/results and
baselines/results-edges), `circuit export --format mib` writes the file, EAP-IG's `Graph.from_json` reads it (the
code MIB's circuit track uses, from ../shared/peers/eap, never copied here), and `prune()` removes every node
without an incoming or an outgoing edge in the graph and every edge whose parent or child it removed. The table
says how many of the exported nodes and edges survive, and what the input node's neurons are after loading
(EAP-IG corrupts the neurons of a node that is not fully in the graph).

This is a statement about the graph EAP-IG would evaluate, not a new measurement of the circuit: circuitbench's
own numbers are measured on the channel-level circuit (node level: every kept channel, whatever its edges).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers"
DEFAULT = ("baselines/results/tiny-sparse/*.parquet", "baselines/results-edges/tiny-sparse/*.parquet")


def eap_graph_class() -> Any:
    """EAP-IG's `Graph`, imported from the workplace's shared peers."""
    if not (PEERS / "eap" / "graph.py").is_file():
        sys.exit(f"EAP-IG's graph code is expected at {PEERS / 'eap'}")
    sys.path.insert(0, str(PEERS))
    try:
        from eap.graph import Graph
    finally:
        sys.path.remove(str(PEERS))
    return Graph


def measure(unit: Path, graph_class: Any, tmp: Path) -> dict[str, Any] | None:
    """Counts before and after EAP-IG's prune() for one unit's export (None: the unit was not pruned)."""
    from circuitbench.cli import main
    from circuitbench.results.store import read_unit

    _, summary, prov = read_unit(unit)
    if summary.get("nodes") is None or summary["status"] in ("unsolved", "no_examples"):
        return None
    out = tmp / f"{unit.stem}.json"
    with contextlib.redirect_stdout(io.StringIO()):
        if main(["circuit", "export", str(unit), "--format", "mib", "--out", str(out), "--force"]) != 0:
            raise SystemExit(f"{unit}: export failed")
    g = graph_class.from_json(str(out))
    nodes_before, edges_before = int(g.nodes_in_graph.sum()), int(g.in_graph.sum())
    input_neurons = int(g.neurons_in_graph[0].sum()) if g.neurons_in_graph is not None else None
    g.prune()
    return {"unit": f"{unit.parent.parent.name}/{unit.name}", "task": prov.unit.task, "method": prov.unit.method,
            "level": summary.get("level", "nodes"), "status": summary["status"], "channel_nodes": summary["nodes"],
            "mib_nodes": nodes_before, "mib_nodes_pruned": nodes_before - int(g.nodes_in_graph.sum()),
            "mib_edges": edges_before, "mib_edges_pruned": edges_before - int(g.in_graph.sum()),
            "input_neurons": input_neurons, "d_model": g.cfg["d_model"]}


def main() -> None:
    """Export, load with EAP-IG, prune, and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", nargs="*", default=list(DEFAULT), help="globs relative to the repository root")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    graph_class = eap_graph_class()
    units = sorted({p for pattern in args.units for p in REPO.glob(pattern) if p.name.count(".") >= 3
                    and not p.name.endswith((".edges.parquet", ".nodes.parquet", ".steer.parquet"))})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for unit in units:
            if (row := measure(unit, graph_class, Path(tmp))) is not None:
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    cols = ["unit", "status", "channel_nodes", "mib_nodes", "mib_nodes_pruned", "mib_edges", "mib_edges_pruned",
            "input_neurons"]
    print(tabulate([[r[c] for c in cols] for r in rows], headers=cols, tablefmt="github"))
    for level in ("nodes", "edges"):
        sel = [r for r in rows if r["level"] == level]
        if sel:
            touched = sum(r["mib_nodes_pruned"] > 0 or r["mib_edges_pruned"] > 0 for r in sel)
            print(f"{level} level: {len(sel)} units; prune() changes {touched}; removes "
                  f"{sum(r['mib_nodes_pruned'] for r in sel)} of {sum(r['mib_nodes'] for r in sel)} MIB nodes and "
                  f"{sum(r['mib_edges_pruned'] for r in sel)} of {sum(r['mib_edges'] for r in sel)} MIB edges")


if __name__ == "__main__":
    main()
