"""YAML → TaskSpec: find bundled or user spec files; errors name the file and the field path."""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from circuitbench.errors import SpecError, TaskError
from circuitbench.tasks.spec import TaskSpec
from circuitbench.validation import format_validation_error

log = logging.getLogger(__name__)

TASK_NAMES: tuple[str, ...] = (
    "single_double_quote",
    "bracket_counting",
    "set_or_string",
    "set_or_string_fixedvarname",
    "while_return_true",
    "else_elif",
    "with_as",
    "with_open",
    "for_while",
    "if_ternary",
    "if_equals",
    "fstring_brace",
    "bracket_brace",
    "var_swap",
    "var_if",
    "indent_for",
    "lambda_func",
    "enumerate_range",
    "final_kwarg",
    "class_init",
)
"""The paper's 20 task names in the paper's order; bundled specs are listed this way."""

INVERTED = ":inverted"
"""Suffix addressing a task's inverted-label control (Drori 2026): same prompts, answers swapped."""


def specs_dir() -> Path:
    """The directory of the bundled spec files (the repository's `task_specs/`)."""
    return Path(str(importlib.resources.files("circuitbench.task_specs")))


def spec_names() -> list[str]:
    """Names of the bundled specs: the paper's order first, then any others alphabetically."""
    found = {p.stem for p in specs_dir().glob("*.yaml")}
    order = {name: i for i, name in enumerate(TASK_NAMES)}
    return sorted(found, key=lambda n: (order.get(n, len(order)), n))


def _display(path: Path) -> str:
    """Short path for messages: `task_specs/x.yaml` for bundled specs."""
    try:
        return f"task_specs/{path.resolve().relative_to(specs_dir().resolve())}"
    except ValueError:
        return str(path)


def _unknown_task(name: str) -> str:
    """'Unknown task' with the options, the closest name, and the control suffix kept."""
    options = spec_names()
    base = name.removesuffix(INVERTED)
    suffix = name[len(base) :]
    close = difflib.get_close_matches(base, options, n=1)
    hint = f" Did you mean {close[0] + suffix!r}?" if close else ""
    return (
        f"unknown task {name!r}.{hint} Options: {', '.join(options)} "
        f"(add {INVERTED} for a task's inverted-label control), or a path to a spec file (.yaml)."
    )


@functools.lru_cache(maxsize=128)
def _load_file(path: Path, mtime_ns: int, size: int) -> TaskSpec:
    where = _display(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        pos = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{where}{pos}: not valid YAML: {problem}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{where}: cannot read spec file: {err}") from err
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of spec fields, got {type(data).__name__}")
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, where, TaskSpec)) from None
    if spec.name != path.stem:
        raise SpecError(f"{where}: name: {spec.name!r} must equal the file name {path.stem!r}")
    return spec


def _is_path(text: str) -> bool:
    return Path(text).suffix in (".yaml", ".yml") or "/" in text or "\\" in text


def load_spec(name_or_path: str | Path) -> TaskSpec:
    """Load a task spec by bundled name (`set_or_string`, `set_or_string:inverted`) or file path.

    Args:
        name_or_path: A bundled task name, optionally with `:inverted`, or a path to a YAML file.

    Returns:
        The validated spec.

    Raises:
        TaskError: when the name is neither a bundled task nor an existing file.
        SpecError: when the file is not valid YAML or not a valid spec; the message names the file,
            the field path and what was expected.
    """
    text = str(name_or_path)
    if text.endswith(INVERTED):
        base = text.removesuffix(INVERTED)
        if not _is_path(base) and base not in spec_names():
            raise TaskError(_unknown_task(text))
        return load_spec(base).invert()
    path = Path(text)
    if not _is_path(text):
        if text not in spec_names():
            raise TaskError(_unknown_task(text))
        path = specs_dir() / f"{text}.yaml"
    if not path.is_file():
        raise TaskError(f"{path}: no such spec file.")
    stat = path.stat()
    return _load_file(path.resolve(), stat.st_mtime_ns, stat.st_size)


_USER_SPECS: dict[str, TaskSpec] = {}
"""Specs loaded from the user's files in this process (`--tasks path/to/spec.yaml`), by name."""


def use_task(name_or_path: str) -> str:
    """A task for `--tasks`: a bundled name (`NAME:inverted` too), or a spec file, loaded and made known by name.

    After this, `get_task(name)` finds a file's spec in this process (the unit names the task by name and
    content hash, so a result is tied to exactly that spec).

    Returns:
        The task's name (with `:inverted` kept).

    Raises:
        TaskError: for an unknown name or a missing file, or a file whose task is named like a bundled one.
        SpecError: for an invalid spec file, naming the file and field.
    """
    base = name_or_path.removesuffix(INVERTED)
    if not _is_path(base):
        get_task(name_or_path)
        return name_or_path
    spec = load_spec(base)
    if spec.name in spec_names() and load_spec(spec.name).task_hash == spec.task_hash:
        return spec.name + name_or_path[len(base):]  # a bundled spec given by its path: the bundled task
    if spec.name in spec_names():
        raise TaskError(f"{base}: the spec is named {spec.name!r}, like a bundled task; give it another name (and "
                        "file name) so that results never mix the two")
    known = _USER_SPECS.get(spec.name)
    if known is not None and known.task_hash != spec.task_hash:
        raise TaskError(f"{base}: another spec named {spec.name!r} was already loaded in this run; task names "
                        "must be unique")
    _USER_SPECS[spec.name] = spec
    return spec.name + name_or_path[len(base):]


def user_spec(name: str) -> TaskSpec | None:
    """The spec behind a task name that came from the user's file (`use_task`), None for a bundled task."""
    base = name.removesuffix(INVERTED)
    return None if base in spec_names() else _USER_SPECS.get(base)


def register_spec(data: dict[str, Any], task_hash: str, where: str) -> None:
    """Make a spec stored with a result (`Provenance.task_spec`) known by name again, as `use_task` does.

    Raises:
        TaskError: when the stored spec does not hash to the unit's task_hash, or clashes with a bundled or
            loaded task of the same name.
    """
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as err:
        raise TaskError(f"{where}: the stored task spec is not valid ({str(err).splitlines()[0]})") from None
    if task_hash not in (spec.task_hash, spec.invert().task_hash):  # the unit may be the task's control
        raise TaskError(f"{where}: the stored spec of {spec.name!r} hashes to {spec.task_hash}, the unit says "
                        f"{task_hash}; the file was altered")
    known = _USER_SPECS.get(spec.name)
    if spec.name in spec_names() or (known is not None and known.task_hash != spec.task_hash):
        raise TaskError(f"{where}: task {spec.name!r} clashes with another task of that name loaded here")
    _USER_SPECS[spec.name] = spec


def get_task(name: str) -> TaskSpec:
    """The bundled task of that name, or a spec file's loaded with `use_task`; `NAME:inverted` is its control.

    Raises:
        TaskError: for an unknown name, listing the options and the closest one.
    """
    base = name.removesuffix(INVERTED)
    if base in _USER_SPECS and base not in spec_names():
        spec = _USER_SPECS[base]
        return spec.invert() if name.endswith(INVERTED) else spec
    if base not in spec_names():
        raise TaskError(_unknown_task(name))
    return load_spec(name)


def list_specs() -> list[TaskSpec]:
    """All bundled task specs, in the paper's order."""
    return [load_spec(name) for name in spec_names()]
