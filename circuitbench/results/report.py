"""Reading a results directory back: every unit's summary, per-model headlines, and model comparisons.

`circuitbench run` writes one Parquet file per (model, task, method, seed) unit; this module is what turns a
directory of them (several models and methods may share one `--out`) into the comparisons people report:
circuit sizes per task side by side, and the paper's headline, the ratio of geometric-mean edge counts over
the tasks both models solve.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitbench.errors import CircuitbenchError
from circuitbench.results.store import read_unit, unit_files
from circuitbench.results.unit import INTERVAL_NUMBERS, NOT_PRUNED

log = logging.getLogger(__name__)


def collect(out: Path) -> list[dict[str, Any]]:
    """The summary row of every unit file under `out`, in a stable order (model, task, method, seed).

    Raises:
        CircuitbenchError: when `out` holds no result files.
    """
    files = unit_files(out)
    if not files:
        raise CircuitbenchError(f"{out}: no result files (expected {out}/MODEL/TASK.METHOD.seedN.parquet); "
                                "run `circuitbench run --out DIR` first")
    rows = []
    for path in files:
        _, summary, prov = read_unit(path)
        rows.append({**summary, "model": prov.unit.model.name, "weights_sha256": prov.unit.model.weights_sha256})
    return sorted(rows, key=lambda r: (r["model"], r["task"], r["method"], r["level"], r["seed"]))


def geomean(values: list[float]) -> float:
    """Geometric mean of positive values (zero counts as 1: a circuit of no edges is the smallest there is)."""
    if not values:
        return float("nan")
    return math.exp(sum(math.log(max(v, 1.0)) for v in values) / len(values))


@dataclass(frozen=True, slots=True)
class Comparison:
    """Model `a` against model `b` over the tasks both solved (same method and seed)."""

    a: str
    b: str
    method: str
    tasks: tuple[str, ...]
    """Tasks solved by both and pruned by both to a circuit that meets the target held out."""
    geomean_edges_a: float
    geomean_edges_b: float
    geomean_nodes_a: float
    geomean_nodes_b: float

    @property
    def edge_ratio(self) -> float:
        """Geometric-mean edges of b over those of a (the paper: dense over sparse, about 16)."""
        return self.geomean_edges_b / self.geomean_edges_a if self.tasks else float("nan")


def compare(rows: list[dict[str, Any]], a: str, b: str, method: str = "learned_mask", seed: int = 0) -> Comparison:
    """Compare two models' node-level circuits on the tasks both solved.

    Raises:
        CircuitbenchError: when either model has no results for this method and seed.
    """
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["method"] == method and r["seed"] == seed and r.get("level", "nodes") == "nodes":
            by_model.setdefault(r["model"], {})[r["task"]] = r
    for m in (a, b):
        if m not in by_model:
            raise CircuitbenchError(f"no {method} seed {seed} results for model {m!r}; results hold "
                                    f"{', '.join(sorted(by_model)) or '(none)'}")
    both = tuple(t for t, r in by_model[a].items()
                 if r["status"] == "solved" and by_model[b].get(t, {}).get("status") == "solved")
    ra, rb = by_model[a], by_model[b]
    return Comparison(
        a, b, method, both,
        geomean([ra[t]["edges"] for t in both]), geomean([rb[t]["edges"] for t in both]),
        geomean([ra[t]["nodes"] for t in both]), geomean([rb[t]["nodes"] for t in both]),
    )


def headline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, method, level, seed): tasks solved, geometric means of nodes and edges over them."""
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"], r.get("level", "nodes"), r["seed"]), []).append(r)
    out = []
    for (model, method, level, seed), rs in groups.items():
        solved = [r for r in rs if r["status"] == "solved"]
        out.append({"model": model, "method": method, "level": level, "seed": seed, "tasks": len(rs),
                    "solved": len(solved),
                    "geomean nodes": geomean([r["nodes"] for r in solved]),
                    "geomean edges": geomean([r["edges"] for r in solved])})
    return out


def side_by_side(rows: list[dict[str, Any]], models: list[str], method: str = "learned_mask",
                 seed: int = 0) -> list[dict[str, Any]]:
    """Per task: each model's status and edges (blank where unsolved)."""
    table: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["model"] in models and r["method"] == method and r["seed"] == seed and r.get("level", "nodes") == "nodes":
            cell = r["edges"] if r["status"] == "solved" else r["status"]
            table.setdefault(r["task"], {"task": r["task"]})[f"{r['model']} edges"] = cell
    return [table[t] for t in sorted(table)]


def method_table(rows: list[dict[str, Any]], model: str, seed: int = 0, level: str = "nodes") -> list[dict[str, Any]]:
    """One row per method on one model at one level: tasks pruned, mean CPR / CMD, geomean nodes and edges, wall time.

    CPR and CMD on the linear and the log axis; `wall_s` is the summed wall time of its units. Means are
    over the tasks every listed method pruned, so the methods are compared on equal terms.
    """
    import statistics

    mine = [r for r in rows if r["model"] == model and r["seed"] == seed and r.get("level", "nodes") == level]
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for r in mine:
        by_method.setdefault(r["method"], {})[r["task"]] = r
    pruned = {m: {t for t, r in rs.items() if r["status"] not in NOT_PRUNED and r.get("cpr") is not None}
              for m, rs in by_method.items()}
    common = set.intersection(*pruned.values()) if pruned else set()

    def mean(m: str, key: str) -> float:
        vals = [by_method[m][t][key] for t in common if by_method[m][t].get(key) is not None]
        vals = [v for v in vals if not math.isnan(v)]
        return statistics.fmean(vals) if vals else float("nan")

    out = []
    base = mean("random", "cpr_log") if "random" in by_method else float("nan")
    for m in sorted(by_method):
        out.append({"method": m, "tasks_compared": len(common), "cpr": mean(m, "cpr"), "cmd": mean(m, "cmd"),
                    "cpr_log": mean(m, "cpr_log"), "cmd_log": mean(m, "cmd_log"),
                    "cpr_log_over_random": mean(m, "cpr_log") / base if base and not math.isnan(base) else float("nan"),
                    "geomean_nodes": geomean([by_method[m][t]["nodes"] for t in common]),
                    "geomean_edges": geomean([by_method[m][t]["edges"] for t in common]),
                    "solved_at_target": sum(1 for t in common if by_method[m][t]["status"] == "solved"),
                    "wall_s": sum(by_method[m][t].get("wall_s") or 0.0 for t in common)})
    return sorted(out, key=lambda r: -r["cpr_log"] if not math.isnan(r["cpr_log"]) else math.inf)


def method_task_table(rows: list[dict[str, Any]], model: str, seed: int = 0, level: str = "nodes"
                      ) -> list[dict[str, Any]]:
    """Every method on every pruned task of one model: status, smallest circuit at the target, CPR, CMD, wall time.

    Tasks that were not pruned (`unsolved`, `no_examples`) have no circuit and are left out (the caller lists them).
    """
    out = []
    for r in sorted((r for r in rows if r["model"] == model and r["seed"] == seed and r["status"] not in NOT_PRUNED
                     and r.get("level", "nodes") == level),
                    key=lambda r: (r["task"], r["method"])):
        out.append({"task": r["task"], "method": r["method"], "status": r["status"], "nodes": r["nodes"],
                    "edges": r["edges"], "cpr": r["cpr"], "cmd": r["cmd"], "cpr_log": r["cpr_log"],
                    "cmd_log": r["cmd_log"], "wall_s": r["wall_s"],
                    **{f"{k}_{end}": r.get(f"{k}_{end}") for k in ("cpr", "cmd") for end in ("lo", "hi")}})
    return out


def plus_minus(row: dict[str, Any], name: str, fmt: str = ".3f") -> Any:
    """A number as a table shows it: `VALUE ±H`, or the bare value where no interval was measured.

    H is the larger distance from the value to an end of its 95% bootstrap interval (`NAME_lo`, `NAME_hi`).
    """
    value, lo, hi = row.get(name), row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if value is None or lo is None or hi is None or any(math.isnan(v) for v in (value, lo, hi)):
        return value
    return f"{value:{fmt}} ±{max(hi - value, value - lo):{fmt}}"


def table_rows(rows: list[dict[str, Any]], cols: list[str], fmt: str = "table") -> list[dict[str, Any]]:
    """`cols` of each row, as a `table` (not `json`) shows them.

    Every number with an interval as `VALUE ±H`, and a `control` column as the control's size against the
    circuit's (`results.status.control_text`).
    """
    from circuitbench.results.status import control_text

    if fmt != "table":
        return [{c: r.get(c) for c in cols} for r in rows]
    return [{c: plus_minus(r, c) if c in INTERVAL_NUMBERS else control_text(r) if c == "control" else r.get(c)
             for c in cols} for r in rows]


def label_notes(summaries: list[dict[str, Any]], min_accuracy: float) -> list[str]:
    """Sentences saying where a result's label would claim more than was measured.

    A bar at or below chance (tasks pruned whether or not the model solves them), circuits of 0 nodes (the
    direct path decides the task alone) and controls that also met the target (Drori 2026).
    """
    notes = []
    if min_accuracy <= 0.5:
        notes.append(f"Note: --min-accuracy {min_accuracy} is at or below chance (0.5), so tasks were pruned whether "
                     "or not the full model solves them: `solved` above means only that a circuit met the target loss "
                     "(on the search and the test pairs). "
                     "These results are off the board's protocol.")
    zero = list(dict.fromkeys(s["task"] for s in summaries if s.get("status") == "solved" and s.get("nodes") == 0))
    if zero:
        notes.append(f"Circuits of 0 nodes: {', '.join(zero)}. No node was needed to meet the target: the direct path "
                     "from the token embedding (and the bigram table) to the logits decides these tasks alone, so they "
                     "say nothing about a circuit.")
    missed = list(dict.fromkeys(s["task"] for s in summaries if s.get("control_met_target")))
    if missed:
        notes.append(f"The inverted-label control also met the target on {', '.join(missed)}: pruning can fit these "
                     "labels either way, so their circuits are weaker evidence (Drori 2026).")
    return notes
