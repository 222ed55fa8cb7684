"""The ground floor: the types every layer shares, imported by implementations, importing none of them.

- `Hook`: how a forward pass lets a caller observe or replace a named activation.
- `Tokenizer`: what tasks and models need from a tokenizer.
- `Batch`: the one batch type of encoded examples (tokens and, per row, the last prompt position and the
  two candidate tokens) used by scoring, pruning, ablation and every adapter.
- `Site` and `ModelAdapter`: the node sites of a model and the contract every model meets, its context
  length included.

Only torch and the standard library are imported here, so `tasks/`, `models/` and `circuits/` can all
depend on this module without depending on each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

Hook = Callable[[str, Tensor], Tensor]
"""hook(name, activation) -> the activation to use from here on (return x unchanged to only observe)."""


@runtime_checkable
class Tokenizer(Protocol):
    """What circuitbench needs from a tokenizer."""

    name: str
    vocab_size: int
    eot_id: int | None

    def encode(self, text: str) -> list[int]:
        """Encode text to token ids, with no special tokens added."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Decode token ids to text."""
        ...


@dataclass(frozen=True, slots=True)
class Batch:
    """Encoded examples: tokens [N, T] right-padded, and per row the last prompt position and the answers.

    `correct[i]` and `incorrect[i]` are the first tokens of the two completions of row i; examples come in
    pairs (rows 2j and 2j + 1) whose answers are each other's.
    """

    tokens: Tensor
    last: Tensor
    correct: Tensor
    incorrect: Tensor

    @classmethod
    def of(cls, encoded: Any, device: torch.device | str = "cpu") -> Batch:
        """The batch of an `EncodedTask` (or anything with these four fields), on a device.

        Trimmed to its longest prompt: nothing after the last prompt token can affect it (causal attention).
        """
        last = encoded.last
        width = int(last.max()) + 1 if len(last) else 0
        return cls(encoded.tokens[:, :width].to(device), last.to(device), encoded.correct.to(device),
                   encoded.incorrect.to(device))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def take(self, idx: Tensor) -> Batch:
        """The rows at idx, trimmed to their longest prompt."""
        last = self.last[idx]
        width = int(last.max()) + 1
        return Batch(self.tokens[idx, :width], last, self.correct[idx], self.incorrect[idx])

    def chunks(self, size: int) -> Iterable[Batch]:
        """Consecutive batches of at most `size` rows, each trimmed to its longest prompt."""
        for i in range(0, len(self), size):
            yield self.take(torch.arange(i, min(i + size, len(self)), device=self.last.device))

    def swapped(self) -> Batch:
        """The inverted-label control: the same prompts with the two answers exchanged."""
        return Batch(self.tokens, self.last, self.incorrect, self.correct)

    def pairs(self, pair_idx: Tensor) -> Batch:
        """Both members of the given pairs (pair j is rows 2j and 2j + 1), in pair order."""
        rows = torch.stack([2 * pair_idx, 2 * pair_idx + 1], 1).flatten()
        return self.take(rows.to(self.last.device))


SiteKind = Literal[
    "attn_in",  # residual read into attention (after norm and AbsTopK)
    "q",
    "k",
    "v",
    "attn_out",  # attention write into the residual stream
    "mlp_in",  # residual read into the MLP
    "mlp_neuron",
    "mlp_out",  # MLP write into the residual stream
    "sae_latent",
    "sae_error",
]
READ_KINDS: frozenset[str] = frozenset({"attn_in", "mlp_in"})
WRITE_KINDS: frozenset[str] = frozenset({"attn_out", "mlp_out"})


@dataclass(frozen=True, slots=True)
class Site:
    """A maskable node site: one named activation whose channels are the circuit's nodes.

    `source` and `weight` say how this site's channels are computed from an earlier site's: channel i
    here depends on channel j of `source` iff `weight[i, j] != 0`. Residual reads have no source: they
    are linked to earlier writes of the same channel index through the residual stream (weightless).
    """

    name: str
    """Official hook name, e.g. `3.attn.q`."""
    layer: int
    """Block index."""
    kind: SiteKind
    """What the channels are."""
    width: int
    """Number of channels (nodes)."""
    source: str | None = None
    """The site feeding this one through `weight`, or None."""
    weight: str | None = field(default=None, compare=False)
    """Parameter name of the connecting matrix (rows: this site's channels; columns: the source's)."""
    rows: tuple[int, int] | None = field(default=None, compare=False)
    """Row range of `weight` when it is a fused matrix (q, k, v in `c_attn`)."""
    value_width: int | None = None
    """Channels of the activation when one node gates all of them (an SAE error vector: width 1,
    value_width d_in); ablation values follow the activation's layout. None: one node per channel."""


@runtime_checkable
class ModelAdapter(Protocol):
    """What the tasks, the pruning loop and the metrics need from a model."""

    name: str
    tokenizer: Tokenizer
    sites: list[Site]
    device: torch.device
    dtype: torch.dtype
    provenance: dict[str, Any]
    context_length: int | None
    """Longest input in tokens the model takes (None: no limit); longer prompts are left-truncated."""

    @property
    def n_heads(self) -> int | None:
        """Attention heads per layer (None: unknown); recorded with a saved circuit for MIB's graph format."""
        ...

    @property
    def has_saes(self) -> bool:
        """Whether SAEs are spliced in.

        The sites are then their latents, and the adapter has `base` (the model without them) and
        `splices` (hook point -> SAE).
        """
        ...

    def logits(self, tokens: Tensor) -> Tensor:
        """Logits [B, T, vocab] for a LongTensor [B, T]."""
        ...

    def run_with_cache(
        self, tokens: Tensor, names: Iterable[str] | None = None, at: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the named activations (all hook points when `names` is None).

        With `at` (LongTensor [B]), logits only at those positions, as in `forward`.
        """
        ...

    def forward(self, tokens: Tensor, hook: Hook | None = None, at: Tensor | None = None) -> Tensor:
        """Logits with `hook(name, x) -> x` applied at every hook point (masks, ablations, caching).

        With `at` (LongTensor [B]), only the logits at position at[b] of each row: [B, V].
        """
        ...

    def site_weight(self, site: Site) -> Tensor | None:
        """The dense matrix [site.width, source.width] connecting `site.source` to `site`, if any."""
        ...


def forward_at(adapter: ModelAdapter, tokens: Tensor, hook: Hook | None, at: Tensor) -> Tensor:
    """Logits [B, V] at positions `at`, letting the adapter skip work that cannot reach them.

    An adapter with `supports_answer_only = True` takes `forward(..., answer_only=True)`: it may then
    compute its last layer only at the `at` positions (the logits are the same up to float rounding, and
    hooks there see one position per row). Gating and scoring use this; activation statistics over all
    positions (`run_with_cache`) do not.
    """
    if getattr(adapter, "supports_answer_only", False):
        return adapter.forward(tokens, hook, at=at, answer_only=True)  # type: ignore[call-arg]
    return adapter.forward(tokens, hook, at=at)

