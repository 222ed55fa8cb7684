"""The 20 binary-choice code tasks: spec schema, loading, pair generation, checks and encoding.

Public API (imported lazily, so `circuitbench.tasks.load` does not pull in torch):
    load_spec, get_task, list_specs, spec_names: find specs (`NAME:inverted` is a task's control).
    TaskSpec: the spec schema. Pair, make_pairs: seeded contrast pairs.
    EncodedTask, encode_task: per-tokenizer tensors with boundary checks.
    CheckReport, check_task: the validity checks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circuitbench.tasks.checks import CheckReport, check_task
    from circuitbench.tasks.encode import EncodedTask, encode_task
    from circuitbench.tasks.load import get_task, list_specs, load_spec, spec_names
    from circuitbench.tasks.pairs import Pair, make_pairs
    from circuitbench.tasks.spec import TaskSpec

_WHERE = {
    "CheckReport": "checks",
    "check_task": "checks",
    "EncodedTask": "encode",
    "encode_task": "encode",
    "get_task": "load",
    "list_specs": "load",
    "load_spec": "load",
    "spec_names": "load",
    "Pair": "pairs",
    "make_pairs": "pairs",
    "TaskSpec": "spec",
}

__all__ = [
    "CheckReport",
    "EncodedTask",
    "Pair",
    "TaskSpec",
    "check_task",
    "encode_task",
    "get_task",
    "list_specs",
    "load_spec",
    "make_pairs",
    "spec_names",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"circuitbench.tasks.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'circuitbench.tasks' has no attribute {name!r}")
