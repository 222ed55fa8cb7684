"""`circuitbench val-loss`: a model's validation loss on the corpus's held-out packages, measured here.

The board shows each model's validation loss beside its circuit sizes (Gao et al. 2025 compare circuit
size at equal pretraining loss). A number measured by this command, on the same held-out windows for
every model, is comparable; one a submitter types in is shown as reported. The loss is measured on the
corpus's own token arrays, so the model must use the corpus's tokenizer (every model `circuitbench
train` writes does); other tokenizers would make a per-token loss incomparable, and are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from circuitbench.errors import CircuitbenchError


@torch.no_grad()
def measure(model: str, corpus: str | None = "pypi", windows: int = 256, ctx: int | None = None,
            cache_dir: Path | None = None, vocab_size: int = 2048, tokenizer_bytes: int | None = 64_000_000,
            show_progress: bool = True) -> dict[str, Any]:
    """Mean next-token loss of `model` on evenly spaced held-out windows of the corpus.

    Args:
        model: Anything `circuitbench.load_model` takes.
        corpus: `pypi` (the bundled pinned list), a package list or a directory, as `circuitbench train`.
        windows: Number of windows (the reference models' cards use 256).
        ctx: Window length; None uses the model's context.
        cache_dir: Tokenizer and token cache (None: ~/.cache/circuitbench).
        vocab_size: The corpus tokenizer's size (as trained).
        tokenizer_bytes: The corpus tokenizer's training sample (as trained).
        show_progress: Show a progress bar.

    Returns:
        The `validation` block of a submission: loss, corpus (with the windows measured), measured_by and
        weights_sha256.

    Raises:
        CircuitbenchError: when the model's tokenizer is not the corpus's.
    """
    import circuitbench
    from circuitbench.train.config import TrainConfig
    from circuitbench.train.data import prepare_data, val_windows
    from circuitbench.train.loop import _cache_dir, check_tokenizer

    adapter = circuitbench.load_model(model, device="cpu")
    cache = cache_dir or _cache_dir(TrainConfig(out_dir=Path(".")))
    directory = adapter.provenance.get("model_path")
    if directory is None:
        raise CircuitbenchError(f"--model {model}: not a model directory of this corpus's tokenizer; val-loss "
                                "measures models `circuitbench train` wrote (report another model's loss yourself: "
                                "validation.measured_by submitter)")
    recorded = _recorded_split(corpus, cache, Path(directory) / "tokenizer.json", not show_progress)
    if recorded is not None:  # the held-out packages alone (`circuitbench.train.valsplit`)
        val, corpus_hash = recorded
    else:
        data, corpus_obj = prepare_data(cache, corpus, vocab_size, tokenizer_bytes)  # type: ignore[arg-type]
        check_tokenizer("--model", Path(directory), data)
        val, corpus_hash = data.val, corpus_obj.hash
    length = ctx or adapter.context_length or 256
    vx, vy = val_windows(val, length, windows)
    total = 0.0
    for i in tqdm(range(0, len(vx), 16), desc="val-loss", unit="batch", disable=not show_progress):
        logits = adapter.forward(vx[i : i + 16].to(adapter.device))
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), vy[i : i + 16].flatten().to(logits.device),
                                       reduction="sum"))
    loss = total / vy.numel()
    return {
        "loss": round(loss, 5),
        "corpus": f"circuitbench {corpus} corpus (sha256 {corpus_hash[:16]}), {len(vx)} held-out windows of "
                  f"{length} tokens",
        "measured_by": "circuitbench",
        "weights_sha256": adapter.provenance.get("weights_sha256"),
    }


def _recorded_split(corpus: str | None, cache: Path, tokenizer: Path, quiet: bool) -> tuple[Any, str] | None:
    """A package list's recorded held-out tokens, when the list has a record and the model its tokenizer."""
    from circuitbench.train import packages
    from circuitbench.train.valsplit import recorded_val_tokens

    if corpus == packages.PACKAGES:
        lst = packages.bundled_list()
    elif corpus is not None and str(corpus).endswith(".txt") and Path(corpus).is_file():
        lst = Path(corpus)
    else:
        return None
    return recorded_val_tokens(lst, cache, tokenizer, quiet=quiet) if tokenizer.is_file() else None
