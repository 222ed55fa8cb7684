"""Code from outside the package: objects named as `FILE.py:NAME` or `module:NAME`, and entry points.

A model or a method written by a researcher does not have to live in circuitbench. Two ways in:

- **A name on the command line**: `--method path/to/ranker.py:Ranker` or `--method mypkg.methods:Ranker`
  (as `--model FILE.py:FUNCTION` names a model factory). The string is recorded in every unit, so every
  process of a run, Ray's workers included, loads it again.
- **An entry point** of an installed package, in the group `circuitbench.methods` (found by name:
  `--method NAME`) or `circuitbench.models` (a `ModelFormat`, tried on model directories).

`origin(obj)` says where a loaded object came from (the distribution and its version) for provenance.
Imports only `errors`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from circuitbench.errors import ConfigError, ModelNotFoundError

PYTHON_NAME = re.compile(r"(?P<target>.+\.py|[A-Za-z_][\w.]*):(?P<name>[A-Za-z_]\w*)")
"""`FILE.py:NAME` or `package.module:NAME`."""

def is_python_name(spec: str) -> bool:
    """Whether a string names a Python object (`FILE.py:NAME` or `module:NAME`)."""
    return PYTHON_NAME.fullmatch(spec) is not None


def load_object(spec: str, flag: str, what: str = "an object") -> Any:
    """The object `FILE.py:NAME` or `module:NAME` names (not called).

    Args:
        spec: The string.
        flag: The flag it came from, for messages (`--method`).
        what: What the name should be, for messages ("a function", "a method class").

    Raises:
        ModelNotFoundError: when the file, module or name does not exist.
        ConfigError: when the string is not of that form, or running the file fails.
    """
    m = PYTHON_NAME.fullmatch(spec)
    if m is None:
        raise ConfigError(f"{flag} {spec}: name {what} as path/to/file.py:NAME or package.module:NAME")
    target, name = m["target"], m["name"]
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"{flag} {spec}: {path} is not a file; name a Python file and {what} in it, "
                                     f"as path/to/file.py:NAME")
        module_name = f"_circuitbench_plugin_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            loader = importlib.util.spec_from_file_location(module_name, path)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            sys.modules[module_name] = module
            try:
                loader.loader.exec_module(module)
            except Exception as err:
                del sys.modules[module_name]
                raise ConfigError(f"{flag} {spec}: running {path} failed ({type(err).__name__}: {err})") from err
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ModelNotFoundError(f"{flag} {spec}: cannot import {target} ({err})") from err
    obj = getattr(module, name, None)
    if obj is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        noun = what.split(" ", 1)[-1]  # "a function" -> "function"
        raise ModelNotFoundError(f"{flag} {spec}: {target} has no {noun} {name!r}; it has "
                                 f"{', '.join(found[:12]) or 'none'}")
    return obj


def entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    """The entry points of an installed package in a group, by name (the first of equal names wins)."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def load_entry_point(ep: importlib.metadata.EntryPoint, flag: str) -> Any:
    """What an entry point names, loaded.

    Raises:
        ConfigError: naming the plugin and its package when importing it fails.
    """
    try:
        return ep.load()
    except Exception as err:  # a plugin's import can fail any way
        package = f" (package {ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
        raise ConfigError(f"{flag} {ep.name}: the plugin {ep.value}{package} failed to load "
                          f"({type(err).__name__}: {err})") from None


def origin(obj: Any) -> dict[str, str]:
    """Where an object's code comes from: its module, and the distribution and version that ship it."""
    module = getattr(obj, "__module__", "") or ""
    out = {"module": module}
    top = module.split(".")[0]
    if top == "circuitbench":
        out.update(package="circuitbench", version=_version("circuitbench"))
        return out
    dists = importlib.metadata.packages_distributions().get(top, [])
    if dists:
        out.update(package=dists[0], version=_version(dists[0]))
    elif module.startswith("_circuitbench_plugin_"):
        out.update(package="(a file)", version="")
    return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
