"""A method's scores as the search takes them, checked once for every method (built in or a plugin)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from circuitbench.circuits.problem import Problem
from circuitbench.errors import CircuitbenchError


@contextlib.contextmanager
def plugin_errors(method: Any, name: str) -> Iterator[None]:
    """An exception raised inside a method from outside circuitbench (a plugin) as one error naming it."""
    try:
        yield
    except CircuitbenchError:
        raise
    except Exception as err:
        if type(method).__module__.startswith("circuitbench."):
            raise  # circuitbench's own methods: a bug here, with its traceback
        raise CircuitbenchError(f"method {name}: its node_scores raised {type(err).__name__}: {err}") from err


def check_scores(method: str, what: str, scores: Any, problem: Problem) -> Tensor:
    """A method's scores as the search takes them: one finite float per node (edge), on the problem's device.

    Raises:
        CircuitbenchError: naming the method and what it returned instead (a plugin's list, None, a wrong
            shape, NaN or infinite scores, which would otherwise rank an arbitrary "circuit").
    """
    unit = problem.level[:-1]
    if not isinstance(scores, Tensor):
        raise CircuitbenchError(f"method {method}: its {what} are {type(scores).__name__}, not a tensor; node_scores "
                                f"must return a torch tensor with one score per {unit}")
    if tuple(scores.shape) != (problem.size,):
        raise CircuitbenchError(f"method {method}: its {what} have shape {tuple(scores.shape)}, the model has "
                                f"{problem.size} {problem.level}; node_scores must return one score per {unit}")
    if scores.is_complex():
        raise CircuitbenchError(f"method {method}: its {what} are {scores.dtype}; give real numbers")
    bad = int((~torch.isfinite(scores.float())).sum())
    if bad:
        raise CircuitbenchError(f"method {method}: {bad} of its {problem.size} {what} are NaN or infinite, so no "
                                "ranking of the nodes follows from them; fix the method (or the model's activations)")
    return scores if scores.is_floating_point() else scores.float()
