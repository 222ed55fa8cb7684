"""What every subcommand shares: tables, `--tasks` and `--method-arg`, and flags built from settings models.

The flags of the unit settings and run options are built from `UnitSettings` and `RunOptions`, so a
setting's name, type, default and help are declared once, on the model.
"""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from circuitbench.errors import CircuitbenchError

Handler = Callable[[argparse.Namespace], int]
Subparsers = argparse._SubParsersAction

TASKS_HELP = ("task names (NAME:inverted for a task's inverted-label control) or spec files (path/to/spec.yaml), "
              "separated by commas or spaces, or all (default: all)")


def print_table(rows: Sequence[Mapping[str, Any]], fmt: str, floatfmt: str = ".4g") -> None:
    """Print rows as a tabulate table (people) or JSON (scripts)."""
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    from tabulate import tabulate

    print(tabulate(rows, headers="keys", floatfmt=floatfmt))


def task_names(values: Sequence[str]) -> list[str]:
    """`--tasks` as a list: every value split at commas (`a,b c` is a, b, c), blanks dropped.

    Raises:
        CircuitbenchError: when the values name no task at all (`--tasks ""`).
    """
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if values and not names:
        raise CircuitbenchError("--tasks: the value names no task; give task names, spec files (.yaml) or `all` "
                                "(`circuitbench tasks list` lists them)")
    return names


def spec_names(values: Sequence[str]) -> list[str] | None:
    """`--tasks` for the task-spec commands: None (every bundled task) for `all`."""
    names = task_names(values)
    return None if not names or names == ["all"] else names


def method_name(name: str) -> str:
    """The registry's one spelling of a method name (`learned-mask` -> `learned_mask`)."""
    from circuitbench.circuits.methods import canonical_name

    return canonical_name(name)


def method_args(items: list[str]) -> dict[str, Any]:
    """`--method-arg KEY=VALUE` flags as keyword arguments (VALUE read as JSON when it parses: 1, 0.5, null).

    A KEY may be spelled as a flag (`batch-pairs`) or as the field (`batch_pairs`).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CircuitbenchError(f"--method-arg {item}: write KEY=VALUE, e.g. --method-arg length_groups=1")
        name = method_name(key)  # one spelling rule for names: dashes read as underscores
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def seed_list(value: str | None) -> list[int] | None:
    """`--seeds 0,1,2` as a list of distinct seeds (None when not given).

    Raises:
        CircuitbenchError: for anything but comma-separated whole numbers.
    """
    if value is None:
        return None
    try:
        seeds = list(dict.fromkeys(int(s) for s in value.split(",") if s.strip()))
    except ValueError:
        seeds = []
    if not seeds:
        raise CircuitbenchError(f"--seeds {value}: give comma-separated whole numbers, e.g. --seeds 0,1,2")
    return [seed_value(s, "--seeds") for s in seeds]


MAX_SEED = 2**63 - 1
"""The largest seed: units store it as a signed 64-bit integer."""


def seed_value(seed: int, flag: str = "--seed") -> int:
    """`--seed N` checked against the range a unit can store.

    Raises:
        CircuitbenchError: for a negative seed or one beyond 2**63 - 1.
    """
    if not 0 <= seed <= MAX_SEED:
        raise CircuitbenchError(f"{flag} {seed}: outside 0 ... 2**63 - 1 (a seed is stored as a 64-bit integer); "
                                "give a smaller whole number")
    return seed


SEEDS_HELP = ("run every task with each of these seeds (e.g. 0,1,2; replaces --seed) and report the spread of the "
              "circuits over seeds (nodes, edges, faithfulness, CPR) and their overlap (mean pairwise Jaccard of "
              "nodes and of edges)")


def set_threads(threads: int | None) -> None:
    """Apply `--threads` (None: torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise CircuitbenchError(f"--threads {threads}: give a positive number of threads")
    import torch

    torch.set_num_threads(threads)


def check_address(args: argparse.Namespace) -> None:
    """`--address` names a Ray cluster: only with `--executor ray`."""
    if args.address is not None and args.executor != "ray":
        raise CircuitbenchError(f"--address {args.address}: names a Ray cluster, used only with --executor ray; add "
                                "--executor ray or drop --address")


def check_suffix(out: Path, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse an --out whose suffix promises another format than the one written."""
    if Path(out).suffix.lower() not in suffixes:
        raise CircuitbenchError(f"--out {out}: this writes {what}; give a file name ending in "
                                f"{' or '.join(suffixes)}")


def add_hub_flags(p: argparse.ArgumentParser) -> None:
    """`--revision` and `--trust-remote-code`, from `RunOptions`."""
    from circuitbench.runs.config import RunOptions

    add_setting_flags(p, RunOptions, ("revision", "trust_remote_code"))


def add_setting_flags(p: argparse.ArgumentParser, model: type[BaseModel], names: Sequence[str] | None = None,
                      **defaults: Any) -> None:
    """One flag per field of a settings model, named, typed and documented by the field.

    `--target-loss` for `target_loss`, with the field's type, choices (a Literal), default and docstring as
    help; a bool that defaults to True is turned off by `--no-NAME`, one that defaults to False turned on by
    `--NAME`. `defaults` overrides a field's default for this command.
    """
    for name in names or list(model.model_fields):
        field = model.model_fields[name]
        flag = "--" + name.replace("_", "-")
        text = " ".join((field.description or "").split()).replace("%", "%%")
        default = defaults.get(name, field.default)
        if field.annotation is bool:
            if default:
                p.add_argument(f"--no-{name.replace('_', '-')}", dest=f"no_{name}", action="store_true", help=text)
            else:
                p.add_argument(flag, action="store_true", help=text)
        elif typing.get_origin(field.annotation) is typing.Literal:
            p.add_argument(flag, choices=list(typing.get_args(field.annotation)), default=default, help=text)
        else:
            kind: Any = next((a for a in typing.get_args(field.annotation) if a is not type(None)), field.annotation)
            p.add_argument(flag, type=kind, default=default, help=text)


def setting_values(args: argparse.Namespace, model: type[BaseModel], names: Sequence[str] | None = None
                   ) -> dict[str, Any]:
    """The values of the flags `add_setting_flags` added, by field name."""
    out = {}
    for name in names or list(model.model_fields):
        field = model.model_fields[name]
        if field.annotation is bool and hasattr(args, f"no_{name}"):
            out[name] = not getattr(args, f"no_{name}")
        else:
            out[name] = getattr(args, name)
    return out
