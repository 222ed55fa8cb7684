"""Python source corpus: collect, deduplicate and split `.py` files by file, with a content hash.

The default corpus is the running interpreter's standard library
(`sysconfig.get_paths()["stdlib"]`). Directories named in `DEFAULT_EXCLUDE` are skipped anywhere
below the root: `site-packages` and `dist-packages` (installed third-party code is not the standard
library, and differs per machine), the standard library's own test suites (`test`, `tests`,
`idle_test`: large, repetitive, and full of deliberately broken or odd code) and `__pycache__`.
Files that are not valid UTF-8 are skipped (a few test-data files use other encodings on purpose);
blank files are skipped too.

Everything is deterministic: files are visited in sorted relative-path order, duplicates (same
bytes) keep the first path, and the train/validation split is a function of each file's content
hash alone, so the same files give the same split and the same corpus hash on any machine.
"""

from __future__ import annotations

import hashlib
import logging
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from circuitbench.errors import CircuitbenchError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

log = logging.getLogger(__name__)

DEFAULT_EXCLUDE: frozenset[str] = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
"""Directory names skipped anywhere below the corpus root."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One deduplicated source file of the corpus."""

    path: str
    """Path relative to the corpus root, with `/` separators."""
    text: str
    """The file's text, decoded as UTF-8."""
    sha256: str
    """Hex sha256 of the file's bytes."""


@dataclass(frozen=True, slots=True)
class Corpus:
    """A deduplicated set of Python files split into train and validation by file.

    Attributes:
        train: Training files, in sorted path order.
        val: Validation files, in sorted path order.
        hash: Hex sha256 over the sorted file hashes and their split; identifies the corpus.
        n_files: Number of files after deduplication (train + val).
        n_bytes: Total UTF-8 bytes of all kept files.
        root: The directory the files were collected from (not part of the hash).
    """

    train: tuple[SourceFile, ...]
    val: tuple[SourceFile, ...]
    hash: str
    n_files: int
    n_bytes: int
    root: str

    @property
    def train_texts(self) -> list[str]:
        """The training files' texts."""
        return [f.text for f in self.train]

    @property
    def val_texts(self) -> list[str]:
        """The validation files' texts."""
        return [f.text for f in self.val]


def corpus_hash(train: Sequence[SourceFile], val: Sequence[SourceFile]) -> str:
    """Hex sha256 over the sorted (file hash, split) pairs: the identity of a corpus's text and split."""
    h = hashlib.sha256()
    for digest, split in sorted([(f.sha256, "train") for f in train] + [(f.sha256, "val") for f in val]):
        h.update(f"{digest} {split}\n".encode())
    return h.hexdigest()


def default_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def _is_val(sha256: str, val_fraction: float) -> bool:
    """Assign a file to validation from its content hash alone (uniform in [0, 1))."""
    return int(sha256[:16], 16) / 2**64 < val_fraction


def _iter_py_files(root: Path, exclude: frozenset[str]) -> Iterator[Path]:
    """Yield `.py` files below root in sorted relative-path order, skipping excluded directories."""
    paths = [
        p
        for p in root.rglob("*.py")
        if p.is_file() and not exclude.intersection(p.relative_to(root).parts[:-1])
    ]
    yield from sorted(paths, key=lambda p: p.relative_to(root).as_posix())


def collect_corpus(
    root: Path | None = None,
    val_fraction: float = 0.02,
    exclude: frozenset[str] = DEFAULT_EXCLUDE,
) -> Corpus:
    """Collect the Python files below a directory as a deduplicated, split corpus.

    Args:
        root: Directory to walk; None means the interpreter's standard library.
        val_fraction: Expected fraction of files in the validation split, in [0, 1).
        exclude: Directory names to skip anywhere below root.

    Returns:
        The corpus, with train and validation files and its content hash.

    Raises:
        CircuitbenchError: when root is not a directory, val_fraction is out of range, or no
            usable `.py` file is found.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise CircuitbenchError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        raise CircuitbenchError(f"{root}: corpus root is not a directory.")

    seen: set[str] = set()
    train: list[SourceFile] = []
    val: list[SourceFile] = []
    n_undecodable = n_dup = n_bytes = 0
    for path in _iter_py_files(root, exclude):
        data = path.read_bytes()
        if not data.strip():
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            n_undecodable += 1
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            n_dup += 1
            continue
        seen.add(digest)
        n_bytes += len(data)
        f = SourceFile(path=path.relative_to(root).as_posix(), text=text, sha256=digest)
        (val if _is_val(digest, val_fraction) else train).append(f)

    if not train and not val:
        raise CircuitbenchError(
            f"{root}: no UTF-8 `.py` files found (excluding {sorted(exclude)})."
        )

    corpus = Corpus(
        train=tuple(train),
        val=tuple(val),
        hash=corpus_hash(train, val),
        n_files=len(train) + len(val),
        n_bytes=n_bytes,
        root=str(root),
    )
    log.info(
        "corpus %s: %d files (%d train, %d val), %.1f MB; skipped %d duplicate, %d non-UTF-8",
        corpus.hash[:12],
        corpus.n_files,
        len(train),
        len(val),
        n_bytes / 1e6,
        n_dup,
        n_undecodable,
    )
    return corpus


# --- token windows over a tokenized corpus (training, bridges, validation loss) ---------------------------


def sample_batch(data: np.ndarray, batch_size: int, ctx: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random windows of ctx+1 tokens: inputs [B, ctx] and next-token targets [B, ctx].

    Args:
        data: Token ids.
        batch_size: Number of windows B.
        ctx: Context length.
        gen: Seeded generator; its state is all the sampler's state (saved in checkpoints).
    """
    import numpy as np
    import torch

    if len(data) <= ctx + 1:
        raise ValueError(f"{len(data)} tokens is too few for windows of {ctx + 1}")
    starts = torch.randint(0, len(data) - ctx - 1, (batch_size,), generator=gen)
    idx = starts[:, None] + torch.arange(ctx + 1)[None, :]  # (B, ctx+1)
    windows = torch.from_numpy(data[idx.numpy()].astype(np.int64))  # (B, ctx+1)
    return windows[:, :-1], windows[:, 1:]


def val_windows(data: np.ndarray, ctx: int, max_windows: int) -> tuple[Tensor, Tensor]:
    """Fixed, evenly spaced validation windows: inputs and targets [N, ctx]."""
    import numpy as np
    import torch

    n = min(max_windows, (len(data) - 1) // ctx)
    if n <= 0:
        raise CircuitbenchError(
            f"the validation split has {len(data)} tokens, too few for one window of {ctx + 1}; "
            "use a larger corpus (about 2% of its files, chosen by content hash, are held out)."
        )
    stride = (len(data) - ctx - 1) // n
    starts = torch.arange(n) * stride
    idx = starts[:, None] + torch.arange(ctx + 1)[None, :]  # (N, ctx+1)
    windows = torch.from_numpy(data[idx.numpy()].astype(np.int64))  # (N, ctx+1)
    return windows[:, :-1], windows[:, 1:]
