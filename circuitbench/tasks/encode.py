"""Per-model encoding: token tensors for the hot loop, first-token candidates, boundary checks.

For each side of a pair, the prompt is encoded alone and together with each completion (never the
completion alone: BPE merges across the boundary, the trap docs/design.md, Traps describes). The
prompt's ids must be a prefix of the joint ids; the candidate is the first token after that prefix.
Only this first token is scored, never the summed completion (which favours short answers). A pair
is kept only if all four encodings pass and each side's two candidates differ; otherwise both
members are dropped and counted by reason, and the count is logged and carried in `EncodedTask`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from circuitbench.errors import TaskError
from circuitbench.protocols import Tokenizer
from circuitbench.tasks.pairs import Pair, make_pairs
from circuitbench.tasks.spec import SplitName, TaskSpec

log = logging.getLogger(__name__)

DEFAULT_MAX_LEN = 255
"""Paper: prompts are left-truncated to at most 255 tokens."""

DROP_REASONS: dict[str, str] = {
    "boundary_merge": "the prompt's last token merges with the completion's first (prompt ids are "
    "not a prefix of prompt + completion ids)",
    "same_first_token": "both completions start with the same token",
    "empty_completion": "a completion adds no token after the prompt",
    "truncated_identical": "left-truncation to max_len tokens cut off everything that differs between the "
    "pair's two prompts",
}
"""Why an example can be dropped, by the key used in `EncodedTask.drop_reasons`."""


@dataclass(frozen=True)
class EncodedTask:
    """A task's examples for one tokenizer, as tensors.

    Rows are pair-major: row `2k + s` is side `s` of the k-th kept pair. `tokens` is right-padded,
    so in a causal model padding after `last` cannot affect the logits at `last`.
    """

    task: str
    """Task name (`NAME:inverted` for the control)."""
    split: str
    """The split encoded."""
    task_hash: str
    """The spec's content hash."""
    tokenizer: str
    """Name of the tokenizer used."""
    tokens: torch.Tensor
    """LongTensor[N, T]: prompt ids, left-truncated to max_len, right-padded."""
    last: torch.Tensor
    """LongTensor[N]: index of each row's last prompt token (score the logits there)."""
    correct: torch.Tensor
    """LongTensor[N]: first token of the correct completion."""
    incorrect: torch.Tensor
    """LongTensor[N]: first token of the incorrect completion."""
    pair_id: torch.Tensor
    """LongTensor[N]: the pair each row comes from."""
    side: torch.Tensor
    """LongTensor[N]: 0 or 1, the row's side of its pair."""
    n_total: int
    """Examples before dropping (2 per pair)."""
    n_dropped: int
    """Examples dropped by the boundary checks (always both members of a pair)."""
    drop_reasons: dict[str, int] = field(default_factory=dict)
    """Dropped examples by reason (keys of `DROP_REASONS`)."""
    n_truncated: int = 0
    """Kept examples whose prompt was left-truncated to max_len."""

    @property
    def n(self) -> int:
        """Number of kept examples (rows)."""
        return int(self.tokens.shape[0])

    @property
    def kept_fraction(self) -> float:
        """Kept examples over all examples."""
        return (self.n_total - self.n_dropped) / self.n_total if self.n_total else 0.0

    def drop_report(self) -> str:
        """One line saying how many examples were dropped and why."""
        if not self.n_dropped:
            return f"{self.task} [{self.split}] on {self.tokenizer}: kept all {self.n_total} examples"
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.drop_reasons.items()))
        return (
            f"{self.task} [{self.split}] on {self.tokenizer}: dropped {self.n_dropped} of "
            f"{self.n_total} examples ({why})"
        )


def _first_token(tokenizer: Tokenizer, prompt_ids: list[int], text: str) -> tuple[int | None, str]:
    """The first completion token after a prompt, or None and the reason it is unusable."""
    ids = tokenizer.encode(text)
    n = len(prompt_ids)
    if ids[:n] != prompt_ids:
        return None, "boundary_merge"
    if len(ids) == n:
        return None, "empty_completion"
    return ids[n], ""


Row = tuple[list[int], int, int, int, int]
"""One encoded example: (prompt ids, correct token, incorrect token, pair id, side)."""


def _encode_pair(pair: Pair, tokenizer: Tokenizer, max_len: int) -> tuple[list[Row], str, int]:
    """Both members of a pair encoded; or the reason the pair is dropped; and how many were left-truncated."""
    kept: list[Row] = []
    truncated = 0
    for side in (0, 1):
        prompt = pair.prompts[side]
        prompt_ids = tokenizer.encode(prompt)
        good, why_g = _first_token(tokenizer, prompt_ids, prompt + pair.correct(side))
        bad, why_b = _first_token(tokenizer, prompt_ids, prompt + pair.incorrect(side))
        if good is None or bad is None:
            return kept, why_g or why_b, truncated
        if good == bad:
            return kept, "same_first_token", truncated
        truncated += len(prompt_ids) > max_len
        kept.append((prompt_ids[-max_len:], good, bad, pair.pair_id, side))
    if truncated and kept[0][0] == kept[1][0]:
        return kept, "truncated_identical", truncated
    return kept, "", truncated


def encode_pairs(pairs: Sequence[Pair], tokenizer: Tokenizer, max_len: int = DEFAULT_MAX_LEN,
                 erased_is_error: bool = True) -> EncodedTask:
    """Encode pairs (of one task and split) for a tokenizer; see `encode_task`.

    A pair whose two prompts are identical after left-truncation to `max_len` is dropped
    (`truncated_identical`): what tells its members apart was cut off.

    Raises:
        TaskError: when pairs is empty or mixes tasks or splits, or max_len < 1; and, with `erased_is_error`,
            when truncation erases the contrast of every pair (the spec's own max_tokens is too short).
    """
    if not pairs:
        raise TaskError("no pairs to encode.")
    if len({(p.task, p.split, p.task_hash) for p in pairs}) != 1:
        raise TaskError("encode one task and split at a time; the pairs mix several.")
    if max_len < 1:
        raise TaskError(f"max_len must be at least 1, got {max_len}.")
    rows: list[Row] = []
    dropped: Counter[str] = Counter()
    n_truncated = 0
    for pair in pairs:
        kept, reason, truncated = _encode_pair(pair, tokenizer, max_len)
        if reason:
            dropped[reason] += 2
            continue
        n_truncated += truncated
        rows.extend(kept)

    first = pairs[0]
    n_total = 2 * len(pairs)
    n_dropped = sum(dropped.values())
    pad = tokenizer.eot_id if tokenizer.eot_id is not None else 0
    width = max((len(r[0]) for r in rows), default=0)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)  # (N, T)
    for i, (ids, *_) in enumerate(rows):
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    col: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    encoded = EncodedTask(
        task=first.task,
        split=first.split,
        task_hash=first.task_hash,
        tokenizer=getattr(tokenizer, "name", type(tokenizer).__name__),
        tokens=tokens,
        last=torch.tensor([len(ids) - 1 for ids in col[0]], dtype=torch.long),
        correct=torch.tensor(col[1], dtype=torch.long),
        incorrect=torch.tensor(col[2], dtype=torch.long),
        pair_id=torch.tensor(col[3], dtype=torch.long),
        side=torch.tensor(col[4], dtype=torch.long),
        n_total=n_total,
        n_dropped=n_dropped,
        drop_reasons=dict(sorted(dropped.items())),
        n_truncated=n_truncated,
    )
    if erased_is_error and dropped.get("truncated_identical") == n_total:
        longest = max(len(tokenizer.encode(p)) for pair in pairs for p in pair.prompts)
        raise TaskError(
            f"{first.task} [{first.split}]: left-truncating the prompts to {max_len} tokens makes the two members of "
            f"every pair identical (what tells them apart comes earlier), so the task would measure nothing; raise "
            f"the spec's max_tokens (its prompts are up to {longest} tokens for this tokenizer) or use a model "
            "with a longer context.")
    if n_dropped:
        log.warning("%s", encoded.drop_report())
    return encoded


def encode_task(
    task: TaskSpec | Sequence[Pair],
    tokenizer: Tokenizer,
    split: SplitName = "test",
    max_len: int | None = None,
) -> EncodedTask:
    """Encode a task's split for a model's tokenizer.

    Args:
        task: A spec (its pairs for `split` are generated) or pairs already made.
        tokenizer: The model's tokenizer (`circuitbench.protocols.Tokenizer`).
        split: Which split to generate when given a spec; ignored for pairs.
        max_len: Prompts are left-truncated to this many tokens; None uses the spec's max_tokens
            (255 for pairs).

    Returns:
        The encoded examples; dropped examples are counted in `n_dropped` and `drop_reasons`.

    Raises:
        TaskError: when the input is malformed. Dropping every example is not an error: the result
            then has zero rows and says why in `drop_reasons`.
    """
    if isinstance(task, TaskSpec):
        pairs: Sequence[Pair] = make_pairs(task, split)
        limit = task.max_tokens if max_len is None else max_len
        # The spec's own max_tokens erasing every contrast is the spec's error; a model's shorter context is
        # the model's limit: its pairs are dropped and counted, and the task is reported as not measurable.
        erased_is_error = limit >= task.max_tokens
    else:
        pairs = task
        limit = DEFAULT_MAX_LEN if max_len is None else max_len
        erased_is_error = True
    return encode_pairs(pairs, tokenizer, limit, erased_is_error)
