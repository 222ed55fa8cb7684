"""Claims: a run takes a unit before computing it, so two runs sharing one `--out` never compute it twice.

A claim is a small file beside the unit's Parquet file (`<unit>.parquet.claim`), created with O_EXCL (one
atomic step on a local or NFSv3+ file system), holding the claiming process's host, pid and start time.
It is removed once the unit is written, or when its computation fails. A claim whose process is gone (same
host, pid no longer alive: a killed run or Ray worker) is stale and is taken over; a claim from another
host cannot be checked from here, so it is respected, and the message names the file to delete if that
run is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from circuitbench.results.files import FILE_MODE


@dataclass(frozen=True)
class Holder:
    """Who holds a claim."""

    path: Path
    host: str
    pid: int
    since: float

    def describe(self) -> str:
        """`pid 123 on host h since 12:00:01 (file ...)`."""
        since = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host} since {since} ({self.path})"


def claim_path(unit_file: Path) -> Path:
    """The claim file of a unit's Parquet file."""
    return unit_file.with_name(unit_file.name + ".claim")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:  # a killed process its parent has not reaped yet (a zombie) is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def holder(unit_file: Path) -> Holder | None:
    """The live holder of a unit's claim, or None (no claim, or a stale one, which is removed)."""
    path = claim_path(unit_file)
    try:
        raw = json.loads(path.read_text())
        h = Holder(path, str(raw["host"]), int(raw["pid"]), float(raw["since"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # half-written or foreign: treat as stale
        path.unlink(missing_ok=True)
        return None
    if h.host == socket.gethostname() and not _alive(h.pid):
        path.unlink(missing_ok=True)  # its process is gone: a killed run
        return None
    return h


def _publish(path: Path) -> bool:
    """Create the claim file complete, in one atomic step: False when it exists already.

    The claim is written to a private file first and hard-linked into place (`link` fails when the target
    exists, like O_EXCL), so another run never reads a claim half-written, which it would take for a
    stale one and remove. Where hard links are not supported, an O_EXCL create and write is used instead.
    """
    body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
    tmp = path.with_name(f".claim.{os.getpid()}.{time.time_ns()}.{path.name}.tmp")  # not a unit's debris name
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(body)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some FUSE and SMB mounts)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(body)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def acquire(unit_file: Path) -> Holder | None:
    """Claim a unit for this process; returns None when claimed, else the live holder of the claim."""
    path = claim_path(unit_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # a stale claim is removed once, then taken
        if _publish(path):
            return None
        h = holder(unit_file)
        if h is not None:
            return h
    h = holder(unit_file)
    if h is None:  # released between our attempts: one more try
        return None if _publish(path) else holder(unit_file)
    return h


def release(unit_file: Path) -> None:
    """Drop this process's claim of a unit (a no-op when it holds none)."""
    path = claim_path(unit_file)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if raw.get("pid") == os.getpid() and raw.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
