"""Seeded contrast-pair generation: a spec and a split give the same pairs, byte for byte, anywhere.

Pair `k` of a split uses template `k mod (number of templates)`, so templates are balanced; then one
entry is drawn from every pool (in sorted pool order) with a `random.Random` seeded from the task's
name, split and pair_seed (never from Python's salted `hash`). A draw whose prompts repeat an earlier
pair, or that gives two `distinct` slots the same value, is redrawn. Side `i` of a pair fills the
contrast slots with `contrast.sides[i]`; its correct completion is `completions[i]` and its
incorrect one `completions[1 - i]`. Template `values` override pool draws.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Literal

from circuitbench.errors import SpecError, TaskError
from circuitbench.tasks.slots import SLOT
from circuitbench.tasks.spec import SPLITS, SplitName, TaskSpec

_MAX_DEPTH = 8
_MAX_TRIES = 200


@dataclass(frozen=True, slots=True)
class Pair:
    """Two prompts identical except for the contrast detail, with opposite answers.

    Side `i`'s correct completion is `answers[i]` and its incorrect one `answers[1 - i]`; each side
    is the other's counterfactual. Only the first token of an answer is scored.
    """

    task: str
    """Task name (`NAME:inverted` for the control)."""
    split: Literal["train", "test"]
    """Which split the pair belongs to."""
    pair_id: int
    """Index of the pair within its split, from 0."""
    template: int
    """Index of the template within its split."""
    prompts: tuple[str, str]
    """Prompt of side 0 and side 1."""
    answers: tuple[str, str]
    """Completion correct for side 0 and for side 1."""
    suffixes: tuple[str, str]
    """Code after the completion of side 0 and side 1, for validity checks only."""
    task_hash: str
    """The spec's content hash."""

    def correct(self, side: int) -> str:
        """The correct completion of a side."""
        return self.answers[side]

    def incorrect(self, side: int) -> str:
        """The incorrect completion of a side."""
        return self.answers[1 - side]


def render(text: str, values: dict[str, str]) -> str:
    """Fill `${slot}`s in text, repeatedly, since slot values may contain slots themselves.

    Raises:
        SpecError: on a slot with no value, or slots nested deeper than 8 levels.
    """
    for _ in range(_MAX_DEPTH):
        if "${" not in text:
            return text

        def fill(m: re.Match[str]) -> str:
            try:
                return values[m.group(1)]
            except KeyError:
                raise SpecError(f"slot ${{{m.group(1)}}} has no value") from None

        new = SLOT.sub(fill, text)
        if new == text:
            return text
        text = new
    raise SpecError(f"slots nested more than {_MAX_DEPTH} deep in {text[:60]!r}")


def _rng(spec: TaskSpec, split: SplitName) -> random.Random:
    key = f"{spec.base_name}|{split}|{spec.pair_seed}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def make_pairs(spec: TaskSpec, split: SplitName) -> list[Pair]:
    """Generate a split's contrast pairs.

    Args:
        spec: The task spec (or its inverted control: same prompts, answers swapped).
        split: "train" or "test".

    Returns:
        `spec.split(split).n_pairs` pairs with distinct prompts, in pair_id order.

    Raises:
        TaskError: for an unknown split.
        SpecError: when the pools cannot fill that many distinct pairs, or a rendered prompt is
            invalid (ends in whitespace, or the two sides coincide).
    """
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    cfg = spec.split(split)
    pools = {**spec.pools, **cfg.pools}
    rng = _rng(spec, split)
    task_hash = spec.task_hash
    seen: set[tuple[str, str]] = set()
    pairs: list[Pair] = []
    for pair_id in range(cfg.n_pairs):
        t = pair_id % len(cfg.templates)
        tpl = cfg.templates[t]
        for _ in range(_MAX_TRIES):
            values: dict[str, str] = {}
            for name in sorted(pools):
                entry = rng.choice(pools[name])
                values.update(entry if isinstance(entry, dict) else {name: str(entry)})
            values.update(tpl.values)
            if any(len({render(values[s], values) for s in g}) < len(g) for g in spec.distinct):
                continue
            sides = [{**values, **side} for side in spec.contrast.sides]
            prompts = (render(tpl.prompt, sides[0]), render(tpl.prompt, sides[1]))
            if prompts not in seen:
                break
        else:
            raise SpecError(
                f"{spec.base_name}: {split}.templates.{t}: found only "
                f"{sum(p.template == t for p in pairs)} distinct pairs for the "
                f"{len(range(t, cfg.n_pairs, len(cfg.templates)))} this template must give; add pool "
                "values or templates, or lower n_pairs."
            )
        seen.add(prompts)
        where = f"{spec.base_name}: {split}.templates.{t}"
        if prompts[0] == prompts[1]:
            raise SpecError(f"{where}: both sides render the same prompt {prompts[0][-40:]!r}")
        for p in prompts:
            if p != p.rstrip():
                raise SpecError(f"{where}: a rendered prompt ends in whitespace: {p[-40:]!r}")
        answers = (render(spec.completions[0], values), render(spec.completions[1], values))
        if answers[0] == answers[1]:
            raise SpecError(f"{where}: both completions render as {answers[0]!r}")
        suffixes = (render(tpl.suffix, sides[0]), render(tpl.suffix, sides[1]))
        pairs.append(
            Pair(
                task=spec.name,
                split=split,
                pair_id=pair_id,
                template=t,
                prompts=prompts,
                answers=answers,
                suffixes=suffixes,
                task_hash=task_hash,
            )
        )
    return pairs
