"""Circuit-finding methods behind one protocol and a registry."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import pydantic
from torch import Tensor

from circuitbench.errors import CircuitbenchError


class Method(Protocol):
    """Scores every node for a task; the search keeps the top-k by score.

    What a method may do beyond this is declared by the protocols below (`JointMethod`, `SignedMethod`,
    `NativeSizeMethod`, `DiagnosedMethod`); the evaluator asks `isinstance(method, ...)` of them.
    """

    name: str

    def node_scores(self, problem: Any) -> Tensor:
        """A score per node ([n_nodes]); higher means more important to keep."""
        ...

    def hyperparameters(self) -> dict[str, Any]:
        """Everything needed to reproduce the scores (recorded in every result row)."""
        ...

    def cost(self, n_examples: int, n_nodes: int) -> dict[str, int]:
        """Forward and backward passes over batches of examples the scores take: {"forward", "backward"}."""
        ...


@runtime_checkable
class JointMethod(Protocol):
    """Scores several problems that differ only in their labels (a task and its control) in one run.

    The numbers are those of separate `node_scores` calls; the passes are fewer. After a call, `native_ks`
    holds each problem's own circuit size (see `NativeSizeMethod`).
    """

    native_ks: list[int]

    def joint_scores(self, problems: list[Any]) -> list[Tensor]:
        """One score vector per problem, in order."""
        ...


@runtime_checkable
class SignedMethod(Protocol):
    """After `node_scores`, `signed_scores` holds the signed scores that MIB's CPR ranks by.

    The scores `node_scores` returns are their absolute values, which CMD ranks by.
    """

    signed_scores: Tensor


@runtime_checkable
class NativeSizeMethod(Protocol):
    """After `node_scores`, `native_k` is the circuit size the method chose itself (the search starts there)."""

    native_k: int


@runtime_checkable
class DiagnosedMethod(Protocol):
    """Reports what its last call did (recorded as `method_NAME` measurements)."""

    def diagnostics(self) -> dict[str, float]:
        """Named numbers about the last call (steps run, active nodes, ...)."""
        ...


_METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Class decorator: make a method available as `--method NAME`."""

    def deco(factory: Callable[..., Method]) -> Callable[..., Method]:
        _METHODS[name] = factory
        return factory

    return deco


def method_names() -> list[str]:
    """Registered method names."""
    _register_builtins()
    return sorted(_METHODS)


def hyperparameter_names(name: str) -> list[str]:
    """The hyperparameters a method takes (its dataclass fields)."""
    factory = _lookup(name)
    return [f.name for f in dataclasses.fields(factory)] if dataclasses.is_dataclass(factory) else []


def _register_builtins() -> None:
    from circuitbench.circuits.methods import attribution, learned_mask, random_baseline  # noqa: F401  (registers)


def canonical_name(name: str) -> str:
    """A method's one spelling, the registry's (`learned_mask`); the CLI also takes `learned-mask`."""
    return name.strip().replace("-", "_")


def _lookup(name: str) -> Callable[..., Method]:
    _register_builtins()
    key = canonical_name(name)
    if key not in _METHODS:
        close = difflib.get_close_matches(key, list(_METHODS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CircuitbenchError(f"--method {name}: unknown method.{hint} Available: {', '.join(sorted(_METHODS))}")
    return _METHODS[key]


def get_method(name: str, **kwargs: Any) -> Method:
    """Build a registered method by name ('-' and '_' are interchangeable), validating its hyperparameters.

    Raises:
        CircuitbenchError: for unknown names (listing the options and the closest one), and for unknown or
            ill-typed hyperparameters (naming each, with the ones the method takes).
    """
    factory = _lookup(name)
    allowed = hyperparameter_names(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "no hyperparameters"
        raise CircuitbenchError(
            f"--method {name} does not take {', '.join(unknown)} (e.g. --{unknown[0].replace('_', '-')}); "
            f"it takes {takes}."
        )
    try:
        method: Method = pydantic.TypeAdapter(factory).validate_python(kwargs)  # type: ignore[arg-type]
        return method
    except pydantic.ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise CircuitbenchError(f"--method {name}: bad hyperparameters: {problems}") from None


def method_rows() -> list[dict[str, str]]:
    """One row per registered method: its name, what it does, and its hyperparameters with their defaults."""
    rows = []
    for name in method_names():
        method = get_method(name)
        doc = (type(method).__doc__ or "").strip().splitlines()[0]
        fields = set(hyperparameter_names(name))
        params = ", ".join(f"{k}={v!r}" for k, v in method.hyperparameters().items() if k in fields)
        rows.append({"method": name, "what": doc, "hyperparameters (defaults)": params})
    return rows
