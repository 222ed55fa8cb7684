"""Task tables and exports: the rows behind `circuitbench tasks list|show|export|encode|check`."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from circuitbench.errors import TaskError
from circuitbench.tasks.load import get_task, list_specs, use_task
from circuitbench.tasks.pairs import Pair, make_pairs
from circuitbench.tasks.spec import SPLITS, SplitName, TaskSpec

if TYPE_CHECKING:
    from circuitbench.protocols import Tokenizer

log = logging.getLogger(__name__)

ExportFormat = Literal["jsonl", "parquet"]

EXPORT_COLUMNS: tuple[str, ...] = (
    "task",
    "split",
    "pair_id",
    "side",
    "template",
    "prompt",
    "correct",
    "incorrect",
    "task_hash",
)
"""Columns of an export, one row per example (two per pair)."""


def load_specs(names: Sequence[str] | None) -> list[TaskSpec]:
    """Specs for task names (`NAME:inverted` allowed) or spec files; None or empty means all bundled tasks.

    Raises:
        TaskError: for an unknown name.
    """
    return [get_task(use_task(n)) for n in names] if names else list_specs()


def summary_rows(specs: Sequence[TaskSpec]) -> list[dict[str, Any]]:
    """One row per task: name, what it probes, provenance, pairs per split, check kind."""
    return [
        {
            "name": s.name,
            "probes": s.probes,
            "provenance": s.provenance,
            "train": s.train.n_pairs,
            "test": s.test.n_pairs,
            "check": s.check.kind,
            "task_hash": s.task_hash,
        }
        for s in specs
    ]


def example_rows(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """One row per example (both sides of every pair), with the columns of `EXPORT_COLUMNS`."""
    return [
        {
            "task": p.task,
            "split": p.split,
            "pair_id": p.pair_id,
            "side": side,
            "template": p.template,
            "prompt": p.prompts[side],
            "correct": p.correct(side),
            "incorrect": p.incorrect(side),
            "task_hash": p.task_hash,
        }
        for p in pairs
        for side in (0, 1)
    ]


def export_examples(
    path: Path,
    fmt: ExportFormat,
    specs: Sequence[TaskSpec],
    splits: Sequence[SplitName] = SPLITS,
) -> int:
    """Write every example of the given tasks and splits to one file, atomically.

    The output is deterministic: the same specs give byte-identical JSON Lines, and Parquet files
    with identical contents.

    Args:
        path: Output file.
        fmt: "jsonl" or "parquet".
        specs: Tasks to export, in order.
        splits: Splits to export, in order.

    Returns:
        The number of rows written.

    Raises:
        TaskError: for an unknown format.
    """
    rows = [r for s in specs for split in splits for r in example_rows(make_pairs(s, split))]
    if fmt not in ("jsonl", "parquet"):
        raise TaskError(f"unknown export format {fmt!r}; use jsonl or parquet.")
    from circuitbench.files import atomic_path

    with atomic_path(Path(path)) as tmp:  # group-readable like every result file, never half-written
        if fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema(
                [
                    ("task", pa.string()),
                    ("split", pa.string()),
                    ("pair_id", pa.int64()),
                    ("side", pa.int8()),
                    ("template", pa.int32()),
                    ("prompt", pa.string()),
                    ("correct", pa.string()),
                    ("incorrect", pa.string()),
                    ("task_hash", pa.string()),
                ]
            )
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    log.info("wrote %d examples of %d task(s) to %s", len(rows), len(specs), path)
    return len(rows)


def format_pair(pair: Pair, marker: str = "\u2588") -> str:
    """A pair as readable text: each side's prompt, a marker at the decision point, both answers."""
    out = [f"--- {pair.task} [{pair.split}] pair {pair.pair_id} (template {pair.template})"]
    for side in (0, 1):
        out.append(f"side {side}: correct {pair.correct(side)!r}, incorrect {pair.incorrect(side)!r}")
        out.append(pair.prompts[side] + marker)
    return "\n".join(out)


def encode_rows(specs: Sequence[TaskSpec], tokenizer: Tokenizer, split: SplitName = "test") -> list[dict[str, Any]]:
    """Per task: examples kept and dropped by the boundary checks for a tokenizer, and why.

    `counterfactual_aligned_examples` counts the kept examples whose pair partner has the same token
    length: counterfactual ablation patches those position by position (the others on the suffix aligned
    at the answer); every counterfactual unit records the same count under the same name.
    """
    from circuitbench.tasks.encode import encode_task

    rows = []
    for s in specs:
        enc = encode_task(s, tokenizer, split)
        last = enc.last
        equal = int((last == last[torch.arange(len(last)) ^ 1]).sum()) if len(last) else 0
        rows.append(
            {
                "task": s.name,
                "split": split,
                "examples": enc.n_total,
                "kept": enc.n,
                "dropped": enc.n_dropped,
                "kept_fraction": round(enc.kept_fraction, 4),
                "truncated": enc.n_truncated,
                "counterfactual_aligned_examples": equal,
                "why": ", ".join(f"{n} {r}" for r, n in enc.drop_reasons.items()) or "-",
            }
        )
    return rows


def check_rows(specs: Sequence[TaskSpec], splits: Sequence[SplitName] = SPLITS) -> list[dict[str, Any]]:
    """Per task: the validity check's kind, examples checked, failures and the first failure."""
    from circuitbench.tasks.checks import check_task

    rows = []
    for s in specs:
        report = check_task(s, splits)
        rows.append(
            {
                "task": s.name,
                "check": report.kind,
                "examples": report.n_examples,
                "failures": len(report.failures),
                "first_failure": str(report.failures[0]) if report.failures else "-",
            }
        )
    return rows
