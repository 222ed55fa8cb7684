"""Circuit-finding methods behind one protocol and a registry."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Protocol

from torch import Tensor

from circuitbench.errors import CircuitbenchError


class Method(Protocol):
    """Scores every node for a task; the search keeps the top-k by score."""

    name: str

    def node_scores(self, problem: Any) -> Tensor:
        """A score per node ([n_nodes]); higher means more important to keep."""
        ...

    def hyperparameters(self) -> dict[str, Any]:
        """Everything needed to reproduce the scores (recorded in every result row)."""
        ...


_METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Class decorator: make a method available as `--method NAME`."""

    def deco(factory: Callable[..., Method]) -> Callable[..., Method]:
        _METHODS[name] = factory
        return factory

    return deco


def get_method(name: str, **kwargs: Any) -> Method:
    """Build a registered method by name ('-' and '_' are interchangeable).

    Raises:
        CircuitbenchError: for unknown names, listing the options and the closest one.
    """
    from circuitbench.circuits.methods import learned_mask, random_baseline  # noqa: F401  (registers)

    key = name.replace("-", "_")
    if key not in _METHODS:
        close = difflib.get_close_matches(key, list(_METHODS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CircuitbenchError(f"--method {name}: unknown method.{hint} Available: {', '.join(sorted(_METHODS))}")
    return _METHODS[key](**kwargs)
