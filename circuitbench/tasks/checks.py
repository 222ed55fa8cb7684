"""Validity checks: each example's correct completion is right and its incorrect one is wrong.

For side `i` of a pair, the snippet `prompt_i + completion + suffix_i` is built twice, once with the
correct and once with the incorrect completion.

- `compile`: the correct snippet compiles and the incorrect one raises `SyntaxError`. Compiling runs
  no code, so this is done in-process.
- `exec`: the correct snippet runs without raising and the incorrect one fails to compile or raises
  (a `TypeError`, a `NameError`, a failed `assert` in the suffix...). All snippets of a task run in
  ONE fresh `python -I` subprocess, in an empty temporary directory, with socket creation disabled,
  a per-snippet time limit (`check.timeout_s`, by `setitimer`) and an overall one.
- `none`: nothing is run; the spec says why.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from circuitbench.errors import TaskError
from circuitbench.tasks.pairs import Pair, make_pairs
from circuitbench.tasks.spec import SPLITS, SplitName, TaskSpec

Completion = Literal["correct", "incorrect"]
"""Which completion of an example a check ran."""

log = logging.getLogger(__name__)

_RUNNER = r"""
import contextlib, io, json, signal, socket, sys, warnings

def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in task checks")

socket.socket = socket.create_connection = socket.getaddrinfo = _no_network

class _Timeout(BaseException):
    pass

def _alarm(signum, frame):
    raise _Timeout()

signal.signal(signal.SIGALRM, _alarm)
request = json.load(sys.stdin)
results = []
for code in request["snippets"]:
    sink = io.StringIO()
    signal.setitimer(signal.ITIMER_REAL, request["timeout"])
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(compile(code, "<snippet>", "exec"), {"__name__": "__main__"})
        result = [True, ""]
    except _Timeout:
        result = [False, "timed out"]
    except BaseException as err:
        result = [False, f"{type(err).__name__}: {err}"[:300]]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    results.append(result)
sys.__stdout__.write(json.dumps(results))
"""


@dataclass(frozen=True, slots=True)
class CheckFailure:
    """One example whose check did not come out as expected."""

    split: str
    pair_id: int
    side: int
    completion: Completion
    problem: str

    def __str__(self) -> str:
        return f"{self.split} pair {self.pair_id} side {self.side}: {self.completion} completion {self.problem}"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The outcome of a task's validity check."""

    task: str
    kind: str
    n_examples: int
    failures: tuple[CheckFailure, ...]

    @property
    def ok(self) -> bool:
        """Whether every example passed."""
        return not self.failures


def _snippets(pairs: Sequence[Pair]) -> list[tuple[Pair, int, Completion, str]]:
    """(pair, side, 'correct'|'incorrect', code) for every example and both completions."""
    out: list[tuple[Pair, int, Completion, str]] = []
    for pair in pairs:
        for side in (0, 1):
            both: tuple[tuple[Completion, str], ...] = (("correct", pair.correct(side)),
                                                         ("incorrect", pair.incorrect(side)))
            for which, comp in both:
                out.append((pair, side, which, pair.prompts[side] + comp + pair.suffixes[side]))
    return out


def _compile_ok(code: str) -> tuple[bool, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(code, "<snippet>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as err:
            return False, f"{type(err).__name__}: {err}"
    return True, ""


def _exec_all(codes: list[str], timeout_s: float) -> list[tuple[bool, str]]:
    """Run snippets in one isolated subprocess; (ran cleanly, error) per snippet."""
    overall = 30.0 + timeout_s * len(codes)
    # Snippets may write small files; a RAM-backed directory keeps thousands of them fast.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="circuitbench-check-", dir=shm) as tmp:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp, "PYTHONHASHSEED": "0"}
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", _RUNNER],
                input=json.dumps({"snippets": codes, "timeout": timeout_s}),
                capture_output=True,
                text=True,
                cwd=tmp,
                env=env,
                timeout=overall,
            )
        except subprocess.TimeoutExpired as err:
            raise TaskError(f"exec check did not finish within {overall:.0f} s") from err
    if proc.returncode != 0:
        raise TaskError(f"exec check subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return [(bool(ok), str(msg)) for ok, msg in json.loads(proc.stdout)]


def check_pairs(spec: TaskSpec, pairs: Sequence[Pair]) -> CheckReport:
    """Run the spec's validity check over pairs.

    Args:
        spec: The task spec; its `check` says how to check.
        pairs: Pairs generated from that spec.

    Returns:
        The report, listing every example that did not pass.

    Raises:
        TaskError: for an inverted control, or when the check itself cannot run (the subprocess
            failed or hung).
    """
    if spec.inverted:
        raise TaskError(f"{spec.name} is a control whose labels are wrong by design; check {spec.base_name}.")
    snippets = _snippets(pairs)
    kind = spec.check.kind
    if kind == "none":
        return CheckReport(spec.name, kind, 2 * len(pairs), ())
    codes = [code for *_, code in snippets]
    if kind == "compile":
        results = [_compile_ok(code) for code in codes]
        verb = "compile"
    else:
        results = _exec_all(codes, spec.check.timeout_s)
        verb = "run"
    failures = []
    for (pair, side, which, _), (ok, err) in zip(snippets, results, strict=True):
        if which == "correct" and not ok:
            failures.append(CheckFailure(pair.split, pair.pair_id, side, which, f"fails to {verb}: {err}"))
        elif which == "incorrect" and ok:
            failures.append(CheckFailure(pair.split, pair.pair_id, side, which, f"also {verb}s"))
    report = CheckReport(spec.name, kind, 2 * len(pairs), tuple(failures))
    if failures:
        log.warning(
            "%s: %d of %d examples fail the %s check",
            spec.name,
            len(failures),
            2 * len(pairs),
            kind,
        )
    return report


def check_task(spec: TaskSpec, splits: Sequence[SplitName] = SPLITS) -> CheckReport:
    """Generate a task's pairs for the given splits and check every example.

    Raises:
        TaskError: when the check itself cannot run.
    """
    pairs = [p for split in splits for p in make_pairs(spec, split)]
    return check_pairs(spec, pairs)
