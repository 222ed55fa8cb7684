"""Saved circuits, read back: show one, re-evaluate it against its stored numbers, export it to MIB."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitbench.circuits.evaluate import encode_unit_task
from circuitbench.circuits.masks import NodeIndex, check_layout
from circuitbench.circuits.problem import Calibration, Problem, measure_circuit
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import Batch, ModelAdapter
from circuitbench.results.circuit import Circuit, circuit_paths, edges_total
from circuitbench.results.mib import to_mib
from circuitbench.results.schema import Provenance
from circuitbench.results.store import read_unit


@dataclass(frozen=True)
class SavedUnit:
    """A unit's files: provenance, summary, measurements, circuit and edges."""

    path: Path
    prov: Provenance
    summary: dict[str, Any]
    measurements: dict[tuple[str, str], float]
    circuit: Circuit
    edges: list[dict[str, Any]]
    """The edge table's rows: every edge, or the strongest `EDGE_TABLE_ROWS` of a larger circuit."""
    edges_total: int = 0
    """How many edges the circuit has in all."""

    @property
    def edges_complete(self) -> bool:
        """Whether `edges` holds every edge of the circuit."""
        return len(self.edges) == self.edges_total


def load_saved(path: Path) -> SavedUnit:
    """Read a unit's Parquet file and the circuit beside it (give the `.parquet` or the `.circuit.safetensors`).

    Raises:
        CircuitbenchError: when the unit has no circuit (its task was not pruned) or a file is missing.
    """
    from circuitbench.files import read_parquet

    path = Path(path)
    if path.name.endswith(".circuit.safetensors"):
        path = path.with_name(path.name.removesuffix(".circuit.safetensors") + ".parquet")
    if not path.is_file():
        raise CircuitbenchError(f"{path}: no such result file (give RESULTS/MODEL/TASK.METHOD.seedN.parquet)")
    table, summary, prov = read_unit(path)
    if prov.task_spec is not None:  # a task from the user's own spec file: known again from the unit itself
        from circuitbench.tasks.load import register_spec

        register_spec(prov.task_spec, prov.unit.task_hash, str(path))
    if summary.get("status") == "unsolved":
        raise CircuitbenchError(f"{path}: the task was not pruned (the full model's accuracy "
                                f"{summary.get('full_accuracy')} is below {prov.unit.min_accuracy}); no circuit")
    if summary.get("status") == "no_examples":
        raise CircuitbenchError(f"{path}: the task was not measured (no example survives this model's "
                                "tokenizer); no circuit")
    cpath, epath = circuit_paths(path)
    circuit = Circuit.load(cpath)
    if circuit.unit_key != prov.unit_key:
        raise CircuitbenchError(f"{cpath}: belongs to unit {circuit.unit_key}, not {prov.unit_key}")
    edges = read_parquet(epath, "edge table", "rerun the unit with --force").to_pylist() if epath.is_file() else []
    rows = table.to_pylist()
    return SavedUnit(path, prov, summary, {(r["split"], r["metric"]): r["value"] for r in rows}, circuit, edges,
                     edges_total(epath) if epath.is_file() else 0)


def show(saved: SavedUnit, max_channels: int = 24, max_edges: int = 20) -> str:
    """A readable account of a saved circuit: the unit, the numbers, kept channels per site, strongest edges."""
    from tabulate import tabulate

    u, s, c = saved.prov.unit, saved.summary, saved.circuit
    head = [
        f"circuit of {u.task} in {u.model.name} ({u.method}, seed {u.seed}, {u.ablation} ablation, "
        f"{u.level[:-1]} level)",
        f"  {s.get('nodes')} of {c.n_nodes} nodes, {s.get('edges')} edges"
        + (f" (kept: {c.k} of the model's {len(c.scores):,} edges)" if c.level == "edges" else "")
        + f"; status {s.get('status')}; target loss {s.get('target_loss'):.4f}",
        f"  test: full accuracy {s.get('full_accuracy'):.3f}, sufficiency loss {s.get('sufficiency_loss'):.4f} "
        f"(accuracy {s.get('sufficiency_accuracy'):.3f}), necessity accuracy {s.get('necessity_accuracy'):.3f}, "
        f"faithfulness {s.get('faithfulness'):.3f}",
        "",
    ]
    rows = []
    for site in c.sites:
        kept = c.kept()[site.name]
        if not kept:
            continue
        shown = ", ".join(map(str, kept[:max_channels])) + (f", ... (+{len(kept) - max_channels})"
                                                              if len(kept) > max_channels else "")
        rows.append({"site": site.name, "kind": site.kind, "kept": f"{len(kept)}/{site.width}", "channels": shown})
    out = "\n".join(head) + tabulate(rows, headers="keys", tablefmt="simple") + "\n"
    weighted = sorted((e for e in saved.edges if e["kind"] == "weighted"), key=lambda e: -abs(e["weight"]))
    if weighted:
        top = [{"from": f"{e['src_site']}[{e['src_channel']}]", "to": f"{e['dst_site']}[{e['dst_channel']}]",
                "weight": e["weight"]} for e in weighted[:max_edges]]
        n_res = sum(1 for e in saved.edges if e["kind"] == "residual")
        part = "" if saved.edges_complete else f" (the edge table keeps the strongest {len(saved.edges):,} of " \
            f"{saved.edges_total:,} edges)"
        out += (f"\nstrongest of {len(weighted)} weighted edges ({n_res} residual edges not listed){part}:\n"
                + tabulate(top, headers="keys", tablefmt="simple", floatfmt=".4f") + "\n")
    return out


def model_is_local(name: str) -> bool:
    """Whether a unit's model can be loaded without the network: a local folder or a bundled name."""
    from circuitbench.models.hub import bundled_models

    base = name.split("+sae:")[0]
    return Path(base).is_dir() or base in bundled_models()


def load_unit_model(saved: SavedUnit, device: str | None = None) -> ModelAdapter:
    """The model a saved unit was found on (its name, dtype, revision, and SAEs spliced in as they were).

    Raises:
        CircuitbenchError: when the model cannot be found or loaded here.
    """
    import circuitbench
    from circuitbench.runs.runner import splice_saes

    u = saved.prov.unit
    model = u.model.name.split("+sae:")[0]
    adapter = circuitbench.load_model(model, device=device or saved.prov.device, dtype=u.dtype,
                                      revision=u.model.revision)
    adapter, _ = splice_saes(adapter, model, [str(s.get("spec", s["path"])) for s in saved.prov.saes or ()])
    return adapter


def reevaluate(saved: SavedUnit, adapter: ModelAdapter, split: str = "test") -> dict[str, float]:
    """Measure a saved circuit again on a split: sufficiency, necessity and empty-circuit numbers.

    On the same device and dtype, the test numbers equal the stored ones exactly.

    Raises:
        CircuitbenchError: when the model is not the one the circuit was found on.
    """
    u = saved.prov.unit
    sha = adapter.provenance.get("weights_sha256")
    if u.model.weights_sha256 is not None and sha != u.model.weights_sha256:
        raise CircuitbenchError(f"the circuit was found on weights {u.model.weights_sha256}; this model has {sha}. "
                                "Load the same model (and revision) to re-evaluate it.")
    index = NodeIndex.of(adapter)
    check_layout(saved.circuit, index)
    train_enc, test_enc = encode_unit_task(u, adapter)
    rows = Batch.of(test_enc if split == "test" else train_enc, adapter.device)
    problem = circuit_problem(saved.circuit, adapter, Batch.of(train_enc, adapter.device), u.seed,
                              u.ablation == "counterfactual")
    cal = saved.circuit.calibration
    calibration = None if cal is None else Calibration(cal["scale"], {int(t): v for t, v in cal["shift"].items()})
    gates = saved.circuit.gates().to(adapter.device)
    suff, nec, empty = measure_circuit(problem, rows, gates, calibration)
    return {**suff.as_dict("sufficiency"), **nec.as_dict("necessity"), **empty.as_dict("empty")}


def circuit_problem(circuit: Circuit, adapter: ModelAdapter, train: Batch, seed: int,
                    counterfactual: bool = False) -> Problem:
    """The problem a saved circuit's gates act in: its nodes, or its model's edge graph (checked)."""
    from circuitbench.circuits.problem import EdgeProblem, make_problem

    problem = make_problem(adapter, train, seed, circuit.level, circuit.ablation_values, counterfactual)
    if isinstance(problem, EdgeProblem):
        from circuitbench.circuits.edge_level import check_graph

        check_graph(circuit, problem.graph)
    return problem


def compare_stored(saved: SavedUnit, fresh: dict[str, float], split: str = "test") -> list[dict[str, Any]]:
    """Fresh numbers beside the stored ones (test split only: only it is stored)."""
    rows = []
    for metric, value in fresh.items():
        stored = saved.measurements.get((split, metric))
        rows.append({"metric": metric, "stored": stored, "now": value,
                     "equal": None if stored is None else stored == value})
    return rows


def export_mib(saved: SavedUnit, out: Path, model: Callable[[], ModelAdapter] | None = None) -> Path:
    """Write the circuit as MIB / EAP-IG Graph JSON.

    A circuit of more edges than its edge table keeps (`EDGE_TABLE_ROWS`) has its channel edges found again
    on its model (`model()` loads it), so MIB's component graph is exact at any size.

    Raises:
        CircuitbenchError: for such a circuit when no model is given.
    """
    from circuitbench.results.files import atomic_path

    edges = saved.edges
    if not saved.edges_complete:
        if model is None:
            raise CircuitbenchError(f"{saved.path}: the circuit has {saved.edges_total:,} edges and its edge table "
                                    f"keeps the strongest {len(saved.edges):,}; its model is needed to find them all")
        from circuitbench.circuits.edge_level import circuit_edge_rows

        edges = circuit_edge_rows(model(), saved.circuit)
        if len(edges) != saved.edges_total:
            raise CircuitbenchError(f"{saved.path}: the model gives the circuit {len(edges):,} edges, the unit "
                                    f"recorded {saved.edges_total:,}; load the model it was found on")
    graph = _finite(to_mib(saved.circuit, edges))
    with atomic_path(Path(out)) as tmp:
        tmp.write_text(json.dumps(graph, allow_nan=False))  # NaN is not JSON: an unmeasured score is null
    return Path(out)


def _finite(value: Any) -> Any:
    """The same JSON value with every NaN or infinity replaced by None (null)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def unit_info(saved: SavedUnit) -> dict[str, Any]:
    """The unit's identity and headline numbers, for files written for other tools."""
    u, s = saved.prov.unit, saved.summary
    return {"task": u.task, "model": u.model.name, "method": u.method, "seed": u.seed, "ablation": u.ablation,
            "unit_key": saved.prov.unit_key, "nodes": s.get("nodes"), "edges": s.get("edges"),
            "faithfulness": s.get("faithfulness"), "sufficiency_loss": s.get("sufficiency_loss")}


def graph_json_path(saved: SavedUnit, example: int, out: Path) -> Path:
    """Where `export_graph_json` writes: OUT itself when it names a .json file, else OUT/{slug}.json."""
    from circuitbench.results.tracer import graph_slug

    out = Path(out)
    return out if out.suffix == ".json" else out / f"{graph_slug(unit_info(saved), example)}.json"


def export_graph_json(saved: SavedUnit, table: Any, example: int, out: Path) -> Path:
    """Write the circuit on one test example as circuit-tracer's graph JSON (`circuitbench.results.tracer`).

    The file's stem is the graph's slug, and the folder's `graph-metadata.json` lists it, so circuit-tracer's
    server on that folder lists and opens it. Returns the graph's file.
    """
    from circuitbench.results.files import write_text_atomic
    from circuitbench.results.tracer import add_to_listing, to_graph_json

    path = graph_json_path(saved, example, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = _finite(to_graph_json(saved.circuit, saved.edges, table, example, unit_info(saved), slug=path.stem))
    write_text_atomic(path, json.dumps(graph, allow_nan=False), "--out")
    add_to_listing(path.parent, graph["metadata"])
    return path


def export_parquet(saved: SavedUnit, table: Any, out: Path) -> tuple[Path, Path]:
    """Write OUT/nodes.parquet (the node table) and OUT/edges.parquet; returns both paths.

    The edge table gains `src` and `dst` node names (`SITE:CHANNEL`), so the two tables join directly.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from circuitbench.results.files import atomic_path
    from circuitbench.results.nodes import write_node_table

    out = Path(out)
    nodes = write_node_table(out / "nodes.parquet", table)
    rows = [{**r, "src": f"{r['src_site']}:{r['src_channel']}", "dst": f"{r['dst_site']}:{r['dst_channel']}"}
            for r in saved.edges]
    schema = pa.schema([("src_site", pa.string()), ("src_channel", pa.int64()), ("dst_site", pa.string()),
                        ("dst_channel", pa.int64()), ("weight", pa.float64()), ("kind", pa.string()),
                        ("src", pa.string()), ("dst", pa.string())],
                       metadata={b"circuitbench.edges_total": str(saved.edges_total).encode()})
    edges = out / "edges.parquet"
    with atomic_path(edges) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    return nodes, edges
