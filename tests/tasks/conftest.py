"""A small valid spec to mutate in tests, and a helper that writes it where load_spec can read it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

TOY: dict[str, Any] = {
    "name": "toy",
    "probes": "closing a quote",
    "description": "A toy quote task for tests.",
    "provenance": "confirmed",
    "contrast": {"detail": "the opening quote", "sides": [{"q": '"'}, {"q": "'"}]},
    "completions": ['"', "'"],
    "pools": {"word": ["alpha", "beta", "gamma", "delta", "eps"], "var": ["x", "y", "z", "w"]},
    "train": {
        "n_pairs": 12,
        "templates": [
            {"prompt": "${var} = ${q}${word}", "suffix": "\n"},
            {"prompt": "def f():\n    ${var} = ${q}${word}", "suffix": "\n    return ${var}\n"},
        ],
    },
    "test": {"n_pairs": 6, "templates": [{"prompt": "print(1)\n${var} = ${q}${word}", "suffix": "\n"}]},
    "check": {"kind": "compile"},
}


@pytest.fixture
def toy() -> dict[str, Any]:
    """A fresh deep copy of the toy spec, to mutate."""
    return copy.deepcopy(TOY)


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec dict (or raw text) as tmp/NAME.yaml and return the path."""

    def write(data: dict[str, Any] | str, name: str = "toy") -> Path:
        path = tmp_path / f"{name}.yaml"
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write
