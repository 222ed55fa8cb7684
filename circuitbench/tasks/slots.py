"""The slots of a task spec as a graph: which pool fills which slot, what a text can reach, and cycles.

Used by `TaskSpec`'s validation to name every slot a template or pool refers to that nothing defines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from circuitbench.tasks.spec import Contrast

SLOT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""A slot reference in a template: `${name}`."""


def slot_refs(text: str) -> list[str]:
    """The slot names a template refers to, in order of appearance."""
    return SLOT.findall(text)


def slots_of(
    pools: Mapping[str, list[str] | list[dict[str, str]]], split_pools: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Map each slot to the pool that fills it; list mapping pools with uneven keys or clashes.

    `split_pools` maps the names of split-level pools to their field path (`train.pools`); the
    others are task-level (`pools`).
    """
    slots: dict[str, str] = {}
    problems: list[str] = []
    for name, pool in pools.items():
        where = split_pools.get(name, "pools")
        if isinstance(pool[0], dict):
            keys = set(pool[0])
            for j, entry in enumerate(pool):
                if set(entry) != keys:
                    problems.append(
                        f"{where}.{name}.{j}: keys {sorted(entry)} differ from the first entry's {sorted(keys)}"
                    )
        else:
            keys = {name}
        for slot in keys:
            if slot in slots:
                problems.append(f"{where}.{name}: slot {slot!r} is also filled by pool {slots[slot]!r}")
            slots[slot] = name
    return slots, problems


def slot_values(pools: Mapping[str, list[str] | list[dict[str, str]]]) -> dict[str, list[str]]:
    """All values each slot can take."""
    out: dict[str, list[str]] = {}
    for name, pool in pools.items():
        for entry in pool:
            for slot, value in entry.items() if isinstance(entry, dict) else [(name, entry)]:
                out.setdefault(slot, []).append(value)
    return out


def reachable(
    text: str,
    pools: Mapping[str, list[str] | list[dict[str, str]]],
    contrast: Contrast,
    fixed: Mapping[str, str] | None = None,
) -> set[str]:
    """Slots a text refers to, directly or through slot values."""
    values = slot_values(pools)
    for slot, value in (fixed or {}).items():
        values.setdefault(slot, []).append(value)
    for side in contrast.sides:
        for slot, value in side.items():
            values.setdefault(slot, []).append(value)
    seen: set[str] = set()
    todo = slot_refs(text)
    while todo:
        slot = todo.pop()
        if slot in seen:
            continue
        seen.add(slot)
        for value in values.get(slot, []):
            todo.extend(slot_refs(value))
    return seen


def find_cycle(pools: Mapping[str, list[str] | list[dict[str, str]]]) -> list[str] | None:
    """A cycle among slot values that refer to other slots, or None."""
    graph = {slot: {r for v in vals for r in slot_refs(v)} for slot, vals in slot_values(pools).items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state:
                found = visit(nxt, [*path, node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None
