"""Shared session fixtures: built once per test run from a seed or a fixed input, never mocked."""

from __future__ import annotations

import pytest

from circuitbench.models.tokenizer import HFTokenizer
from circuitbench.train.corpus import Corpus, collect_corpus
from circuitbench.train.tokenizer import train_tokenizer

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
