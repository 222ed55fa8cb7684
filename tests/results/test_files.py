import os
import stat

import pytest

from circuitbench.results.files import atomic_path


def test_writes_are_atomic_and_group_readable_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        with atomic_path(tmp_path / "a" / "f.txt") as tmp:
            tmp.write_text("new")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a" / "f.txt").stat().st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IWGRP and not mode & stat.S_IROTH


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
