"""Token streams for training: the corpus tokenized once, cached on disk, sampled as seeded windows."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from circuitbench.corpus import Corpus, collect_corpus, sample_batch, val_windows
from circuitbench.errors import CircuitbenchError
from circuitbench.train.tokenizer import EOT, save_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

__all__ = ["TokenData", "load_corpus", "prepare_data", "sample_batch", "val_windows"]
"""`sample_batch` and `val_windows` live in `circuitbench.corpus` (bridges use them too); re-exported here."""


@dataclass(frozen=True, slots=True)
class TokenData:
    """The tokenized corpus.

    Attributes:
        train: uint16 token ids of every training file, each followed by `<|endoftext|>`.
        val: The same for the validation files.
        tokenizer_path: The `tokenizer.json` the ids come from.
        corpus_hash: Content hash of the corpus.
        tokenizer_hash: sha256 of the tokenizer file.
    """

    train: np.ndarray
    val: np.ndarray
    tokenizer_path: Path
    corpus_hash: str
    tokenizer_hash: str


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _encode(tok: Tokenizer, texts: list[str], chunk: int = 512) -> np.ndarray:
    """Token ids of every text, each followed by `<|endoftext|>`, as one uint16 array.

    Encoded in chunks: an `Encoding` object holds offsets and masks besides the ids, so encoding a
    corpus of hundreds of MB in one batch would hold tens of GB at once.
    """
    from tqdm import tqdm

    eot = tok.token_to_id(EOT)
    out: list[np.ndarray] = []
    for i in tqdm(range(0, len(texts), chunk), desc="tokenize", unit="chunk", disable=len(texts) <= chunk):
        for enc in tok.encode_batch_fast(texts[i : i + chunk]) if hasattr(tok, "encode_batch_fast") \
                else tok.encode_batch(texts[i : i + chunk]):
            out.append(np.asarray(enc.ids + [eot], dtype=np.uint16))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint16)


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def load_corpus(spec: Path | str | None, cache_dir: Path) -> Corpus:
    """The corpus a `--corpus` value names.

    None is the standard library; `pypi` is the bundled pinned package list (plus the standard
    library); a `.txt` file is another pinned package list; anything else is a directory of `.py` files.
    """
    from circuitbench.train import packages

    if spec is None:
        return collect_corpus(None)
    if str(spec) == packages.PACKAGES:
        return packages.collect_package_corpus(None, cache_dir)
    path = Path(spec)
    if path.is_file():
        if path.suffix != ".txt":
            raise CircuitbenchError(
                f"--corpus {path}: a file must be a pinned package list (`name==version` lines, *.txt); "
                "pass a directory of .py files, `pypi`, or nothing for the standard library."
            )
        return packages.collect_package_corpus(path, cache_dir)
    return collect_corpus(path)


def prepare_data(
    cache_dir: Path, corpus_root: Path | None = None, vocab_size: int = 2048,
    tokenizer_max_bytes: int | None = None,
) -> tuple[TokenData, Corpus]:
    """Collect the corpus, train (or reuse) its tokenizer and tokenize both splits, with caching.

    The tokenizer is cached under the corpus hash and vocabulary size; the token arrays under the
    corpus hash and the tokenizer's file hash. A second call with the same corpus does no work.

    Args:
        cache_dir: Directory for cached tokenizers and token arrays.
        corpus_root: Directory of Python files; None means the standard library.
        vocab_size: Tokenizer vocabulary size.
        tokenizer_max_bytes: Train the tokenizer on at most this many bytes of the training split.

    Returns:
        The token data and the corpus.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(corpus_root, cache_dir)
    tok_path = cache_dir / f"tokenizer-{corpus.hash[:16]}-{vocab_size}-{tokenizer_max_bytes}.json"
    if not tok_path.is_file():
        log.info("training a %d-token BPE on %d files", vocab_size, len(corpus.train))
        texts = corpus.train_texts
        if tokenizer_max_bytes is not None:  # a capped tokenizer sees an even sample, not the first folders
            texts = [f.text for f in sorted(corpus.train, key=lambda f: f.sha256)]
        tok = train_tokenizer(texts, vocab_size=vocab_size, max_bytes=tokenizer_max_bytes)
        tmp = tok_path.with_suffix(".tmp")
        save_tokenizer(tok, tmp)
        os.replace(tmp, tok_path)
    tok_hash = _sha256(tok_path)
    arrays = {}
    for split in ("train", "val"):
        path = cache_dir / f"tokens-{corpus.hash[:16]}-{tok_hash[:16]}-{split}.npy"
        if not path.is_file():
            tok = Tokenizer.from_file(str(tok_path))
            texts = corpus.train_texts if split == "train" else corpus.val_texts
            _save_atomic(path, _encode(tok, texts))
        arrays[split] = np.load(path)
    log.info("tokens: %d train, %d val", len(arrays["train"]), len(arrays["val"]))
    return TokenData(arrays["train"], arrays["val"], tok_path, corpus.hash, tok_hash), corpus


