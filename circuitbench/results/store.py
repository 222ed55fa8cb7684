"""Atomic Parquet writes and schema-checked reads of result units and run summaries."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from circuitbench.errors import CircuitbenchError
from circuitbench.results.schema import MEASUREMENTS, SCHEMA_VERSION, SUMMARY, Provenance

_PROVENANCE_KEY = b"circuitbench.provenance"


def unit_path(out: Path, model: str, task: str, method: str, seed: int) -> Path:
    """The file of one (model, task, method, seed) unit."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_") or "model"
    return out / safe / f"{task.replace(':', '__')}.{method}.seed{seed}.parquet"


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_unit(path: Path, rows: list[dict[str, Any]], summary: dict[str, Any], prov: Provenance) -> None:
    """Write one unit's measurements, with its summary row and provenance in the file metadata."""
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
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise CircuitbenchError(f"{path}: unreadable result file ({err}); delete it and rerun") from err
    meta = table.schema.metadata or {}
    version = meta.get(b"circuitbench.schema_version", b"?").decode()
    if version != SCHEMA_VERSION:
        raise CircuitbenchError(
            f"{path}: written with result schema v{version}, this circuitbench reads v{SCHEMA_VERSION}; "
            "rerun with --force to recompute"
        )
    if not table.schema.equals(MEASUREMENTS, check_metadata=False):
        raise CircuitbenchError(f"{path}: columns do not match the measurements schema")
    return (table, json.loads(meta[b"circuitbench.summary"]),
            Provenance.model_validate_json(meta[_PROVENANCE_KEY]))


def write_summary(out: Path, rows: list[dict[str, Any]], name: str = "summary.parquet") -> Path:
    """Write the per-(task, method, seed) summary of a run directory, atomically."""
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in SUMMARY} for r in rows], schema=SUMMARY)
    path = out / name
    _write_atomic(table, path)
    return path
