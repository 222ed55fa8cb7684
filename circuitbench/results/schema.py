"""The result tables, declared once: a long table of measurements and a per-(task, method) summary.

Bump SCHEMA_VERSION whenever a column changes meaning or type; readers refuse other versions.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from circuitbench.results.unit import Unit, UnitResult, summary_fields

SCHEMA_VERSION = "3"
"""v2: metric names use `_` (`sufficiency_loss`, the summary column names); provenance holds the unit."""

# One row per measurement of one (model, task, method, seed) unit.
MEASUREMENTS = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("task_hash", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # "train", "test" or "" for sizes
        pa.field("metric", pa.string(), nullable=False),  # e.g. "sufficiency_loss", "nodes_q", "edges"
        pa.field("value", pa.float64(), nullable=False),
    ],
    metadata={"circuitbench.schema": "measurements", "circuitbench.schema_version": SCHEMA_VERSION},
)

def _arrow_type(annotation: Any) -> pa.DataType:
    """The pyarrow type of a UnitResult field annotation (optional numbers are nullable columns)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args and typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation
    if base is bool:
        return pa.bool_()
    if base is int:
        return pa.int64()
    if base is float:
        return pa.float64()
    return pa.string()  # str and Literal[...] (status)


def summary_schema() -> pa.Schema:
    """The summary table's schema, derived from `UnitResult` (declared once, there)."""
    fields = [pa.field("model", pa.string(), nullable=False), pa.field("task", pa.string(), nullable=False),
              pa.field("method", pa.string(), nullable=False), pa.field("level", pa.string(), nullable=False),
              pa.field("seed", pa.int64(), nullable=False)]
    for name in summary_fields():
        fields.append(pa.field(name, _arrow_type(UnitResult.model_fields[name].annotation)))
    return pa.schema(fields, metadata={"circuitbench.schema": "summary", "circuitbench.schema_version": SCHEMA_VERSION})


# One row per (model, task, method, seed): the numbers a reader looks at first.
SUMMARY = summary_schema()


class Provenance(BaseModel):
    """Where a unit of results came from; stored as JSON in each Parquet file's metadata.

    `unit` is the whole identity (every setting that can change a number); the rest is the environment it
    ran in, recorded but not part of the identity.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    unit: Unit
    """What was computed."""
    unit_key: str
    """`unit.key()`, for finding the unit's files and spotting duplicates."""
    circuitbench_version: str
    """Package version."""
    git_commit: str | None
    """Commit of the circuitbench checkout, when run from one."""
    ablation_corpus: str | None
    """Hash of the corpus behind mean ablation."""
    device: str
    """torch device."""
    torch_version: str
    """torch version."""
    threads: int
    """torch intra-op threads."""
    cpu_kind: str | None = None
    """`amx`, `avx512`, `avx2`, ... (`circuitbench.hardware.cpu_kind`): with `threads`, `device` and
    `torch_version`, what a bit-identical recomputation needs (None: recorded before it was kept)."""
    cpu_model: str | None = None
    """The CPU's model name, for the record."""
    started_at: str
    """ISO 8601 UTC start time."""
    wall_s: float
    """Seconds for this unit."""
    saes: list[dict[str, str | bool]] | None = None
    """SAEs spliced into the model (`--sae`): path, hook point and weights sha256 of each."""
    host: str | None = None
    """Host name of the process that computed the unit."""
    pid: int | None = None
    """Process id that computed the unit (with `host`: which of several runs sharing `--out` wrote it)."""
    task_spec: dict[str, Any] | None = None
    """The whole spec of a task from the user's own file (`--tasks path/to/spec.yaml`), so the unit can be
    re-evaluated and explored without that file; None for a bundled task."""
    method_origin: dict[str, str] | None = None
    """Where the method's code came from: module, package and version (a plugin's, or circuitbench's)."""
    schema_version: str = SCHEMA_VERSION
    """Version of the result tables."""
