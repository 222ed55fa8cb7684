"""The `circuitbench` console script: argument handling only, one module per group of subcommands.

`run` (run, sweep, compare, methods), `circuit` (show, eval, export, draw), `tasks` (the task specs and the
lm-eval export), `models` (inspect, train, val-loss), `board` (submit, leaderboard, report), and `common`
(what they share, including flags built from the settings models). Every handler parses its flags, calls
the library and prints; the logic lives in the library. Imports anything in circuitbench; nothing imports it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from circuitbench.cli.board import add_leaderboard, add_report, add_submit
from circuitbench.cli.bridge import add_bridge
from circuitbench.cli.circuit import add_circuit
from circuitbench.cli.common import Handler, Subparsers
from circuitbench.cli.models import add_inspect, add_train, add_val_loss
from circuitbench.cli.run import add_compare, add_methods, add_run, add_sweep
from circuitbench.cli.tasks import add_export, add_tasks
from circuitbench.errors import CircuitbenchError

SUBCOMMANDS: list[Callable[[Subparsers], None]] = [
    add_inspect,
    add_run,
    add_sweep,
    add_methods,
    add_compare,
    add_leaderboard,
    add_circuit,
    add_submit,
    add_report,
    add_train,
    add_val_loss,
    add_tasks,
    add_export,
    add_bridge,
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("circuitbench")
    except PackageNotFoundError:
        return "unknown (not installed)"



class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows every option's default (unless the help already says it, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is None or default is False
                or default == argparse.SUPPRESS or isinstance(action, argparse._HelpAction | argparse._VersionAction)):
            return text.strip()
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".strip()



class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults, for every subcommand too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """As argparse's; an option without help still gets a help line, to show its default."""
        default = kwargs.get("default")
        if args and str(args[0]).startswith("-") and kwargs.get("help") is None and default is not None \
                and default is not False:
            kwargs["help"] = "(default: %(default)s)"  # argparse prints no line at all for an option without help
        return super().add_argument(*args, **kwargs)



def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    parser = _Parser(
        prog="circuitbench",
        description="Circuit-size benchmark for mechanistic interpretability.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"circuitbench {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user-fixable errors print one message and exit 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except CircuitbenchError as err:
        print(f"circuitbench: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("circuitbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # a full disk, a folder that cannot be written: one line, never a traceback
        from circuitbench.results.files import os_error_reason

        where = f"{err.filename}: " if err.filename else ""
        print(f"circuitbench: error: {where}{os_error_reason(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
