"""Where units run: the `Executor` protocol and the in-process implementation.

An executor maps a function over units and yields each outcome as it finishes, in any order. Units are
independent; the function given computes one unit and writes its files atomically, so an executor never
writes results itself and two workers never write the same unit. A distributed executor (Ray) implements
the same protocol; nothing in the runner changes for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from circuitbench.circuits.unit import Unit

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """One unit's outcome: its value, or the error that stopped it (as text: it may cross processes)."""

    unit: Unit
    value: object | None = None
    error: str | None = None


class Executor(Protocol):
    """Runs a function over units."""

    def map(self, fn: Callable[[Unit], object], units: Sequence[Unit]) -> Iterator[Outcome]:
        """Yield the outcome of fn(unit) for every unit, as each finishes."""
        ...


class LocalExecutor:
    """One unit after another in this process; a failing unit does not stop the others unless `fail_fast`."""

    def __init__(self, fail_fast: bool = True) -> None:
        self.fail_fast = fail_fast

    def map(self, fn: Callable[[Unit], object], units: Sequence[Unit]) -> Iterator[Outcome]:
        """Run each unit in order."""
        for unit in units:
            if self.fail_fast:
                yield Outcome(unit, fn(unit))
                continue
            try:
                yield Outcome(unit, fn(unit))
            except Exception as err:  # reported per unit; the others still run
                yield Outcome(unit, None, f"{type(err).__name__}: {err}")
