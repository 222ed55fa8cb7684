from pathlib import Path

import pytest

from circuitbench.errors import CircuitbenchError
from circuitbench.train.corpus import collect_corpus, default_root


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for i in range(200):
        _write(tmp_path, f"pkg{i % 7}/mod_{i:03d}.py", f"x_{i} = {i}\n".encode())
    _write(tmp_path, "dup_a.py", b"same = 1\n")
    _write(tmp_path, "zz/dup_b.py", b"same = 1\n")
    _write(tmp_path, "latin1.py", "name = 'caf\xe9'\n".encode("latin-1"))
    _write(tmp_path, "empty.py", b"\n")
    _write(tmp_path, "notes.txt", b"not python\n")
    _write(tmp_path, "test/test_x.py", b"import unittest\n")
    _write(tmp_path, "lib/site-packages/third.py", b"third = 3\n")
    return tmp_path


def test_collect_is_deterministic_and_hash_is_stable(tree: Path) -> None:
    a = collect_corpus(tree, val_fraction=0.1)
    b = collect_corpus(tree, val_fraction=0.1)
    assert a == b
    assert len(a.hash) == 64


def test_duplicates_keep_first_path_and_undecodable_empty_excluded_are_skipped(tree: Path) -> None:
    corpus = collect_corpus(tree, val_fraction=0.1)
    paths = {f.path for f in corpus.train + corpus.val}
    assert "dup_a.py" in paths and "zz/dup_b.py" not in paths
    assert "latin1.py" not in paths
    assert "empty.py" not in paths
    assert "notes.txt" not in paths
    assert "test/test_x.py" not in paths
    assert "lib/site-packages/third.py" not in paths
    assert corpus.n_files == 201
    assert corpus.n_bytes == sum(len(f.text.encode()) for f in corpus.train + corpus.val)


def test_split_is_by_file_and_depends_on_content_only(tree: Path, tmp_path_factory) -> None:
    corpus = collect_corpus(tree, val_fraction=0.1)
    train_hashes = {f.sha256 for f in corpus.train}
    val_hashes = {f.sha256 for f in corpus.val}
    assert not train_hashes & val_hashes
    assert 5 <= len(corpus.val) <= 40  # ~10% of 201
    assert [f.path for f in corpus.train] == sorted(f.path for f in corpus.train)

    # The same contents under other names land in the same split, with the same corpus hash.
    other = tmp_path_factory.mktemp("renamed")
    for f in corpus.train + corpus.val:
        _write(other, "renamed_" + f.path.replace("/", "_"), f.text.encode())
    moved = collect_corpus(other, val_fraction=0.1)
    assert {f.sha256 for f in moved.val} == val_hashes
    assert moved.hash == corpus.hash


def test_hash_changes_with_content_and_split(tree: Path) -> None:
    base = collect_corpus(tree, val_fraction=0.1)
    assert collect_corpus(tree, val_fraction=0.3).hash != base.hash
    _write(tree, "new.py", b"new = 1\n")
    assert collect_corpus(tree, val_fraction=0.1).hash != base.hash


def test_val_fraction_zero_puts_everything_in_train(tree: Path) -> None:
    corpus = collect_corpus(tree, val_fraction=0.0)
    assert not corpus.val and len(corpus.train) == corpus.n_files


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(CircuitbenchError, match="val_fraction"):
        collect_corpus(tmp_path, val_fraction=1.0)
    with pytest.raises(CircuitbenchError, match="not a directory"):
        collect_corpus(tmp_path / "missing")
    with pytest.raises(CircuitbenchError, match="no UTF-8"):
        collect_corpus(tmp_path)


def test_default_corpus_is_the_stdlib_without_tests_or_site_packages() -> None:
    corpus = collect_corpus()
    assert corpus.root == str(default_root())
    paths = [f.path for f in corpus.train + corpus.val]
    assert "os.py" in paths and "json/decoder.py" in paths
    assert not any(p.startswith(("test/", "site-packages/")) or "/test/" in p for p in paths)
    assert corpus.n_bytes > 1_000_000
    assert 0 < len(corpus.val) < 0.1 * corpus.n_files
