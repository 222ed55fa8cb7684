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

from circuitbench.results.unit import Unit

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
    """One unit after another in this process.

    With `fail_fast` (a single `run`), the first error stops everything and reaches the caller as it is.
    Without it (sweeps), a failing unit is retried `retries` times, then reported with its error, and the
    other units still run.
    """

    def __init__(self, fail_fast: bool = True, retries: int = 1) -> None:
        self.fail_fast, self.retries = fail_fast, retries

    def map(self, fn: Callable[[Unit], object], units: Sequence[Unit]) -> Iterator[Outcome]:
        """Run each unit in order."""
        for unit in units:
            if self.fail_fast:
                yield Outcome(unit, fn(unit))
                continue
            for attempt in range(self.retries + 1):
                try:
                    yield Outcome(unit, fn(unit))
                    break
                except Exception as err:  # reported per unit after its retries; the others still run
                    if attempt == self.retries:
                        yield Outcome(unit, None, f"{type(err).__name__}: {err}")


class RayExecutor:
    """Units as Ray tasks (`pip install 'circuitbench[ray]'`; the core never imports ray).

    Each unit is one task declaring its resources (`num_cpus`, and `num_gpus` where there is a GPU). The
    function (a `UnitWorker`, holding the model) is put in Ray's object store once. Workers write each
    finished unit atomically to the shared output directory; the driver only collects outcomes and runs the
    single reduce step. A unit whose task fails is retried once by Ray, then reported with its error while
    the other units finish. Workers use the driver's torch thread count, so a sweep gives the numbers a
    local run gives.
    """

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 1, init_kwargs: dict | None = None) -> None:
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.max_retries, self.init_kwargs = max_retries, dict(init_kwargs or {})

    def map(self, fn: Callable[[Unit], object], units: Sequence[Unit]) -> Iterator[Outcome]:
        """Submit every unit, yield outcomes as they finish."""
        try:
            import ray
        except ImportError as err:
            from circuitbench.errors import CircuitbenchError

            raise CircuitbenchError("--executor ray needs Ray: pip install 'circuitbench[ray]'") from err
        import torch

        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_kwargs)
        threads = torch.get_num_threads()
        fn_ref = ray.put(fn)

        @ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
                    retry_exceptions=True)
        def run_unit(f: Callable[[Unit], object], unit: Unit) -> object:
            import torch as _torch

            _torch.set_num_threads(threads)
            return f(unit)

        pending = {run_unit.remote(fn_ref, u): u for u in units}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(done[0])
            try:
                yield Outcome(unit, ray.get(done[0]))
            except Exception as err:  # the task's error, after its retry
                yield Outcome(unit, None, f"{type(err).__name__}: {str(err).splitlines()[0]}")


def make_executor(name: str, address: str | None = None, num_gpus: float = 0, fail_fast: bool = True) -> Executor:
    """The executor a `--executor` flag names (`fail_fast`: a local run stops at the first error)."""
    if name == "local":
        return LocalExecutor(fail_fast=fail_fast)
    if name == "ray":
        return RayExecutor(address=address, num_gpus=num_gpus)
    from circuitbench.errors import CircuitbenchError

    raise CircuitbenchError(f"--executor {name}: choose local or ray")
