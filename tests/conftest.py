"""Shared session fixtures: built once per test run from a seed or a fixed input, never mocked."""

from __future__ import annotations

import os

import pytest

from circuitbench.models.tokenizer import HFTokenizer
from circuitbench.train.corpus import Corpus, collect_corpus
from circuitbench.train.tokenizer import train_tokenizer


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n 2`, the default in pyproject), each worker takes its share of the cores.

    In the controller: idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE, inherited by
    the workers), so a test that sets 2 threads beside a worker's 1 thread does not starve it (measured: a
    planted-circuit test beside a 2-thread recomputation, 9.6 s spinning, 5.9 s passive). In each worker:
    its share of the cores as torch threads (2 workers on 2 cores: 1 each). Tests that depend on a thread
    count set it themselves (and restore it).
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))
    elif getattr(config.option, "numprocesses", None):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests run where CUDA is (elsewhere deselected, with any -m); slow files are handed out first.

    Under `--dist loadfile` a worker takes a file at a time in collection order: the files holding slow tests
    go first, so no long file starts last while the other worker idles.
    """
    import torch

    if not torch.cuda.is_available():
        gpu = [item for item in items if item.get_closest_marker("gpu")]
        if gpu:
            config.hook.pytest_deselected(items=gpu)
            items[:] = [item for item in items if not item.get_closest_marker("gpu")]
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within a file is kept


# A 2 MB slice of the stdlib trains a 2048-token BPE in about half a second on 2 CPU cores.
PYTHON_BPE_MAX_BYTES = 2_000_000


@pytest.fixture(scope="session")
def stdlib_corpus() -> Corpus:
    """The running interpreter's standard library as a corpus."""
    return collect_corpus()


@pytest.fixture(scope="session")
def python_bpe(stdlib_corpus: Corpus) -> HFTokenizer:
    """A 2048-token Python-code byte-level BPE, trained on a capped slice of the stdlib."""
    tok = train_tokenizer(
        stdlib_corpus.train_texts, vocab_size=2048, max_bytes=PYTHON_BPE_MAX_BYTES
    )
    return HFTokenizer.from_object(tok, name="test_python_bpe_2k")


@pytest.fixture(scope="session")
def small_adapter(python_bpe):
    """A random 1-layer weight-sparse model (d_model 32, sink, AbsTopK at all eight sites) with a real BPE."""
    from circuitbench.models.config import GPTConfig
    from circuitbench.models.native import SparseGPTAdapter
    from tests.models.conftest import random_model

    cfg = GPTConfig(block_size=256, vocab_size=2048, n_layer=1, n_head=2, d_model=32, d_mlp=64,
                    rms_norm=True, sink=True, afrac=0.25,
                    afrac_loctypes="attn_in,attn_out,mlp_in,mlp_out,attn_q,attn_k,attn_v,mlp_neuron")
    model = random_model(cfg, seed=0, density=0.3)
    return SparseGPTAdapter(model, python_bpe, "small", {"weights_sha256": "test-small"})


# --- the bundled reference model and units on it, computed once per test session ----------------------------
# Several test files read the same kind of unit (a saved circuit, its node table, its explorer page). They share
# these, read-only. Under pytest-xdist the workers share them too: the first worker to ask computes the unit into
# a folder every worker sees, under a file lock, and the others wait for it and read it.


@pytest.fixture(scope="session")
def tiny_sparse():
    """The bundled weight-sparse reference model, loaded once (tests must not change its weights)."""
    import circuitbench

    return circuitbench.load_model("tiny-sparse", device="cpu")


def _shared_unit(tmp_path_factory, name: str, adapter, task: str, **settings):
    """A tiny-sparse unit computed once for all workers: (summary, path of the unit's Parquet file)."""
    import fcntl
    import json

    from circuitbench.runs.runner import RunConfig, run

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    out = root / "shared" / name
    out.mkdir(parents=True, exist_ok=True)
    method = settings.get("method", "learned_mask")
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = out / "summary.json"
        if not done.is_file():
            (summary,) = run(RunConfig(**{"model": "tiny-sparse", "tasks": [task], "out": out,
                                          "show_progress": False, "search_examples": 64, "control": False,
                                          **settings}), adapter)
            done.write_text(json.dumps(summary))
        summary = json.loads(done.read_text())
    return summary, next(out.rglob(f"{task}.{method}.seed0.parquet"))


@pytest.fixture(scope="session")
def quote_unit(tiny_sparse, tmp_path_factory):
    """single_double_quote pruned by a fast learned mask (60 steps at lr 3e-2: about 50 nodes), mean ablation.

    Returns:
        (summary, path of the unit's Parquet file).
    """
    return _shared_unit(tmp_path_factory, "quote_unit", tiny_sparse, "single_double_quote",
                        method="learned_mask", method_kwargs={"steps": 60, "lr": 0.03}, ablation="mean")


@pytest.fixture(scope="session")
def counterfactual_unit(tiny_sparse, tmp_path_factory):
    """else_elif pruned by a fast learned mask (40 steps at lr 3e-2) under counterfactual ablation."""
    return _shared_unit(tmp_path_factory, "counterfactual_unit", tiny_sparse, "else_elif",
                        method="learned_mask", method_kwargs={"steps": 40, "lr": 0.03}, ablation="counterfactual",
                        min_accuracy=0.0, target_loss=0.15)


@pytest.fixture(scope="session")
def small_model_dir(small_adapter, tmp_path_factory):
    """`small_adapter`'s model saved as a model folder (weights, config, tokenizer): loadable by path anywhere."""
    from circuitbench.models.checkpoint import save_checkpoint
    from circuitbench.train.tokenizer import save_tokenizer

    directory = tmp_path_factory.mktemp("small_model")
    save_checkpoint(small_adapter.model, directory)
    save_tokenizer(small_adapter.tokenizer._tok, directory / "tokenizer.json")
    return directory
