"""Two small models with one tokenizer, for the bridge tests: built from a seed, never mocked."""

from __future__ import annotations

import pytest

from circuitbench.models.config import GPTConfig
from circuitbench.models.native import SparseGPTAdapter
from tests.models.conftest import random_model

LOCS = "attn_in,attn_out,mlp_in,mlp_out,attn_q,attn_k,attn_v,mlp_neuron"


def make_adapter(tokenizer, name: str, d_model: int, n_layer: int = 1, afrac: float | None = None, seed: int = 0):
    """A random SparseGPT adapter over `tokenizer` (AbsTopK at the eight sites when `afrac` is given)."""
    cfg = GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=n_layer, n_head=2, d_model=d_model,
                    d_mlp=2 * d_model, rms_norm=True, sink=True, afrac=afrac, afrac_loctypes=LOCS)
    model = random_model(cfg, seed=seed, density=0.5)
    return SparseGPTAdapter(model, tokenizer, name, {"weights_sha256": f"test-{name}"})


@pytest.fixture(scope="module")
def pair(python_bpe):
    """(dense, sparse): widths 48 and 32, one block each, the same 2048-token BPE."""
    return make_adapter(python_bpe, "dense", 48, seed=1), make_adapter(python_bpe, "sparse", 32, afrac=0.25, seed=2)
