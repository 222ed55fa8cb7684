"""How much a circuit depends on the seed: spread of sizes and scores, and overlap of the circuits found.

Learned masks started from other seeds can find other circuits of about the same size (and follow-ups of
Gao et al. 2025 report different cores across seeds). For every (model, task, method) run with two seeds
or more, `seed_table` gives the mean and standard deviation over seeds of nodes, edges, faithfulness and
CPR, and the mean pairwise Jaccard overlap of the circuits' kept nodes and of their edges (from the saved
circuit and edge table of each unit; an edge table that keeps only the strongest 10,000 edges of a larger
circuit makes that pair's edge overlap unmeasured, NaN).
"""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path
from typing import Any

from circuitbench.results.circuit import Circuit, circuit_paths, edges_total
from circuitbench.results.store import unit_path
from circuitbench.results.unit import NOT_PRUNED

SPREAD_METRICS = ("nodes", "edges", "faithfulness", "cpr")
"""The summary columns whose spread over seeds is reported."""


def jaccard(a: set[Any], b: set[Any]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets: they agree)."""
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def _node_set(unit_file: Path) -> set[tuple[str, int]] | None:
    cpath, _ = circuit_paths(unit_file)
    if not cpath.is_file():
        return None
    return {(site, c) for site, chans in Circuit.load(cpath).kept().items() for c in chans}


def _edge_set(unit_file: Path) -> set[tuple[str, int, str, int]] | None:
    from circuitbench.files import read_parquet

    _, epath = circuit_paths(unit_file)
    if not epath.is_file():
        return None
    table = read_parquet(epath, "edge table", "rerun the unit with --force")
    if table.num_rows != edges_total(epath):  # capped: the overlap of full edge sets cannot be measured
        return None
    return set(zip(*(table.column(c).to_pylist() for c in ("src_site", "src_channel", "dst_site", "dst_channel")),
                   strict=True))


def _mean_overlap(sets: list[set[Any] | None]) -> float:
    pairs = [jaccard(a, b) for a, b in itertools.combinations(sets, 2) if a is not None and b is not None]
    return statistics.fmean(pairs) if pairs else math.nan


def _stats(values: list[Any]) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def seed_table(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """One row per (model, task, method, level) with two or more pruned seeds: spread over seeds and overlaps.

    Args:
        rows: Summary rows (`circuitbench.results.report.collect`).
        out: The results directory they were read from (for the circuits and edge tables).
    """
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") not in NOT_PRUNED:
            groups.setdefault((r["model"], r["task"], r["method"], r.get("level", "nodes")), []).append(r)
    table = []
    for (model, task, method, level), rs in sorted(groups.items()):
        if len(rs) < 2:
            continue
        files = [unit_path(out, model, task, method, int(r["seed"]), level)
                 for r in sorted(rs, key=lambda r: r["seed"])]
        row: dict[str, Any] = {"model": model, "task": task, "method": method, "level": level, "seeds": len(rs),
                               "solved": sum(1 for r in rs if r.get("status") == "solved")}
        for metric in SPREAD_METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = _stats([r.get(metric) for r in rs])
        row["node_jaccard"] = _mean_overlap([_node_set(f) for f in files])
        row["edge_jaccard"] = _mean_overlap([_edge_set(f) for f in files])
        table.append(row)
    return table
