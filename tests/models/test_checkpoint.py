import json
import shutil

import pytest
import torch

import circuitbench
from circuitbench.errors import CheckpointError, ConfigError
from circuitbench.models.checkpoint import save_checkpoint
from circuitbench.models.config import GPTConfig
from tests.models.conftest import FIXTURE_MODEL, random_model


def _copy_fixture(tmp_path):
    d = tmp_path / "fx"
    shutil.copytree(FIXTURE_MODEL, d)
    return d


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    d = _copy_fixture(tmp_path)
    data = (d / "final_model.pt").read_bytes()
    (d / "final_model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"final_model\.pt: cannot read the checkpoint.*truncated"):
        circuitbench.load_model(str(d), device="cpu")


def test_garbage_checkpoint_is_a_clear_error(tmp_path):
    d = _copy_fixture(tmp_path)
    (d / "final_model.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        circuitbench.load_model(str(d), device="cpu")


def test_pickled_code_is_refused_by_weights_only_loading(tmp_path):
    d = _copy_fixture(tmp_path)
    torch.save({"weights": GPTConfig}, d / "final_model.pt")  # a class, not a tensor
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        circuitbench.load_model(str(d), device="cpu")


def test_unknown_config_key_names_the_key_and_file(tmp_path):
    d = _copy_fixture(tmp_path)
    cfg = json.loads((d / "beeg_config.json").read_text())
    cfg["n_heads"] = 4
    (d / "beeg_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"beeg_config\.json: n_heads: unknown field.*did you mean 'n_head'"):
        circuitbench.load_model(str(d), device="cpu")


def test_ill_typed_config_value_names_the_key(tmp_path):
    d = _copy_fixture(tmp_path)
    cfg = json.loads((d / "beeg_config.json").read_text())
    cfg["n_layer"] = "two"
    (d / "beeg_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"n_layer: .*'two'"):
        circuitbench.load_model(str(d), device="cpu")


def test_unknown_abstopk_location_lists_the_allowed_ones(tmp_path):
    d = _copy_fixture(tmp_path)
    cfg = json.loads((d / "beeg_config.json").read_text())
    cfg["afrac_loctypes"] = "attn_in,mlp_hidden"
    (d / "beeg_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"mlp_hidden.*allowed: attn_in"):
        circuitbench.load_model(str(d), device="cpu")


def test_malformed_json_config(tmp_path):
    d = _copy_fixture(tmp_path)
    (d / "beeg_config.json").write_text("{ block_size: 64")
    with pytest.raises(ConfigError, match="not valid JSON"):
        circuitbench.load_model(str(d), device="cpu")


def test_wrong_shapes_are_listed_with_both_shapes(tmp_path):
    d = _copy_fixture(tmp_path)
    cfg = json.loads((d / "beeg_config.json").read_text())
    cfg["d_mlp"] = 128
    (d / "beeg_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        circuitbench.load_model(str(d), device="cpu")
    msg = str(err.value)
    assert "wrong shapes" in msg and "transformer.h.0.mlp.c_fc.weight: checkpoint (256, 64)" in msg
    assert "config expects (128, 64)" in msg


def test_missing_and_unexpected_keys_are_listed_never_dropped(tmp_path):
    d = _copy_fixture(tmp_path)
    sd = torch.load(d / "final_model.pt", weights_only=True)
    sd.pop("transformer.h.1.attn.attn_imp.sink_logit")
    sd["transformer.h.2.mlp.c_fc.weight"] = torch.zeros(3)
    torch.save(sd, d / "final_model.pt")
    with pytest.raises(CheckpointError) as err:
        circuitbench.load_model(str(d), device="cpu")
    msg = str(err.value)
    assert "missing keys (1): transformer.h.1.attn.attn_imp.sink_logit" in msg
    assert "unexpected keys (1): transformer.h.2.mlp.c_fc.weight" in msg


def test_sink_checkpoint_loaded_as_non_sink_config_is_refused(tmp_path):
    # the official loader (flash=False, strict=False) drops the sink logits silently here
    d = _copy_fixture(tmp_path)
    cfg = json.loads((d / "beeg_config.json").read_text())
    cfg["sink"] = False
    (d / "beeg_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(2\).*sink_logit"):
        circuitbench.load_model(str(d), device="cpu")


def test_no_weights_lists_the_files_present(tmp_path):
    d = _copy_fixture(tmp_path)
    (d / "final_model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"no weights found.*Files present: README\.md, beeg_config\.json"):
        circuitbench.load_model(str(d), device="cpu")


def test_missing_final_logits_bias_is_zeros_as_in_the_official_loader(tmp_path):
    d = _copy_fixture(tmp_path)
    sd = torch.load(d / "final_model.pt", weights_only=True)
    sd.pop("final_logits_bias")
    torch.save(sd, d / "final_model.pt")
    adapter = circuitbench.load_model(str(d), device="cpu")
    assert torch.count_nonzero(adapter.model.final_logits_bias) == 0


def test_official_non_flash_causal_buffer_is_accepted(tmp_path):
    d = _copy_fixture(tmp_path)
    sd = torch.load(d / "final_model.pt", weights_only=True)
    sd["transformer.h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
    torch.save(sd, d / "final_model.pt")
    circuitbench.load_model(str(d), device="cpu")


def test_safetensors_weights_give_the_same_logits(tmp_path):
    cfg = GPTConfig(block_size=16, vocab_size=31, n_layer=2, n_head=2, d_model=16, tied_unembed=True)
    model = random_model(cfg)
    save_checkpoint(model, tmp_path / "pt")
    save_checkpoint(model, tmp_path / "st", safetensors=True)
    idx = torch.randint(0, 31, (2, 7))
    a = circuitbench.load_model(str(tmp_path / "pt"), device="cpu").logits(idx)
    b = circuitbench.load_model(str(tmp_path / "st"), device="cpu").logits(idx)
    assert torch.equal(a, b)


def test_tied_checkpoint_with_one_name_loads_and_differing_copies_are_refused(tmp_path):
    cfg = GPTConfig(block_size=16, vocab_size=31, n_layer=1, n_head=2, d_model=16, tied_unembed=True)
    save_checkpoint(random_model(cfg), tmp_path / "t")
    sd = torch.load(tmp_path / "t" / "final_model.pt", weights_only=True)
    only_lm = {k: v for k, v in sd.items() if k != "transformer.wte.weight"}
    torch.save(only_lm, tmp_path / "t" / "final_model.pt")
    adapter = circuitbench.load_model(str(tmp_path / "t"), device="cpu")
    assert torch.equal(adapter.model.transformer.wte.weight, sd["lm_head.weight"])
    sd["transformer.wte.weight"] = sd["lm_head.weight"] + 1
    torch.save(sd, tmp_path / "t" / "final_model.pt")
    with pytest.raises(CheckpointError, match="tied_unembed is true but"):
        circuitbench.load_model(str(tmp_path / "t"), device="cpu")


def test_bfloat16_load_and_site_weights(tmp_path):
    adapter = circuitbench.load_model(str(FIXTURE_MODEL), device="cpu", dtype="bfloat16")
    assert adapter.dtype == torch.bfloat16
    q = next(s for s in adapter.sites if s.name == "0.attn.q")
    w = adapter.site_weight(q)
    assert w.shape == (64, 64)
    assert torch.equal(w, adapter.model.transformer.h[0].attn.c_attn.weight[:64].detach())


def test_a_nested_checkpoint_names_the_keys_that_are_not_tensors_and_the_nested_one(tmp_path):
    from circuitbench.models.checkpoint import read_state_dict

    sd = random_model(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, d_model=8), seed=0).state_dict()
    path = tmp_path / "final_model.pt"
    torch.save({"model": sd, "step": 100, "optimizer_name": "adamw"}, path)
    with pytest.raises(CheckpointError, match=r"not tensors: 'model', 'optimizer_name', 'step'\. The weights look "
                                              r"nested under 'model'"):
        read_state_dict(path)
    torch.save({"step": 100, "w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"not tensors: 'step'\.$"):
        read_state_dict(path)
