"""Circuit-finding methods behind one protocol and a registry, open to methods from other packages.

A method is found by name: a built-in (`learned_mask`, `eap`, ...), an entry point of an installed package
in the group `circuitbench.methods`, or `path/to/file.py:Class` / `package.module:Class` given as the name
itself (the name recorded in every unit, so any process can load it again). Whatever its origin, a method
is checked against the `Method` protocol when it is built, and its scores' shape when it runs.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import pydantic
from torch import Tensor

from circuitbench.errors import CircuitbenchError


@runtime_checkable
class Method(Protocol):
    """Scores every node for a task; the search keeps the top-k by score.

    At `--level edges` the same call scores every edge: `problem.size` scores, gates applied through
    `problem.logits_at` (a method written against those two works at both levels, as the built-ins do).
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
_LOADED: dict[str, Callable[..., Method]] = {}
"""Plugins (entry points, FILE.py:Class) loaded in this process, by the name they were asked for."""


def register_method(name: str) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Class decorator: make a method available as `--method NAME`."""

    def deco(factory: Callable[..., Method]) -> Callable[..., Method]:
        _METHODS[name] = factory
        return factory

    return deco


def method_names() -> list[str]:
    """Registered method names: the built-ins and the entry points of installed packages."""
    _register_builtins()
    from circuitbench.plugins import entry_points

    return sorted(set(_METHODS) | set(entry_points(METHOD_GROUP)))


METHOD_GROUP = "circuitbench.methods"
"""The entry-point group of methods from other packages."""


def hyperparameter_names(name: str) -> list[str]:
    """The hyperparameters a method takes (its dataclass fields)."""
    factory = _lookup(name)
    return [f.name for f in dataclasses.fields(factory)] if dataclasses.is_dataclass(factory) else []


def _register_builtins() -> None:
    from circuitbench.circuits.methods import attribution, learned_mask, random_baseline  # noqa: F401  (registers)


def canonical_name(name: str) -> str:
    """A method's one spelling, the registry's (`learned_mask`); the CLI also takes `learned-mask`.

    A `FILE.py:Class` or `module:Class` name is kept as written (a path may hold dashes).
    """
    from circuitbench.plugins import is_python_name

    name = name.strip()
    return name if is_python_name(name) else name.replace("-", "_")


def _lookup(name: str) -> Callable[..., Method]:
    from circuitbench.plugins import entry_points, is_python_name, load_entry_point, load_object

    _register_builtins()
    key = canonical_name(name)
    if key in _METHODS:
        return _METHODS[key]
    if key in _LOADED:
        return _LOADED[key]
    plugins = entry_points(METHOD_GROUP)
    if is_python_name(key):
        factory = load_object(key, "--method", "a method class")
    elif key in plugins:
        factory = load_entry_point(plugins[key], "--method")
    else:
        close = difflib.get_close_matches(key, [*_METHODS, *plugins], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CircuitbenchError(f"--method {name}: unknown method.{hint} Available: "
                                f"{', '.join(sorted({*_METHODS, *plugins}))}; or name a class as FILE.py:CLASS")
    if not callable(factory):
        raise CircuitbenchError(f"--method {name}: {factory!r} is not a class or function that builds a method")
    _LOADED[key] = factory  # not a registration: `method_names` lists built-ins and entry points only
    return factory


def method_origin(name: str) -> dict[str, str]:
    """Where a method's code comes from: module, package and version (recorded in every unit's provenance)."""
    from circuitbench.plugins import origin

    if name == "imported":  # a circuit brought in from a file (`circuitbench circuit import`): no method ran here
        import types

        return origin(types.SimpleNamespace(__module__="circuitbench.runs.imported"))
    return origin(_lookup(name))


def _check_protocol(name: str, method: Any) -> None:
    missing = [m for m in ("node_scores", "hyperparameters", "cost") if not callable(getattr(method, m, None))]
    if not isinstance(getattr(method, "name", None), str):
        missing.insert(0, "name")
    if missing:
        raise CircuitbenchError(
            f"--method {name}: {type(method).__name__} is not a circuitbench method: it lacks {', '.join(missing)} "
            "(a method has a `name`, `node_scores(problem)` returning one score per node, `hyperparameters()` "
            "and `cost(n_examples, n_nodes)`; see circuitbench.circuits.methods.Method)")


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
        if dataclasses.is_dataclass(factory):  # hyperparameters validated and coerced by their types
            method: Method = pydantic.TypeAdapter(factory).validate_python(kwargs)
        else:
            method = factory(**kwargs)
    except pydantic.ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise CircuitbenchError(f"--method {name}: bad hyperparameters: {problems}") from None
    except Exception as err:  # a plugin's constructor can fail any way
        raise CircuitbenchError(f"--method {name}: building it failed ({type(err).__name__}: {err})") from None
    _check_protocol(name, method)
    return method


def method_rows() -> list[dict[str, str]]:
    """One row per method (built-in or plugin): name, what it does, its hyperparameters, where it comes from."""
    rows = []
    for name in method_names():
        try:
            method = get_method(name)
        except CircuitbenchError as err:  # a broken plugin is listed with its error, not a traceback
            rows.append({"method": name, "what": f"(cannot be loaded: {err})", "hyperparameters (defaults)": "",
                         "levels": "", "from": ""})
            continue
        doc = (type(method).__doc__ or "").strip().splitlines()[0] if type(method).__doc__ else ""
        fields = set(hyperparameter_names(name))
        try:
            hyper = method_hyperparameters(method, name)
        except CircuitbenchError as err:
            hyper, doc = {}, f"(broken: {err})"
        params = ", ".join(f"{k}={v!r}" for k, v in hyper.items() if k in fields)
        where = method_origin(name)
        from circuitbench.circuits.edge_level import NODE_ONLY_METHODS

        rows.append({"method": name, "what": doc, "hyperparameters (defaults)": params,
                     "levels": "nodes" if name in NODE_ONLY_METHODS else "nodes, edges",
                     "from": f"{where.get('package', where['module'])} {where.get('version', '')}".strip()})
    return rows


def method_hyperparameters(method: Any, name: str) -> dict[str, Any]:
    """`method.hyperparameters()`, checked: a dict of names to JSON values (every unit records it).

    Raises:
        CircuitbenchError: naming the method and what it returned instead.
    """
    import json

    try:
        params = method.hyperparameters()
    except Exception as err:
        raise CircuitbenchError(f"method {name}: hyperparameters() raised {type(err).__name__}: {err}") from None
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise CircuitbenchError(f"method {name}: hyperparameters() returned {type(params).__name__}; return a dict "
                                "of names to values (e.g. dataclasses.asdict(self))")
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CircuitbenchError(f"method {name}: hyperparameters() holds a value a unit cannot record ({err}); "
                                "use numbers, strings, booleans, None, lists and dicts") from None
    return params
