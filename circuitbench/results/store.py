"""Atomic Parquet writes and schema-checked reads of result units and run summaries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from circuitbench.errors import CircuitbenchError
from circuitbench.files import read_parquet
from circuitbench.results.files import atomic_path
from circuitbench.results.schema import MEASUREMENTS, SCHEMA_VERSION, SUMMARY, Provenance
from circuitbench.results.status import PRUNED, with_status
from circuitbench.results.unit import UnitResult

_PROVENANCE_KEY = b"circuitbench.provenance"


def unit_path(out: Path, model: str, task: str, method: str, seed: int, level: str = "nodes") -> Path:
    """The file of one (model, task, method, level, seed) unit (its circuit and edges sit beside it).

    Node-level units are `TASK.METHOD.seedN.parquet`, edge-level ones `TASK.METHOD.edges.seedN.parquet`.
    """
    folder, method = _safe(model, "model"), _safe(method, "method")  # a Hub id, a FILE.py:Class method
    tag = "" if level == "nodes" else f".{level}"
    return out / folder / f"{task.replace(':', '__')}.{method}{tag}.seed{seed}.parquet"


def _safe(name: str, default: str) -> str:
    """A name as one path component: anything but letters, digits, `_`, `.` and `-` becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or default


SIDE_TABLES = (".edges.parquet", ".nodes.parquet", ".steer.parquet")
"""The Parquet files that live beside a unit's own: its edge table, its node table (`results.nodes`) and its steering
results (`bridges.steer`)."""


def unit_files(out: Path) -> list[Path]:
    """Every unit's Parquet file under a results directory (not the edge and node tables beside them), sorted."""
    return sorted(p for p in Path(out).glob("*/*.parquet") if not p.name.endswith(SIDE_TABLES))


def _write_atomic(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_unit(path: Path, result: UnitResult, prov: Provenance) -> None:
    """Write one unit's measurements, with its summary row and provenance in the file metadata."""
    u = result.unit
    base = dict(model=u.model.name, task=u.task, task_hash=u.task_hash, method=u.method, seed=u.seed)
    rows = [dict(base, split=m.split, metric=m.metric, value=m.value) for m in result.measurements]
    summary = result.summary()
    table = pa.Table.from_pylist(rows, schema=MEASUREMENTS)
    meta = dict(MEASUREMENTS.metadata or {})
    meta[_PROVENANCE_KEY] = prov.model_dump_json().encode()
    meta[b"circuitbench.summary"] = json.dumps(summary).encode()
    _write_atomic(table.replace_schema_metadata(meta), path)


def read_unit(path: Path) -> tuple[pa.Table, dict[str, Any], Provenance]:
    """Read a unit file back, checking its schema version.

    Raises:
        CircuitbenchError: when the file is unreadable or was written by another schema version.
    """
    table = read_parquet(path, "result file", "delete it and rerun")
    meta = table.schema.metadata or {}
    version = meta.get(b"circuitbench.schema_version", b"?").decode(errors="replace")
    if version != SCHEMA_VERSION:
        raise CircuitbenchError(
            f"{path}: written with result schema v{version} (an earlier circuitbench), this circuitbench reads "
            f"v{SCHEMA_VERSION}; old and new results are never mixed: rerun with --force to recompute it, or use "
            "another --out"
        )
    if not table.schema.equals(MEASUREMENTS, check_metadata=False):
        raise CircuitbenchError(f"{path}: columns do not match the measurements schema")
    try:
        summary = json.loads(meta[b"circuitbench.summary"])
        if not isinstance(summary, dict):
            raise ValueError(f"the summary is a {type(summary).__name__}, not a mapping")
        summary.setdefault("level", "nodes")  # written before edge-level circuits existed
        prov = Provenance.model_validate_json(meta[_PROVENANCE_KEY])
        if summary.get("status") in PRUNED:  # the status follows from the numbers by today's rule (`results.status`)
            rows = table.select(["split", "metric", "value"]).to_pylist()
            m = {(r["split"], r["metric"]): r["value"] for r in rows}
            summary = with_status(summary, m, prov.unit.target_loss, prov.unit.min_accuracy)
    except (KeyError, TypeError, ValueError, pa.ArrowException) as err:  # pydantic's ValidationError, a damaged
        first = (str(err).splitlines() or [""])[0][:200]  # page's UnicodeDecodeError: ValueErrors
        raise CircuitbenchError(
            f"{path}: its summary, provenance or measurements cannot be read ({type(err).__name__}: {first}); it "
            "was written by another circuitbench or damaged: delete it (or rerun with --force) to recompute it"
        ) from None
    return table, summary, prov


def write_summary(out: Path, rows: list[dict[str, Any]], name: str = "summary.parquet") -> Path:
    """Write the per-(task, method, seed) summary of a run directory, atomically."""
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in SUMMARY} for r in rows], schema=SUMMARY)
    path = out / name
    _write_atomic(table, path)
    return path
