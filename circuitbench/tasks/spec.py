"""The task spec schema: a pydantic `TaskSpec` per YAML file in `task_specs/`.

A spec describes a family of contrast pairs. Each pair draws one value per pool (a slot's value or,
for a mapping pool, several slots at once), fills a template, and renders it twice: once with each
side's contrast values. The two completions are the same strings for both sides; `completions[i]`
is correct for side i. Slots are written `${name}` (Python code is full of `{}`), and slot values,
contrast values and completions may themselves use slots.

Every field is documented by the docstring under it, and that text is carried into the JSON Schema
committed as `task_specs/schema.json`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from circuitbench.tasks.slots import find_cycle, reachable, slot_refs, slots_of

GENERATOR_VERSION = "1"
"""Bump when `make_pairs` would make other pairs from the same spec; part of the task hash."""

SplitName = Literal["train", "test"]
SPLITS: tuple[SplitName, SplitName] = ("train", "test")

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


_QUOTE_HINT = " (quote numbers, yes/no and null in YAML)"


def _check_pool(value: Any) -> Any:
    """One clear message for a malformed pool, instead of one per union member."""
    expected = "a non-empty list of strings, or a list of mappings from slot name to string"
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected {expected}, got {value!r}")
    if not isinstance(value[0], str | dict):
        raise ValueError(
            f"item 0: expected a string or a mapping, got {type(value[0]).__name__} {value[0]!r}" + _QUOTE_HINT
        )
    kind = str if isinstance(value[0], str) else dict
    for j, item in enumerate(value):
        if not isinstance(item, kind):
            hint = _QUOTE_HINT if isinstance(item, int | float | bool) or item is None else ""
            raise ValueError(
                f"item {j}: expected a {'string' if kind is str else 'mapping'} like item 0, got "
                f"{type(item).__name__} {item!r}{hint}"
            )
        if isinstance(item, dict):
            for slot, v in item.items():
                if not isinstance(v, str):
                    raise ValueError(
                        f"item {j}, slot {slot!r}: expected a string, got {type(v).__name__} {v!r}" + _QUOTE_HINT
                    )
    return value


Pool = Annotated[list[str] | list[dict[Name, str]], BeforeValidator(_check_pool)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Template(_Model):
    """One code context: the prompt up to the decision point, and what follows a completion."""

    prompt: NonEmpty
    """Code up to the decision point, with `${slot}`s; must use a contrast slot and must not end in
    whitespace (a trailing space or newline would be merged into the completion's first token)."""

    suffix: str = ""
    """Code appended after either completion for the validity check: the rest of the snippet, and
    for `exec` checks the calls and asserts that exercise it. Never shown to a model."""

    values: dict[Name, str] = {}
    """Fixed slot values for this template only (its indentation, say); they override pools."""


class Split(_Model):
    """The templates, split-specific pools and size of one split."""

    templates: Annotated[list[Template], Field(min_length=1)]
    """Templates of this split; train and test templates must be disjoint."""

    pools: dict[Name, Pool] = {}
    """Pools used only in this split. They add to the task's pools, or replace one of the same name;
    a pool named in both splits must have disjoint values (held-out names and values), except the
    empty string, which stands for an optional line left out."""

    n_pairs: Annotated[int, Field(ge=1)]
    """Number of contrast pairs (each is two examples) to generate."""


class Contrast(_Model):
    """The detail that flips the answer."""

    detail: NonEmpty
    """What differs between the two prompts of a pair, in words."""

    sides: tuple[dict[Name, str], dict[Name, str]]
    """Slot values of side 0 and side 1 (same slot names; values may use other slots). The prompts
    of a pair differ only where templates use these slots."""


class Check(_Model):
    """How the tests check that every generated example is right."""

    kind: Literal["compile", "exec", "none"]
    """`compile`: prompt + correct completion + suffix compiles and the incorrect one does not.
    `exec`: the correct snippet runs without error in a fresh subprocess (no network, with a time
    limit) and the incorrect one fails to compile or raises. `none`: cannot be checked (say why)."""

    reason: str | None = None
    """Why the check shows what it shows; required for `none`."""

    timeout_s: Annotated[float, Field(gt=0, le=10)] = 2.0
    """Per-snippet time limit for `exec` checks, in seconds."""


class TaskSpec(_Model):
    """A binary-choice next-token task: templates, pools, the contrast and the two completions."""

    name: Name
    """Task name as the paper writes it; equals the file name without `.yaml`."""

    probes: Annotated[str, StringConstraints(min_length=1, max_length=60)]
    """What the task probes, in a few words, for tables (`circuitbench tasks list`)."""

    description: NonEmpty
    """What the task probes, in full. A reconstructed task says so and what it is reconstructed
    from."""

    provenance: Literal["confirmed", "reconstructed"]
    """`confirmed`: the paper states the contrast; `reconstructed`: designed from the task name."""

    contrast: Contrast
    """The detail that differs between the two prompts of a pair."""

    completions: tuple[NonEmpty, NonEmpty]
    """Completion text correct for side 0 and side 1 (with slots). Only the first token is scored;
    the rest makes the snippet checkable."""

    pools: dict[Name, Pool] = {}
    """Slot value pools shared by both splits. A list of strings fills the slot of the pool's name;
    a list of mappings fills several related slots at once (e.g. a plural and its singular)."""

    distinct: list[Annotated[list[Name], Field(min_length=2)]] = []
    """Groups of pool slots that must take different values within a pair."""

    train: Split
    """The training split."""

    test: Split
    """The held-out split, with templates disjoint from train."""

    pair_seed: int = 0
    """Seed of the pair generator (`pair_seed`, not `seed`: a unit's `seed` seeds the method)."""

    max_tokens: Annotated[int, Field(ge=8)] = 255
    """Maximum prompt length in tokens; longer prompts are left-truncated (paper: 255)."""

    check: Check
    """The validity check run over every generated example."""

    @model_validator(mode="after")
    def _check_consistency(self) -> TaskSpec:
        problems = list(dict.fromkeys(self._problems()))  # unique, in order
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _problems(self) -> Iterable[str]:
        """Cross-field mistakes, each starting with its field path."""
        yield from _side_problems(self.contrast)
        if self.check.kind == "none" and not self.check.reason:
            yield "check.reason: required when check.kind is 'none' (say why it cannot be checked)"
        if self.provenance == "reconstructed" and "reconstruct" not in self.description.lower():
            yield "description: a reconstructed task must say in its description that it is one"
        for split_name in SPLITS:
            yield from self._split_problems(split_name)
        train_prompts = {t.prompt for t in self.train.templates}
        for i, tpl in enumerate(self.test.templates):
            if tpl.prompt in train_prompts:
                yield f"test.templates.{i}.prompt: also a train template; splits need disjoint ones"
        for name in sorted(set(self.train.pools) & set(self.test.pools)):
            common = [v for v in self.test.pools[name] if v and v in self.train.pools[name]]
            if common:
                yield f"test.pools.{name}: values also in train.pools.{name}: {common[:3]}"

    def _split_problems(self, split_name: str) -> Iterable[str]:
        """The mistakes of one split: its pools, completions, templates and distinct groups."""
        contrast_slots = set(self.contrast.sides[0])
        split: Split = getattr(self, split_name)
        pools = {**self.pools, **split.pools}
        slots, pool_problems = slots_of(pools, {n: f"{split_name}.pools" for n in split.pools})
        yield from pool_problems
        clash = contrast_slots & set(slots)
        if clash:
            yield f"contrast.sides: slot(s) {sorted(clash)} are also filled by a pool"
        shared: dict[str, str] = {}
        for i, comp in enumerate(self.completions):
            shared[f"completions.{i}"] = comp
            if contrast_slots & reachable(comp, pools, self.contrast):
                yield (
                    f"completions.{i}: uses a contrast slot; completions are the same text for "
                    "both sides, so they may only use pool slots"
                )
        for side, values in enumerate(self.contrast.sides):
            for slot, value in values.items():
                shared[f"contrast.sides.{side}.{slot}"] = value
        for pool_name, pool in pools.items():
            where = f"{split_name}.pools" if pool_name in split.pools else "pools"
            for j, entry in enumerate(pool):
                items = entry.items() if isinstance(entry, dict) else [(pool_name, str(entry))]
                for slot, value in items:
                    key = f"{where}.{pool_name}.{j}" + ("" if slot == pool_name else f".{slot}")
                    shared[key] = value
        yield from self._template_problems(split_name, split, pools, slots, shared)
        for g, group in enumerate(self.distinct):
            missing = sorted(set(group) - set(slots))
            if missing:
                yield f"distinct.{g}: {missing} are not pool slots; only pool slots can be kept distinct"
        cycle = find_cycle(pools)
        if cycle:
            yield f"{split_name}.pools: slots refer to each other: {' -> '.join(cycle)}"

    def _template_problems(self, split_name: str, split: Split, pools: dict[str, Any], slots: Any,
                           shared: dict[str, str]) -> Iterable[str]:
        """A split's templates: each uses a contrast slot, ends at a visible character, knows every slot."""
        contrast_slots = set(self.contrast.sides[0])
        for i, tpl in enumerate(split.templates):
            loc = f"{split_name}.templates.{i}"
            if not contrast_slots & reachable(tpl.prompt, pools, self.contrast, tpl.values):
                yield f"{loc}.prompt: uses no contrast slot {sorted(contrast_slots)}"
            if tpl.prompt != tpl.prompt.rstrip():
                yield f"{loc}.prompt: ends in whitespace; end at the last visible character"
            known = set(slots) | contrast_slots | set(tpl.values)
            texts = {f"{loc}.prompt": tpl.prompt, f"{loc}.suffix": tpl.suffix}
            texts.update({f"{loc}.values.{k}": v for k, v in tpl.values.items()})
            for where, text in {**texts, **shared}.items():
                unknown = sorted(set(slot_refs(text)) - known)
                if unknown:
                    refs = ", ".join("${" + u + "}" for u in unknown)
                    yield (
                        f"{where}: unknown slot(s) {refs}"
                        + ("" if where.startswith(loc) else f" (in {loc})")
                        + f"; defined: {', '.join(sorted(known)) or 'none'}"
                    )

    @property
    def inverted(self) -> bool:
        """Whether this is the inverted-label control of a task (`NAME:inverted`)."""
        return self.name.endswith(":inverted")

    @property
    def base_name(self) -> str:
        """The task's own name, without a control suffix."""
        return self.name.removesuffix(":inverted")

    def invert(self) -> TaskSpec:
        """The inverted-label control: the same prompts with the two completions swapped.

        Returns:
            A spec named `NAME:inverted` whose side 0 is labelled with side 1's completion and vice
            versa; `make_pairs` gives it exactly the prompts of the original.
        """
        if self.inverted:
            return self.model_copy(update={"name": self.base_name, "completions": self.completions[::-1]})
        return self.model_copy(update={"name": f"{self.name}:inverted", "completions": self.completions[::-1]})

    @property
    def task_hash(self) -> str:
        """Short sha256 of everything that determines the examples, plus the generator version.

        Prose (probes, description, contrast.detail) and the check are left out: fixing a typo does not
        change the examples, so it does not change the hash recorded with results.
        """
        data = self.model_dump(mode="json", exclude={"probes": True, "description": True, "check": True})
        data["contrast"].pop("detail")
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        payload = f"{canonical}\ngenerator={GENERATOR_VERSION}".encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def split(self, name: SplitName) -> Split:
        """The split of that name."""
        return self.train if name == "train" else self.test


def _side_problems(contrast: Contrast) -> Iterable[str]:
    a, b = contrast.sides
    if not a:
        yield "contrast.sides.0: names no slot"
    if set(a) != set(b):
        yield f"contrast.sides: both sides must set the same slots, got {sorted(a)} and {sorted(b)}"
    elif a == b:
        yield "contrast.sides: the two sides are identical, so the prompts would not differ"


def schema_json() -> str:
    """The JSON Schema of `TaskSpec`, as committed in `task_specs/schema.json`."""
    return json.dumps(TaskSpec.model_json_schema(), indent=2, sort_keys=True) + "\n"
