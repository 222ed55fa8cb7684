"""The result tables, declared once: a long table of measurements and a per-(task, method) summary.

Bump SCHEMA_VERSION whenever a column changes meaning or type; readers refuse other versions.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = "1"

# One row per measurement of one (model, task, method, seed) unit.
MEASUREMENTS = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("task_hash", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # "train", "test" or "" for sizes
        pa.field("metric", pa.string(), nullable=False),  # e.g. "sufficiency.loss", "nodes.q", "edges"
        pa.field("value", pa.float64(), nullable=False),
    ],
    metadata={"circuitbench.schema": "measurements", "circuitbench.schema_version": SCHEMA_VERSION},
)

# One row per (model, task, method, seed): the numbers a reader looks at first.
SUMMARY = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # solved | unsolved | target_missed
        pa.field("full_accuracy", pa.float64()),
        pa.field("full_loss", pa.float64()),
        pa.field("nodes", pa.int64()),
        pa.field("edges", pa.int64()),
        pa.field("target_loss", pa.float64()),  # max(--target-loss, the full model's train-split loss)
        pa.field("circuit_train_loss", pa.float64()),
        pa.field("sufficiency_loss", pa.float64()),
        pa.field("sufficiency_accuracy", pa.float64()),
        pa.field("necessity_loss", pa.float64()),
        pa.field("necessity_accuracy", pa.float64()),
        pa.field("faithfulness", pa.float64()),
        pa.field("control_nodes", pa.int64()),
        pa.field("control_met_target", pa.bool_()),
        pa.field("test_examples", pa.int64()),
        pa.field("dropped_examples", pa.int64()),
        pa.field("wall_s", pa.float64()),
    ],
    metadata={"circuitbench.schema": "summary", "circuitbench.schema_version": SCHEMA_VERSION},
)


class Provenance(BaseModel):
    """Where a unit of results came from; stored as JSON in each Parquet file's metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    circuitbench_version: str
    """Package version."""
    git_commit: str | None
    """Commit of the circuitbench checkout, when run from one."""
    model: str
    """Model name or path as given."""
    model_revision: str | None
    """Hub revision, when loaded from the Hub."""
    weights_sha256: str | None
    """Hash of the weight file."""
    task: str
    """Task name (NAME or NAME:inverted)."""
    task_hash: str
    """Content hash of the task spec and generator."""
    method: str
    """Registry name of the method."""
    method_kwargs: dict[str, Any]
    """The method's hyperparameters."""
    target_loss: float
    """Per-example task-loss target of the circuit search."""
    ablation: str
    """mean | task-mean | zero."""
    ablation_corpus: str | None
    """Hash of the corpus behind mean ablation."""
    seed: int
    """Random seed."""
    device: str
    """torch device."""
    dtype: str
    """Model dtype."""
    started_at: str
    """ISO 8601 UTC start time."""
    wall_s: float
    """Seconds for this unit."""
    calibrate: bool = False
    """Whether each circuit was scored after a fitted scale and shift of the final logits (--calibrate)."""
    saes: list[dict[str, str]] | None = None
    """SAEs spliced into the model (`--sae`): path, hook point and weights sha256 of each."""
    schema_version: str = SCHEMA_VERSION
    """Version of the result tables."""
