"""The reproducibility contract: what recomputing a stored unit must give, and on which machine, stated once.

- **Same machine kind** (the same CPU kind, thread count, device and torch version as the unit's
  provenance records): the same circuit and every number bit for bit.
- **Another CPU kind** (AMX against AVX-512 only, `circuitbench.hardware.cpu_kind`): their matrix kernels
  sum in other orders, so a float32 number ends a few units in the 7th digit apart (measured on the
  committed units: 2.2e-7 relative in a sufficiency loss, 1.4e-6 in an edge-level CMD). A learned mask
  (400 steps of hard thresholds) can turn such a difference into a few nodes more or fewer (measured:
  if_equals 61 nodes / 205 edges on AVX-512 against 63 / 222 on AMX; single_double_quote 85 / 282 against
  83 / 272).
  So across kinds:
  * the status and whether the control met its target are the same;
  * the full model's numbers agree within `RTOL` (relative) or `ATOL` (absolute);
  * node counts (the circuit's and its control's) agree within `NODE_ATOL` nodes or `NODE_RTOL` of the
    stored count, whichever is larger; edge counts within `EDGE_ATOL` or `EDGE_RTOL` (each node moved
    carries its edges: 2 nodes fewer took 17 edges with them above);
  * when the circuit kept is the same one, its numbers agree within `RTOL` / `ATOL` too; when it is not,
    they are the numbers of another circuit and only its status (it meets the target or not) is compared.

One function decides (`differences`); the reproduce test and `circuit eval` both call it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from circuitbench.results.schema import Provenance
from circuitbench.results.unit import INTERVAL_NUMBERS

RTOL = 1e-4
"""Relative tolerance of a float number across CPU kinds (70x the largest difference measured)."""
ATOL = 1e-6
"""Absolute tolerance of a float number across CPU kinds (for numbers near zero)."""
NODE_ATOL, NODE_RTOL = 3, 0.05
"""A node count may move by this many nodes across CPU kinds, or by this fraction, whichever is larger."""
EDGE_ATOL, EDGE_RTOL = 10, 0.10
"""An edge count may move by this many edges across CPU kinds, or by this fraction, whichever is larger."""

MODEL_NUMBERS = ("full_accuracy", "full_loss")
"""Numbers of the full model: the same circuit or not, they agree within the float tolerance."""
CIRCUIT_NUMBERS = ("target_loss", "test_target_loss", "circuit_train_loss", "sufficiency_loss",
                   "sufficiency_accuracy", "necessity_loss", "necessity_accuracy", "faithfulness", "cpr", "cmd",
                   "cpr_log", "cmd_log", *(f"{k}_{end}" for k in INTERVAL_NUMBERS for end in ("lo", "hi")))
"""Numbers of the circuit found: compared within the float tolerance when the circuit is the same one (a unit
stored before a number existed is not compared on it)."""
SIZES = {"nodes": (NODE_ATOL, NODE_RTOL), "control_nodes": (NODE_ATOL, NODE_RTOL), "edges": (EDGE_ATOL, EDGE_RTOL),
         "control_edges": (EDGE_ATOL, EDGE_RTOL)}
"""Circuit sizes and their tolerances across kinds (atol, rtol); equal on the same machine kind."""
EQUAL = ("status", "control_met_target")
"""Equal everywhere."""


def machine(prov: Provenance) -> dict[str, Any]:
    """What a bit-identical recomputation needs to share with the unit's run."""
    return {"cpu_kind": prov.cpu_kind, "threads": prov.threads, "device": prov.device,
            "torch_version": prov.torch_version}


def _describe(m: dict[str, Any]) -> str:
    return (f"{m['cpu_kind'] or 'an unrecorded CPU kind'}, {m['threads']} threads, {m['device']}, "
            f"torch {m['torch_version']}")


def verdict(stored: Provenance, now: dict[str, Any], pairs: list[tuple[float | None, float | None]]) -> str:
    """One sentence on re-measured numbers (`(now, stored)` pairs): exact, within the float tolerance, or beyond.

    `now` is this process's `machine` (keys as `machine` gives them).

    What `circuitbench circuit eval` prints; beyond exactness it names the machine that made the unit and this one.
    """
    measured = [(now, then) for now, then in pairs if then is not None]
    if all(_identical(now, then) for now, then in measured):
        return "The saved circuit reproduces its stored numbers exactly."
    where = f"made on {_describe(machine(stored))}; measured now on {_describe(now)}"
    if all(close(now, then) for now, then in measured):
        return (f"The saved circuit reproduces its stored numbers within rel {RTOL:g} / abs {ATOL:g}, not bit for bit: "
                f"{where} (docs/reference/reproducing.md).")
    return f"Some numbers differ from the stored ones beyond rel {RTOL:g}: {where}."


def same_machine_kind(stored: Provenance, now: Provenance) -> bool:
    """Whether `now` ran where `stored`'s numbers must come out bit for bit (an unrecorded CPU kind: no)."""
    return stored.cpu_kind is not None and machine(stored) == machine(now)


def close(a: float | None, b: float | None) -> bool:
    """Equal within the cross-kind float tolerance (None and NaN equal only themselves)."""
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def count_close(now: int | None, stored: int | None, atol: int, rtol: float) -> bool:
    """A size within `atol` or `rtol` of the stored one, whichever is larger."""
    if now is None or stored is None:
        return now is stored
    return abs(now - stored) <= max(atol, rtol * stored)


def differences(stored: Mapping[str, Any], now: Mapping[str, Any], exact: bool, same_circuit: bool) -> list[str]:
    """What breaks the contract between a stored summary row and a recomputed one (empty: it holds).

    Args:
        stored: the committed unit's summary.
        now: the recomputation's summary.
        exact: whether the two ran on the same machine kind (`same_machine_kind`): then every number must
            be equal.
        same_circuit: whether the recomputation kept the same nodes (or edges) as the stored circuit.
    """
    keys = [*EQUAL, *SIZES, *MODEL_NUMBERS, *CIRCUIT_NUMBERS]
    if exact:
        return [f"{k}: {now.get(k)!r} now, {stored.get(k)!r} stored (the same machine kind: must be equal)"
                for k in keys if k in stored and not _identical(now.get(k), stored.get(k))]
    out = [f"{k}: {now.get(k)!r} now, {stored.get(k)!r} stored" for k in EQUAL if now.get(k) != stored.get(k)]
    out += [f"{k}: {now.get(k)} now, {stored.get(k)} stored (more than max({a}, {r:.0%}) apart)"
            for k, (a, r) in SIZES.items() if k in stored and not count_close(now.get(k), stored.get(k), a, r)]
    floats = [*MODEL_NUMBERS, *CIRCUIT_NUMBERS] if same_circuit else list(MODEL_NUMBERS)
    out += [f"{k}: {now.get(k)!r} now, {stored.get(k)!r} stored (beyond rel {RTOL:g} / abs {ATOL:g})"
            for k in floats if k in stored and not close(now.get(k), stored.get(k))]
    return out


def _identical(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)
