"""Readable pydantic validation errors: file, field path, what was expected, and "did you mean"."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def _field_names_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model found by walking `loc` from `root` (for 'did you mean' hints)."""
    tp: Any = root
    for part in loc:
        while typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (types.UnionType, typing.Union) and len(args) == 1:
            tp = args[0]
        if typing.get_origin(tp) in (list, tuple, dict) and typing.get_args(tp):
            tp = typing.get_args(tp)[-1] if typing.get_origin(tp) is dict else typing.get_args(tp)[0]
        else:
            return []
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def format_validation_error(err: ValidationError, where: str, root: type[BaseModel]) -> str:
    """One line per problem: `FILE: FIELD.PATH: what was expected (got ...)`.

    Args:
        err: pydantic's error.
        where: the file (or other source) to name at the start of every line.
        root: the model that was validated, walked to list allowed fields and suggest the closest.
    """
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc)
        if e["type"] == "value_error":
            msg = str(e["ctx"]["error"]) if "ctx" in e else e["msg"]
            for line in msg.splitlines():
                lines.append(f"{where}: {path + ': ' if path else ''}{line}")
            continue
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = _field_names_at(root, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = f"unknown field; allowed: {', '.join(allowed)}" if allowed else msg
            if close:
                msg += f" (did you mean {close[0]!r}?)"
        elif e["type"] != "missing":
            shown = repr(e["input"])
            msg += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        lines.append(f"{where}: {path}: {msg}")
    return "\n".join(lines)
