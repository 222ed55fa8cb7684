"""A package corpus's held-out split, recorded once, so `val-loss` reads only the held-out packages.

Which files of the held-out packages are in the split depends on the whole corpus (a file that is also in a
training package or the standard library stays in training), so measuring a validation loss used to mean
fetching every pinned package and tokenizing the whole corpus (19 minutes on a fresh machine for 10 packages).
The split is recorded instead, beside the package list (`pypi_packages.txt` -> `pypi_packages.val_split.json`):
each kept file (package, path, sha256) in split order, the list's sha256, the corpus hash, the tokenizer's
sha256 and the sha256 of the tokenized split. `val-loss` then fetches the held-out packages only, picks the
recorded files, tokenizes them with the model's tokenizer (it must be the recorded one, else the full path
runs) and checks the token array's hash: the same array, so the same windows and the same loss.

    python -m circuitbench.train.valsplit [--corpus pypi]     # (maintainers) record a list's split
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from circuitbench.errors import CircuitbenchError


def manifest_path(list_path: Path) -> Path:
    """Where a package list's recorded split lives: beside it, `NAME.val_split.json`."""
    return Path(list_path).with_name(Path(list_path).stem + ".val_split.json")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(list_path: Path, val_files: list[Any], corpus_hash: str, tokenizer_path: Path, val_tokens: np.ndarray,
           out: Path | None = None) -> Path:
    """Write the split of a collected corpus (`Corpus.val`, tokenized as `val_tokens`)."""
    out = out or manifest_path(list_path)
    manifest = {"list_sha256": _sha(Path(list_path).read_bytes()), "corpus_hash": corpus_hash,
                "tokenizer_sha256": _sha(Path(tokenizer_path).read_bytes()),
                "val_tokens": int(len(val_tokens)), "val_tokens_sha256": _sha(val_tokens.astype(np.uint16).tobytes()),
                "files": [{"package": f.path.split("/", 1)[0], "path": f.path.split("/", 1)[1], "sha256": f.sha256}
                          for f in val_files]}
    out.write_text(json.dumps(manifest, indent=0) + "\n")
    return out


def recorded_val_tokens(list_path: Path, cache_dir: Path, tokenizer_path: Path, quiet: bool = False,
                        manifest: Path | None = None) -> tuple[np.ndarray, str] | None:
    """The held-out split's tokens and the corpus hash, from the held-out packages alone.

    None when there is no record for this list (or it records another list), or the tokenizer is not the
    recorded one: the caller then collects the whole corpus.

    Raises:
        CircuitbenchError: when a recorded file is missing from its package or the tokens differ from the record.
    """
    from tokenizers import Tokenizer

    from circuitbench.train.data import _encode
    from circuitbench.train.packages import _members, fetch, keep_source, read_pins

    path = manifest or manifest_path(list_path)
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec["list_sha256"] != _sha(Path(list_path).read_bytes()) or (
            rec["tokenizer_sha256"] != _sha(Path(tokenizer_path).read_bytes())):
        return None
    wanted = {(f["package"], f["path"]): f["sha256"] for f in rec["files"]}
    pins = [p for p in read_pins(Path(list_path)) if p.spec in {f["package"] for f in rec["files"]}]
    archives = fetch(pins, cache_dir, quiet=quiet)
    texts: dict[tuple[str, str], str] = {}
    for pin in pins:
        for member, data in _members(archives[pin.spec]):
            key = (pin.spec, member)
            if wanted.get(key) == _sha(data):
                text = keep_source(member, data)
                if text is not None:
                    texts[key] = text
    missing = [f"{p}/{m}" for p, m in wanted if (p, m) not in texts]
    if missing:
        raise CircuitbenchError(f"{path}: {len(missing)} recorded held-out file(s) are not in their packages' "
                                f"archives (first: {missing[0]}); delete the archives under {cache_dir} to fetch them "
                                "again")
    tokens = _encode(Tokenizer.from_file(str(tokenizer_path)), [texts[(f["package"], f["path"])] for f in rec["files"]])
    if _sha(tokens.tobytes()) != rec["val_tokens_sha256"]:
        raise CircuitbenchError(f"{path}: the held-out files tokenize to {len(tokens):,} tokens that differ from the "
                                f"recorded {rec['val_tokens']:,}; the record or the archives changed")
    return tokens, rec["corpus_hash"]


def main(argv: list[str] | None = None) -> int:
    """Record the held-out split of a package list (`pypi`: the bundled one) from its full corpus."""
    from circuitbench.train import packages
    from circuitbench.train.config import TrainConfig
    from circuitbench.train.data import prepare_data
    from circuitbench.train.loop import _cache_dir

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--corpus", default=packages.PACKAGES, help="`pypi` or a package list (*.txt)")
    args = ap.parse_args(argv)
    base = TrainConfig(out_dir=Path("."), corpus=args.corpus)
    data, corpus = prepare_data(_cache_dir(base), args.corpus, base.vocab_size, base.tokenizer_bytes)
    lst = packages.bundled_list() if args.corpus == packages.PACKAGES else Path(args.corpus)
    print(record(lst, list(corpus.val), corpus.hash, data.tokenizer_path, data.val))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
