"""Atomic, group-readable file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from circuitbench.errors import CircuitbenchError

FILE_MODE = 0o664
"""Result files are readable (and writable) by the user's group, whatever the umask narrows."""


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    The temporary file is removed when the block raises, so an interrupted write leaves no debris and
    the previous file, if any, untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE & ~_umask_others())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask_others() -> int:
    """The umask's bits for others only: group bits are always granted, others' follow the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask & 0o007


def os_error_reason(err: OSError) -> str:
    """A short, actionable reason for a failed write: full disk, no permission, read-only, not a folder."""
    import errno

    reasons = {
        errno.ENOSPC: "the disk is full: free space or choose another place",
        errno.EDQUOT: "the disk quota is used up: free space or choose another place",
        errno.EACCES: "permission denied: choose a place you can write to",
        errno.EPERM: "permission denied: choose a place you can write to",
        errno.EROFS: "the file system is read-only: choose another place",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder: give a file name",
    }
    return reasons.get(err.errno or -1, f"{err.strerror or type(err).__name__}")


def write_text_atomic(path: Path, text: str, flag: str | None = None) -> None:
    """Write a text file atomically; a failure is a one-line CircuitbenchError naming the flag and path.

    Raises:
        CircuitbenchError: when the file cannot be written (no partial file is left).
    """
    from circuitbench.errors import CircuitbenchError

    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as err:
        where = f"{flag} {path}" if flag else str(path)
        raise CircuitbenchError(f"{where}: cannot write ({os_error_reason(err)})") from None


OUTPUT_MARKER = ".made-by-circuitbench"
"""Written into every folder circuitbench builds whole and may later replace whole (a board's site): a folder
is only ever replaced when it is empty or holds this marker."""


def check_not_an_input(out: Path, flag: str, inputs: Iterable[tuple[str, Path]]) -> None:
    """Refuse an output that is, holds or lies inside one of the command's inputs.

    Raises:
        CircuitbenchError: naming both options and the fix.
    """
    here = Path(out).resolve()
    for name, src in inputs:
        there = Path(src).resolve()
        if here == there or here in there.parents or there in here.parents:
            raise CircuitbenchError(f"{flag} {out}: it is, holds or lies inside {name} {src}, which this command "
                                    f"reads; writing there would replace what it reads. Choose another {flag}.")


def check_output_folder(out: Path, flag: str, inputs: Iterable[tuple[str, Path]],
                        made_here: Callable[[Path], bool] | None = None) -> None:
    """Refuse an output folder that would be replaced whole, unless circuitbench made it and it reads nothing.

    Args:
        out: the folder to be replaced.
        flag: the option that named it, for the message (e.g. `--out`).
        inputs: (option, path) pairs the command reads; `out` may not be, hold or lie inside any of them.
        made_here: recognises a folder made before markers were written (an older build's), if any.

    Raises:
        CircuitbenchError: naming the flag, what is in the way and the fix.
    """
    out = Path(out)
    check_not_an_input(out, flag, inputs)
    if not out.exists():
        return
    if not out.is_dir():
        raise CircuitbenchError(f"{flag} {out}: a file, not a folder. Choose a folder.")
    if any(out.iterdir()) and not (out / OUTPUT_MARKER).is_file() and not (made_here is not None and made_here(out)):
        raise CircuitbenchError(f"{flag} {out}: holds files circuitbench did not write (no {OUTPUT_MARKER}), and the "
                                f"folder is replaced whole. Choose a new or empty {flag}, or move those files first.")


def read_json(path: Path, what: str, fix: str = "") -> Any:
    """A JSON file's value; a missing, unreadable, truncated or malformed file is one error naming it.

    Args:
        path: the file.
        what: what the file is meant to be, for the message (e.g. "an MIB circuit file").
        fix: what to do about it, appended to the message.
    """
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CircuitbenchError(f"{path}: cannot read {what} ({err.strerror or type(err).__name__}){_then(fix)}") \
            from None
    except (UnicodeDecodeError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        raise CircuitbenchError(f"{path}: not {what}: not valid JSON ({err}){_then(fix)}") from None


def read_parquet(path: Path, what: str, fix: str = "") -> Any:
    """A Parquet file as a pyarrow Table; a missing, unreadable, truncated or malformed file is one error naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        return pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as err:  # a truncated file is an ArrowInvalid (a ValueError)
        raise CircuitbenchError(f"{path}: not a readable {what} ({str(err).splitlines()[0][:200]}){_then(fix)}") \
            from None


def _then(fix: str) -> str:
    return f"; {fix}" if fix else ""
