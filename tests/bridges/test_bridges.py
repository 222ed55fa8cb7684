"""Bridges on small random models: exact at the identity, losses fall in training, refusals, files, resume."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from circuitbench.bridges.bridge import (
    BridgeError,
    Bridges,
    check_bridgeable,
    load_bridges,
    location_of,
    residual_locations,
)
from circuitbench.bridges.fit import CHECKPOINT, BridgeTrainConfig, train_bridges
from circuitbench.bridges.losses import bridge_losses, record, replaced
from tests.bridges.conftest import make_adapter


@pytest.fixture(scope="module")
def tokens(python_bpe) -> np.ndarray:
    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    return np.asarray(python_bpe.encode(text), dtype=np.uint16)


def test_a_model_bridged_to_itself_through_identity_maps_is_exact(small_adapter):
    locs = residual_locations(small_adapter.hook_names)
    assert locs == ["0.resid_in", "0.resid_mid", "final_resid"]
    width = small_adapter.config.d_model
    bridges = Bridges.identity(locs, width)
    x = torch.randint(0, 2048, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own, acts = record(small_adapter.forward, x, locs)
        for loc in locs:
            for through in (bridges.decode(loc, acts[loc]), bridges.encode(loc, acts[loc])):
                assert torch.equal(small_adapter.forward(x, replaced(loc, through)), own), loc
        losses = bridge_losses(bridges, small_adapter.forward, small_adapter.forward, x)
    assert float(losses.nmse_enc.max()) == 0.0 and float(losses.nmse_dec.max()) == 0.0
    assert float(losses.kl_d2s.abs().max()) < 1e-6 and float(losses.kl_s2d.abs().max()) < 1e-6


def test_a_hybrid_pass_really_switches_models(pair):
    """A bridge that outputs zeros changes the downstream model's output: the replacement reaches the logits."""
    dense, sparse = pair
    shape = check_bridgeable(dense, sparse)
    assert shape == {"locations": ["0.resid_in", "0.resid_mid", "final_resid"], "d_dense": 48, "d_sparse": 32}
    x = torch.randint(0, 2048, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        own = sparse.forward(x)
        for loc in shape["locations"]:
            assert not torch.allclose(sparse.forward(x, replaced(loc, torch.zeros(2, 12, 32))), own), loc


def test_training_lowers_the_losses_in_seconds_and_writes_loadable_bridges(pair, tokens, tmp_path):
    dense, sparse = pair
    # from a random start, every loss falls
    cfg = BridgeTrainConfig(steps=40, batch_size=4, ctx=32, lr=1e-2, init_windows=0, checkpoint_every=10)
    out = tmp_path / "b"
    bridges = train_bridges(dense, sparse, tokens, out, cfg, show_progress=False)
    assert bridges is not None
    config = json.loads((out / "bridge_config.json").read_text())
    first, last = config["trained"]["first"], config["trained"]["last"]
    for key in ("nmse_enc", "nmse_dec", "kl_s2d"):
        assert last[key] < 0.7 * first[key], key
    # two unrelated random models: the sparse one cannot reproduce the dense one's output whatever it is given,
    # so the dense->sparse KL has little to lose; it must not rise
    assert last["kl_d2s"] < first["kl_d2s"]
    assert config["topk"] == 8 == bridges.topk  # the sparse model's afrac 0.25 x width 32
    assert config["dense"]["weights_sha256"] == "test-dense" and not (out / CHECKPOINT).exists()
    # the least-squares start (the default) already predicts better than the targets' means and than the
    # random start
    lsq = train_bridges(dense, sparse, tokens, tmp_path / "lsq", BridgeTrainConfig(steps=1, batch_size=4, ctx=32,
                                                                                    init_windows=16),
                        show_progress=False)
    assert lsq is not None
    start = json.loads((tmp_path / "lsq" / "bridge_config.json").read_text())["trained"]["first"]
    assert start["nmse_dec"] < 1.0 and start["nmse_enc"] < first["nmse_enc"] and start["nmse_dec"] < first["nmse_dec"]
    files = load_bridges(out)
    x = torch.as_tensor(tokens[:64].astype(np.int64)).view(2, 32)
    with torch.no_grad():
        _, acts = record(sparse.forward, x, bridges.locations)
        for loc in bridges.locations:
            assert torch.equal(files.bridges.decode(loc, acts[loc]), bridges.decode(loc, acts[loc]))
            enc = files.bridges.encode(loc, torch.randn(5, 48))
            assert int((enc != 0).sum(-1).max()) <= 8  # AbsTopK keeps at most k channels
    # finished bridges are never replaced without --force
    with pytest.raises(BridgeError, match="--force"):
        train_bridges(dense, sparse, tokens, out, cfg, show_progress=False)


def test_an_interrupted_run_resumes_bit_for_bit(pair, tokens, tmp_path):
    dense, sparse = pair
    cfg = BridgeTrainConfig(steps=12, batch_size=2, ctx=16, init_windows=8, checkpoint_every=5)
    whole = train_bridges(dense, sparse, tokens, tmp_path / "whole", cfg, show_progress=False)
    cut = tmp_path / "cut"
    assert train_bridges(dense, sparse, tokens, cut, cfg, show_progress=False, stop_after=7) is None
    assert (cut / CHECKPOINT).is_file() and not (cut / "bridge_config.json").exists()
    with pytest.raises(BridgeError, match="--resume"):  # an unfinished run is never overwritten
        train_bridges(dense, sparse, tokens, cut, cfg, show_progress=False)
    other = BridgeTrainConfig(**{**cfg.model_dump(), "lr": 5e-3})
    with pytest.raises(BridgeError, match="other settings"):
        train_bridges(dense, sparse, tokens, cut, other, resume=True, show_progress=False)
    resumed = train_bridges(dense, sparse, tokens, cut, cfg, resume=True, show_progress=False)
    assert resumed is not None and whole is not None
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not (cut / CHECKPOINT).exists()
    curve = (cut / "bridge_curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 12 and curve[0].startswith("step,nmse_enc")


def test_models_that_cannot_be_bridged_are_refused_with_the_reason(pair, python_bpe, tokens, tmp_path):
    dense, sparse = pair
    from circuitbench.models.tokenizer import HFTokenizer
    from circuitbench.train.tokenizer import train_tokenizer

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / f).read_text() for f in ("argparse.py", "typing.py", "inspect.py", "textwrap.py")]
    other_tok = HFTokenizer.from_object(train_tokenizer(texts, vocab_size=2048), name="other")
    other = make_adapter(other_tok, "other", 32, afrac=0.25)
    with pytest.raises(BridgeError, match="different tokenizers"):
        check_bridgeable(dense, other)
    deeper = make_adapter(python_bpe, "deeper", 32, n_layer=2)
    with pytest.raises(BridgeError, match="residual locations differ"):
        check_bridgeable(dense, deeper)
    with pytest.raises(BridgeError, match="different tokenizers"):  # before any training or file
        train_bridges(dense, other, tokens, tmp_path / "x", show_progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(BridgeError, match="--ctx 100"):
        train_bridges(dense, sparse, tokens, tmp_path / "y", BridgeTrainConfig(ctx=100), show_progress=False)


def test_node_sites_map_to_the_residual_location_they_read_or_write():
    assert location_of("0.attn.act_in", "attn_in", 0, 2) == "0.resid_in"
    assert location_of("0.attn.resid_delta", "attn_out", 0, 2) == "0.resid_mid"
    assert location_of("1.mlp.act_in", "mlp_in", 1, 2) == "1.resid_mid"
    assert location_of("0.mlp.resid_delta", "mlp_out", 0, 2) == "1.resid_in"
    assert location_of("1.mlp.resid_delta", "mlp_out", 1, 2) == "final_resid"
    assert location_of("1.attn.v", "v", 1, 2) is None and location_of("0.mlp.post_act", "mlp_neuron", 0, 2) is None
