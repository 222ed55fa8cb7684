"""Train a byte-level BPE for Python code, with `<|endoftext|>` as the last id like tinypython_2k.

The pre-tokenizer is GPT-2's byte-level regex (`ByteLevel(add_prefix_space=False)`): it splits
letters, digits, punctuation runs and whitespace into separate words before BPE, so a merge never
crosses from `seen` into `.add`, and a punctuation run such as `])` or `":` can become one token.
Task completions are scored by their first token only (see `circuitbench.tasks.encode`), which only
needs the two answers' first tokens to differ.

Training is deterministic for the same texts in the same order: the BPE trainer breaks count ties by
the pair itself, not by thread scheduling (tested).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from circuitbench.errors import TokenizerError

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
"""The end-of-text special token; its id is always `vocab_size - 1`."""


def _capped(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
    """Yield texts until their UTF-8 size would pass max_bytes (None: no cap)."""
    total = 0
    for text in texts:
        if max_bytes is not None:
            size = len(text.encode("utf-8"))
            if total + size > max_bytes:
                if total == 0:  # always keep something: cut the first text
                    yield text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
                return
            total += size
        yield text


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 2048, max_bytes: int | None = None
) -> Tokenizer:
    """Train a byte-level BPE whose last id is `<|endoftext|>`.

    Args:
        texts: Training texts (for example `collect_corpus().train_texts`), in a fixed order.
        vocab_size: Total vocabulary size including the 256 byte tokens and `<|endoftext|>`.
        max_bytes: Use texts, in order, only up to this many UTF-8 bytes; None uses them all.

    Returns:
        A `tokenizers.Tokenizer`; save it with `tok.save(path)` and load it with
        `circuitbench.models.tokenizer.HFTokenizer(path)`, or wrap it with
        `HFTokenizer.from_object(tok, name)`.

    Raises:
        TokenizerError: when vocab_size is too small for the byte alphabet, or the texts are too
            few to learn `vocab_size - 257` merges.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise TokenizerError(
            f"vocab_size {vocab_size} is too small: a byte-level BPE needs the "
            f"{len(alphabet)} byte tokens plus <|endoftext|>."
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # the last id is left for <|endoftext|>
        min_frequency=2,
        show_progress=False,
        initial_alphabet=alphabet,
        special_tokens=[],
    )
    tok.train_from_iterator(_capped(texts, max_bytes), trainer=trainer)
    learned = tok.get_vocab_size(with_added_tokens=False)
    if learned != vocab_size - 1:
        raise TokenizerError(
            f"the texts are too small to learn a {vocab_size}-token vocabulary (learned "
            f"{learned} tokens before <|endoftext|>); give more text, a larger max_bytes, "
            "or a smaller vocab_size."
        )
    tok.add_special_tokens([EOT])
    assert tok.token_to_id(EOT) == vocab_size - 1
    log.info("trained byte-level BPE: %d tokens, <|endoftext|> = %d", vocab_size, vocab_size - 1)
    return tok


def save_tokenizer(tok: Tokenizer, path: Path) -> Path:
    """Write a tokenizer as `tokenizer.json` (a directory gets the file inside it).

    Args:
        tok: The tokenizer to save.
        path: A file path, or an existing directory.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path
