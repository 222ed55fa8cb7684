"""The lm-eval model `circuitbench`: any model `circuitbench.load_model` loads, scored as circuitbench scores.

Importing this module registers the model with lm-evaluation-harness (which has no plugin discovery):

    import circuitbench.integrations.lm_eval  # registers "circuitbench"
    lm_eval.simple_evaluate(model="circuitbench", model_args="model=tiny-sparse,device=cpu", ...)

or, from the shell, `python -m circuitbench.integrations.lm_eval ARGS`, which is the `lm_eval` command
with this model registered (pass `--device cpu` there, not in --model_args: lm_eval's command line
always passes a device, `cuda:0` unless told otherwise).

Unlike lm-eval's own models, a continuation is encoded on its own, never together with its context,
so a tokenizer that merges across the boundary cannot shift or swallow the continuation's tokens
(docs/design.md, Traps). The model computes loglikelihoods only; it cannot
generate text or score rolling windows.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from circuitbench.errors import CircuitbenchError, UnsupportedRequestError

try:
    import lm_eval.models  # noqa: F401  (registers lm-eval's own models; get_model skips it once ours is in)
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise CircuitbenchError(
        f"lm-evaluation-harness is not installed ({err}); install it with: pip install 'circuitbench[lm-eval]'"
    ) from err

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

    from circuitbench.models.adapter import ModelAdapter

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
"""Rows per forward pass when lm-eval passes no batch size, or `auto`."""


class CircuitbenchLM(LM):  # lm-eval ships no type information (LM is Any here)
    """lm-eval's `LM` over a circuitbench model adapter (native sparse GPT, transformers, ...).

    Args:
        model: What `circuitbench.load_model` takes: a bundled name (`tiny-sparse`), a directory or a Hub id.
        device: "auto", "cpu", "cuda" or "cuda:N".
        dtype: "float32" (default), "bfloat16", ...
        revision: Hub revision, for Hub ids.
        batch_size: Rows per forward pass; "auto" means 64.
        max_length: Context window in tokens; default the model's (`block_size`, `n_positions` or
            `max_position_embeddings`), else 1024. Longer inputs
            keep their last `max_length` tokens, as lm-eval's models do.
        adapter: An adapter already loaded (Python use), instead of `model`.
        **kwargs: Other lm-eval options (max_batch_size, ...); ignored.

    Raises:
        CircuitbenchError: when neither model nor adapter is given, or the model cannot be loaded.
    """

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        dtype: str | None = None,
        revision: str | None = None,
        batch_size: int | str | None = None,
        max_length: int | None = None,
        adapter: ModelAdapter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if adapter is None:
            if not model:
                raise CircuitbenchError(
                    "lm-eval model circuitbench: model_args needs model=NAME (a bundled name such as tiny-sparse, "
                    "a model directory or a Hub id), e.g. --model_args model=tiny-sparse,device=cpu"
                )
            import circuitbench

            adapter = circuitbench.load_model(str(model), device=str(device), dtype=dtype, revision=revision)
        self.adapter = adapter
        self.tokenizer = adapter.tokenizer
        self._device = adapter.device
        self.batch_size = _batch_size(batch_size)
        self.max_length = int(max_length or _context_window(adapter) or 1024)
        if kwargs:
            log.debug("circuitbench lm-eval model ignores %s", sorted(kwargs))

    @property
    def eot_token_id(self) -> int | None:
        """The end-of-text token, used as the context of an empty context."""
        return self.tokenizer.eot_id

    @property
    def tokenizer_name(self) -> str:
        """The tokenizer's name (lm-eval records it with the results)."""
        return self.tokenizer.name

    def _context_ids(self, context: str) -> list[int]:
        if context:
            return self.tokenizer.encode(context)
        if self.tokenizer.eot_id is None:
            raise CircuitbenchError(
                f"{self.adapter.name}: an empty context needs an end-of-text token, and tokenizer "
                f"{self.tokenizer.name} has none; give every request a context."
            )
        return [self.tokenizer.eot_id]

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Summed log-probability of each continuation given its context, and whether it is greedy.

        Context and continuation are encoded separately, then joined as token ids.
        """
        ctx_cache: dict[str, list[int]] = {}
        encoded: list[tuple[list[int], list[int]]] = []
        for req in requests:
            context, continuation = req.args[0], req.args[1]
            if context not in ctx_cache:
                ctx_cache[context] = self._context_ids(context)
            encoded.append((ctx_cache[context], self.tokenizer.encode(continuation)))
        results = self.score_ids(encoded, disable_tqdm=disable_tqdm)
        for req, res in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return results

    def score_ids(
        self, encoded: Sequence[tuple[list[int], list[int]]], disable_tqdm: bool = True
    ) -> list[tuple[float, bool]]:
        """`loglikelihood` on token ids: (context ids, continuation ids) -> (sum of log-probs, is greedy).

        Raises:
            CircuitbenchError: when a continuation alone is longer than the context window.
        """
        from tqdm import tqdm

        results: list[tuple[float, bool] | None] = [None] * len(encoded)
        # Inputs are the last max_length tokens of context + continuation minus its final token; the two
        # choices of a multiple-choice doc with one-token continuations share one input and one forward pass.
        inputs: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, (ctx, cont) in enumerate(encoded):
            if not cont:
                results[i] = (0.0, True)
                continue
            if len(cont) > self.max_length:
                raise CircuitbenchError(
                    f"a continuation of {len(cont)} tokens does not fit the {self.max_length}-token context "
                    "window; raise max_length in --model_args if the model allows it."
                )
            full = (ctx + cont)[-(self.max_length + 1):]
            inputs.setdefault(tuple(full[:-1]), []).append((i, cont))
        # longest first, so a batch's padding is small and out-of-memory shows up at once
        order = sorted(inputs, key=len, reverse=True)
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc="circuitbench loglikelihood", disable=disable_tqdm):
            keys = order[start : start + self.batch_size]
            for key, logprobs in zip(keys, self._logprobs(keys, inputs), strict=True):
                n = logprobs.shape[0]
                for i, cont in inputs[key]:
                    target = torch.tensor(cont, dtype=torch.long)
                    picked = logprobs[n - len(cont):].gather(1, target[:, None])[:, 0]
                    greedy = bool((logprobs[n - len(cont):].argmax(dim=-1) == target).all())
                    results[i] = (float(picked.sum()), greedy)
        return [r for r in results if r is not None]

    def _logprobs(
        self, keys: list[tuple[int, ...]], inputs: dict[tuple[int, ...], list[tuple[int, list[int]]]]
    ) -> list[torch.Tensor]:
        """Per input: float64 log-softmax over the vocabulary at the positions its continuations need."""
        need = [max(len(cont) for _, cont in inputs[k]) for k in keys]
        lengths = torch.tensor([len(k) for k in keys])
        pad = self.tokenizer.eot_id if self.tokenizer.eot_id is not None else 0
        tokens = torch.full((len(keys), int(lengths.max())), pad, dtype=torch.long)  # (B, T) right-padded
        for row, key in enumerate(keys):
            tokens[row, : len(key)] = torch.tensor(key, dtype=torch.long)
        with torch.no_grad():
            if max(need) == 1:
                # one position per row, as circuitbench scores: logits only at each row's last token
                logits = self.adapter.forward(tokens, at=lengths - 1)  # (B, V)
                # float64, so two choices' difference keeps the sign of their float32 logit difference
                logprobs = torch.log_softmax(logits.double(), dim=-1).cpu()  # (B, V)
                return [logprobs[row : row + 1] for row in range(len(keys))]
            logits = self.adapter.forward(tokens)  # (B, T, V)
            out = []
            for row, (key, n) in enumerate(zip(keys, need, strict=True)):
                span = logits[row, len(key) - n : len(key)].double()  # (n, V)
                out.append(torch.log_softmax(span, dim=-1).cpu())
            return out

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Not supported: the circuitbench model scores multiple-choice and loglikelihood tasks only."""
        raise UnsupportedRequestError(
            "the lm-eval model `circuitbench` computes loglikelihoods of continuations only "
            "(output_type multiple_choice or loglikelihood); for perplexity tasks use lm-eval's hf model."
        )

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Not supported: the circuitbench model does not generate text."""
        raise UnsupportedRequestError(
            "the lm-eval model `circuitbench` does not generate text (output_type generate_until); "
            "it computes loglikelihoods only. For generation tasks use lm-eval's hf model."
        )


def _context_window(adapter: ModelAdapter) -> int | None:
    """The model's context length (`ModelAdapter.context_length`)."""
    return adapter.context_length


def _batch_size(value: int | str | None) -> int:
    if value is None or str(value).startswith("auto"):
        return DEFAULT_BATCH_SIZE
    try:
        size = int(value)
    except ValueError:
        raise CircuitbenchError(f"batch_size: {value!r} is not a number; pass e.g. --batch_size 64") from None
    if size < 1:
        raise CircuitbenchError(f"batch_size: must be at least 1, got {size}")
    return size


def main(argv: Sequence[str] | None = None) -> None:
    """The `lm_eval` command line with the `circuitbench` model registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    # Run as a script, this file is `__main__`; the model is registered once, by its importable module.
    from circuitbench.integrations.lm_eval import main as _main

    _main()
else:
    register_model("circuitbench")(CircuitbenchLM)
