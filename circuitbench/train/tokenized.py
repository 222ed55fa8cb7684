"""A tokenized corpus in one folder, for training where the corpus cannot be fetched (a GPU machine offline).

`write_tokenized(data, out, max_train_tokens)` writes `train.npy` (the first N training tokens, ending at a file
boundary), `val.npy` (the whole validation split, so validation losses stay comparable), the `tokenizer.json`
the ids come from, and `corpus.json`: where it came from, its hashes, and how much was kept.
`circuitbench train --corpus FOLDER` reads such a folder instead of collecting a corpus (`is_tokenized`).

The corpus hash recorded for a model trained on a cut is the source corpus's hash with `:train[:N]` appended,
so a card never claims the whole corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from circuitbench.errors import CircuitbenchError
from circuitbench.train.data import TokenData

MANIFEST = "corpus.json"
FILES = ("train.npy", "val.npy", "tokenizer.json", MANIFEST)


def is_tokenized(corpus: Path | str | None) -> bool:
    """Whether a `--corpus` value names a tokenized corpus folder (it holds `corpus.json`)."""
    return corpus is not None and (Path(corpus) / MANIFEST).is_file()


def write_tokenized(data: TokenData, out: Path, max_train_tokens: int | None = None,
                    packages: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `data` (its training split cut to at most `max_train_tokens`) as a tokenized corpus folder.

    The cut ends after the last `<|endoftext|>` within the budget, so no file is split.

    Raises:
        CircuitbenchError: when `out` holds anything but a tokenized corpus, or the budget is below one file.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not is_tokenized(out):
        raise CircuitbenchError(f"{out}: exists and is not a tokenized corpus folder; give a new or empty folder")
    if not len(data.val):
        raise CircuitbenchError("the corpus holds out no file for validation (about 2% of its files, chosen by "
                                "content hash, are); give a larger corpus")
    train = data.train
    if max_train_tokens is not None and max_train_tokens < len(train):
        from tokenizers import Tokenizer

        from circuitbench.train.tokenizer import EOT

        eot = Tokenizer.from_file(str(data.tokenizer_path)).token_to_id(EOT)
        ends = np.flatnonzero(train[:max_train_tokens] == eot)
        if not len(ends):
            raise CircuitbenchError(f"--max-train-tokens {max_train_tokens}: shorter than the first file")
        train = train[: int(ends[-1]) + 1]
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("train.npy", train), ("val.npy", data.val)):
        tmp = out / f".{name}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(arr, dtype=np.uint16))
        os.replace(tmp, out / name)
    (out / "tokenizer.json").write_bytes(Path(data.tokenizer_path).read_bytes())
    whole = len(train) == len(data.train)
    manifest = {"source_corpus_hash": data.corpus_hash,
                "corpus_hash": data.corpus_hash if whole else f"{data.corpus_hash}:train[:{len(train)}]",
                "tokenizer_sha256": data.tokenizer_hash, "train_tokens": int(len(train)),
                "source_train_tokens": int(len(data.train)), "val_tokens": int(len(data.val)),
                "packages": packages}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's `corpus.json`, checked for the fields a reader needs.

    Raises:
        CircuitbenchError: naming the file and the field at fault.
    """
    from circuitbench.files import read_json

    path = Path(folder) / MANIFEST
    manifest = read_json(path, "a readable corpus manifest", "write the folder again")
    for key, kind in (("corpus_hash", str), ("tokenizer_sha256", str), ("train_tokens", int), ("val_tokens", int)):
        if not isinstance(manifest, dict) or not isinstance(manifest.get(key), kind):
            raise CircuitbenchError(f"{path}: `{key}` is missing or not a {kind.__name__}; write the folder again")
    return manifest


def load_tokenized(folder: Path, vocab_size: int | None = None) -> TokenData:
    """The token data of a tokenized corpus folder, every file checked against its manifest.

    Raises:
        CircuitbenchError: for a missing file, a tokenizer whose hash differs or whose vocabulary is not
            `vocab_size`, or token arrays of another length or type than the manifest says.
    """
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise CircuitbenchError(f"--corpus {folder}: a tokenized corpus folder needs {', '.join(missing)}")
    manifest = read_manifest(folder)
    tok = folder / "tokenizer.json"
    tok_hash = hashlib.sha256(tok.read_bytes()).hexdigest()
    if tok_hash != manifest["tokenizer_sha256"]:
        raise CircuitbenchError(f"{tok}: its sha256 is not the manifest's `tokenizer_sha256`: the ids would be read "
                                "with another tokenizer; write the folder again")
    if vocab_size is not None:
        from tokenizers import Tokenizer

        if (size := Tokenizer.from_file(str(tok)).get_vocab_size()) != vocab_size:
            raise CircuitbenchError(f"--corpus {folder}: its tokenizer has {size} ids; give --vocab-size {size}")
    arrays = {}
    for split in ("train", "val"):
        path = folder / f"{split}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise CircuitbenchError(f"{path}: not a readable token array ({err})") from None
        if arr.dtype != np.uint16 or arr.ndim != 1 or len(arr) != manifest[f"{split}_tokens"]:
            raise CircuitbenchError(f"{path}: expected {manifest[f'{split}_tokens']} uint16 token ids as "
                                    f"{MANIFEST} says, found {arr.dtype} of shape {arr.shape}")
        arrays[split] = np.asarray(arr)
    return TokenData(arrays["train"], arrays["val"], tok, manifest["corpus_hash"], tok_hash)
