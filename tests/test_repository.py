"""The repository stays light: no large file is stored twice in the tree."""

import hashlib
import subprocess
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LARGE = 256 * 1024
"""Files of at least this many bytes are checked (the reference models are 12 MB each)."""


def test_no_large_file_is_stored_twice():
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, text=True,
                           check=True).stdout.split("\0")
    by_hash = defaultdict(list)
    for name in filter(None, files):
        path = REPO / name
        if path.is_file() and path.stat().st_size >= LARGE:
            by_hash[hashlib.sha256(path.read_bytes()).hexdigest()].append(name)
    twice = [names for names in by_hash.values() if len(names) > 1]
    assert not twice, f"the same file is tracked at several paths (keep one, point to it): {twice}"
