"""TransformerLens and nnsight models as input: the same logits, activations, ablations and edges as the
transformers adapter on the same weights, and `circuitbench run` on models built by a Python function."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens import loading_from_pretrained as tl_loading
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights
from transformers import PreTrainedTokenizerFast

from circuitbench.circuits.edges import count_edges
from circuitbench.circuits.masks import NodeIndex, gate_hook
from circuitbench.errors import ConfigError, ModelNotFoundError
from circuitbench.models.hf import HFAdapter
from circuitbench.models.hub import load_model
from circuitbench.models.tlens import BridgeAdapter, TLAdapter
from tests.models.test_hf import adapter_for, build, save_model_dir, tokens

CONVERT = {"gpt2": convert_gpt2_weights, "llama": convert_llama_weights}


def fast_tokenizer(python_bpe) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=python_bpe._tok)


def hooked(arch: str, hf_model, directory: Path, python_bpe, processed: bool = False) -> HookedTransformer:
    """The HookedTransformer of a saved transformers model, built the way TransformerLens loads a checkpoint
    (its config conversion and weight conversion), offline. Unprocessed unless `processed`."""
    cfg = tl_loading.convert_hf_model_config(str(directory))
    cfg["tokenizer_name"] = None
    cfg["model_name"] = directory.name  # from_pretrained names it after the checkpoint (here "custom")
    model = HookedTransformer(HookedTransformerConfig(**cfg, device="cpu"), tokenizer=fast_tokenizer(python_bpe))
    state = CONVERT[arch](hf_model, model.cfg)
    if processed:  # what HookedTransformer.from_pretrained does by default
        model.load_and_process_state_dict(state)
    else:
        model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                          fold_value_biases=False)
    return model.eval()


@pytest.fixture(params=["gpt2", "llama"])
def pair(request, python_bpe, tmp_path):
    """(arch, transformers adapter, TransformerLens adapter) on the same random weights."""
    arch = request.param
    if arch == "gpt2":  # transformers 5 dropped n_ctx, which TransformerLens's config conversion reads
        model = build(arch)
        model.config.n_ctx = model.config.n_positions
    else:
        model = build(arch)  # grouped-query attention, gated MLP, RMSNorm, rotary
    directory = save_model_dir(model, python_bpe, tmp_path / f"tiny-{arch.replace('llama', 'gqa')}")
    tl = hooked(arch, model, directory, python_bpe)
    return arch, adapter_for(model, python_bpe), load_model(tl)


def random_gates(index: NodeIndex, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(index.size, generator=g) < 0.7).float(), torch.randn(index.size, generator=g)


def test_hooked_transformer_matches_transformers_logits_activations_and_sites(pair):
    arch, hf, tl = pair
    assert isinstance(tl, TLAdapter) and tl.provenance["format"] == "transformer_lens"
    x = tokens()
    with torch.no_grad():
        own = tl.model(x)  # TransformerLens's own forward
    assert torch.equal(tl.logits(x), own)  # hooks that only observe change nothing
    assert (tl.logits(x) - hf.logits(x)).abs().max() <= 1e-4
    assert [(s.name, s.kind, s.width, s.source) for s in tl.sites] == \
        [(s.name, s.kind, s.width, s.source) for s in hf.sites]
    assert tl.hook_names == hf.hook_names
    _, tl_cache = tl.run_with_cache(x)
    _, hf_cache = hf.run_with_cache(x)
    assert set(tl_cache) == set(hf_cache) == set(hf.hook_names)
    for name in hf.hook_names:
        assert torch.allclose(tl_cache[name], hf_cache[name], atol=1e-4), name
    for s in hf.sites:
        if s.source is not None:
            assert torch.allclose(tl.site_weight(s).float(), hf.site_weight(s).float(), atol=1e-6), s.name


def test_hooked_transformer_node_ablations_and_edges_equal_the_transformers_adapters(pair):
    arch, hf, tl = pair
    index = NodeIndex.of(hf)
    assert NodeIndex.of(tl).size == index.size
    x = tokens()
    for seed in range(3):
        gates, values = random_gates(index, seed)
        with torch.no_grad():
            a = tl.forward(x, gate_hook(index, gates, values))
            b = hf.forward(x, gate_hook(index, gates, values))
        assert (a - b).abs().max() <= 1e-4
        assert (a - tl.logits(x)).abs().max() > 1e-2  # the ablation did something
        assert count_edges(tl, index, gates) == count_edges(hf, index, gates)


def test_an_ablation_equals_transformer_lens_own_hook(pair, python_bpe):
    arch, hf, tl = pair
    index = NodeIndex.of(tl)
    i = [s.name for s in index.sites].index("1.mlp.post_act")
    gates, values = torch.ones(index.size), torch.zeros(index.size)
    gates[index.slice(i)][::3] = 0.0
    values[index.slice(i)] = torch.linspace(-1, 1, index.sites[i].width)
    pruned = gates[index.slice(i)] == 0

    def patch(act: Tensor, hook) -> Tensor:
        act = act.clone()
        act[..., pruned] = values[index.slice(i)][pruned]
        return act

    x = tokens()
    with torch.no_grad():
        ours = tl.forward(x, gate_hook(index, gates, values))
        theirs = tl.model.run_with_hooks(x, fwd_hooks=[("blocks.1.mlp.hook_post", patch)])
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_q_k_v_see_one_masked_read_although_ln1_runs_three_times(pair):
    arch, hf, tl = pair
    calls: list[str] = []

    def count(name: str, x: Tensor) -> Tensor:
        calls.append(name)
        return x

    tl.forward(tokens(), count)
    assert calls.count("0.attn.act_in") == 1 and calls == tl.hook_names  # every hook once, in forward order
    # gradients reach the attention read through all three of q, k and v
    index = NodeIndex.of(tl)
    gates = torch.ones(index.size, requires_grad=True)
    tl.forward(tokens(), gate_hook(index, gates, torch.zeros(index.size)), at=torch.tensor([3, 4, 5])).sum().backward()
    hf_gates = torch.ones(index.size, requires_grad=True)
    at = torch.tensor([3, 4, 5])
    hf.forward(tokens(), gate_hook(index, hf_gates, torch.zeros(index.size)), at=at).sum().backward()
    assert torch.allclose(gates.grad, hf_gates.grad, atol=1e-3, rtol=1e-3)


def test_processed_hooked_transformer_runs_with_the_same_predictions(python_bpe, tmp_path):
    model = build("gpt2")
    model.config.n_ctx = model.config.n_positions
    directory = save_model_dir(model, python_bpe, tmp_path / "tiny-gpt2")
    tl = load_model(hooked("gpt2", model, directory, python_bpe, processed=True))  # fold_ln, centring
    x = tokens()
    # centring the unembedding shifts each position's logits by a constant: log-probabilities are equal
    assert (tl.logits(x).log_softmax(-1) - model(x).logits.log_softmax(-1)).abs().max() <= 1e-4
    assert type(tl.model.blocks[0].ln1).__name__ == "LayerNormPre"  # the read is the folded norm's output


def test_hooked_transformer_with_split_qkv_inputs_is_refused(python_bpe, tmp_path):
    model = build("llama")
    directory = save_model_dir(model, python_bpe, tmp_path / "tiny-gqa")
    tl = hooked("llama", model, directory, python_bpe)
    tl.set_use_split_qkv_input(True)
    with pytest.raises(ConfigError, match=r"use_split_qkv_input.*set_use_split_qkv_input\(False\)"):
        load_model(tl)


def bridge_pair(arch: str, python_bpe, tmp_path):
    from transformer_lens.model_bridge import TransformerBridge

    model = build(arch)
    reference = adapter_for(build(arch), python_bpe)  # the same seed: the same weights, a model of its own
    directory = save_model_dir(model, python_bpe, tmp_path / f"tiny-{arch}")
    bridge = TransformerBridge.boot_transformers(str(directory), hf_model=model, tokenizer=fast_tokenizer(python_bpe),
                                                 device="cpu")
    return bridge, reference


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_transformer_bridge_matches_the_transformers_adapter(arch, python_bpe, tmp_path):
    bridge, hf = bridge_pair(arch, python_bpe, tmp_path)
    adapter = load_model(bridge)
    assert isinstance(adapter, BridgeAdapter) and adapter.provenance["format"] == "transformer_lens_bridge"
    assert [(s.name, s.kind, s.width, s.source) for s in adapter.sites] == \
        [(s.name, s.kind, s.width, s.source) for s in hf.sites]
    x = tokens()
    with torch.no_grad():
        assert torch.equal(adapter.logits(x), bridge(x))
    assert (adapter.logits(x) - hf.logits(x)).abs().max() <= 1e-4
    calls: list[str] = []
    adapter.forward(x, lambda n, t: calls.append(n) or t)
    assert calls == hf.hook_names  # every hook once, in forward order
    _, cache = adapter.run_with_cache(x)
    _, ref = hf.run_with_cache(x)
    for name in hf.hook_names:
        assert torch.allclose(cache[name], ref[name], atol=1e-4), name
    index = NodeIndex.of(hf)
    for seed in range(2):
        gates, values = random_gates(index, seed)
        with torch.no_grad():
            a = adapter.forward(x, gate_hook(index, gates, values))
            b = hf.forward(x, gate_hook(index, gates, values))
        assert (a - b).abs().max() <= 1e-4 and (a - hf.logits(x)).abs().max() > 1e-2
        assert count_edges(adapter, index, gates) == count_edges(hf, index, gates)
    # the bridge's hook_resid_mid feeds ln2 only; a replaced resid_mid reaches the stream too
    c = torch.randn(32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        via_mid = adapter.forward(x, lambda n, t: t + c if n == "0.resid_mid" else t)
        via_delta = hf.forward(x, lambda n, t: t + c if n == "0.attn.resid_delta" else t)
    assert (via_mid - via_delta).abs().max() <= 1e-4
    bridge.enable_compatibility_mode()  # HookedTransformer's weight processing, applied to the components
    with torch.no_grad():
        processed = load_model(bridge)
        assert torch.equal(processed.logits(x), bridge(x))
        assert (processed.logits(x).log_softmax(-1) - hf.logits(x).log_softmax(-1)).abs().max() <= 1e-4


def test_a_parallel_bridge_is_refused(python_bpe, tmp_path):
    bridge, _ = bridge_pair("gpt_neox", python_bpe, tmp_path)
    with pytest.raises(ConfigError, match=r"TransformerBridge cfg\.parallel_attn_mlp is on"):
        load_model(bridge)


# --- nnsight ---------------------------------------------------------------------------------------------


def test_nnsight_model_is_the_transformers_adapter_on_its_module_and_agrees_with_nnsight_interventions(python_bpe):
    from nnsight import LanguageModel

    model = build("llama")
    reference = adapter_for(build("llama"), python_bpe)  # the same seed: the same weights
    lm = LanguageModel(model, tokenizer=fast_tokenizer(python_bpe))
    adapter = load_model(lm)
    assert isinstance(adapter, HFAdapter) and adapter.model is model and adapter.provenance["format"] == "nnsight"
    x = tokens()
    assert torch.equal(adapter.logits(x), reference.logits(x))
    index = NodeIndex.of(adapter)
    i = [s.name for s in index.sites].index("0.mlp.post_act")
    gates, values = torch.ones(index.size), torch.zeros(index.size)
    gates[index.slice(i)][1::2] = 0.0
    values[index.slice(i)] = 0.5
    pruned = torch.nonzero(gates[index.slice(i)] == 0).flatten()
    ours = adapter.forward(x, gate_hook(index, gates, values)).detach()
    with lm.trace(x):  # nnsight's own intervention: the down projection's input channels set to 0.5
        lm.model.layers[0].mlp.down_proj.input[..., pruned] = 0.5
        theirs = lm.output.logits.save()
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert (ours - reference.logits(x)).abs().max() > 1e-2


def test_a_transformers_model_object_with_its_tokenizer_is_the_transformers_adapter(python_bpe):
    model = build("qwen2")
    adapter = load_model(model, tokenizer=fast_tokenizer(python_bpe))
    assert isinstance(adapter, HFAdapter) and adapter.model is model and len(adapter.provenance["weights_sha256"]) == 64
    assert torch.equal(adapter.logits(tokens()), model(tokens()).logits)
    with pytest.raises(ConfigError, match=r"has no tokenizer; pass tokenizer="):
        load_model(model)


def test_load_model_names_what_it_accepts_for_an_unknown_object():
    with pytest.raises(ConfigError, match=r"HookedTransformer.*nnsight LanguageModel.*PreTrainedModel"):
        load_model(torch.nn.Linear(2, 2))


# --- through the command line: --model FILE.py:FUNCTION ------------------------------------------------------

FACTORY = '''
from pathlib import Path

from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

DIR = Path({directory!r})


def _hf():
    model = AutoModelForCausalLM.from_pretrained(DIR).eval()
    return model, PreTrainedTokenizerFast(tokenizer_file=str(DIR / "tokenizer.json"))


def make_hooked():
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as loading
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    model, tok = _hf()
    cfg = loading.convert_hf_model_config(str(DIR))
    cfg["tokenizer_name"] = None
    hooked = HookedTransformer(HookedTransformerConfig(**cfg, device="cpu"), tokenizer=tok)
    hooked.load_and_process_state_dict(convert_llama_weights(model, hooked.cfg), fold_ln=False,
                                       center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    return hooked


def make_nnsight():
    from nnsight import LanguageModel

    model, tok = _hf()
    return LanguageModel(model, tokenizer=tok)


def broken():
    raise RuntimeError("no GPU here")
'''


@pytest.fixture
def factory_file(python_bpe, tmp_path) -> Path:
    directory = save_model_dir(build("llama"), python_bpe, tmp_path / "tiny-gqa")
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(FACTORY.format(directory=str(directory))))
    return path


@pytest.mark.slow
def test_cli_run_on_models_built_by_a_python_function(factory_file, tmp_path):
    out = tmp_path / "results"
    env = {"CIRCUITBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    rows = {}
    for function in ("make_hooked", "make_nnsight"):
        spec = f"{factory_file}:{function}"
        cmd = [sys.executable, "-m", "circuitbench", "run", "--model", spec, "--tasks", "else_elif", "--steps",
               "20", "--min-accuracy", "0", "--no-control", "--device", "cpu", "--quiet", "--out", str(out),
               "--search-examples", "64"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        units = sorted(out.rglob(f"*{function}/*.seed0.parquet"))
        assert len(units) == 1
        written = units[0].stat().st_mtime_ns
        again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)  # resumes: nothing to do
        assert again.returncode == 0 and units[0].stat().st_mtime_ns == written  # found by its key, not redone
        rows[function] = next(r for r in pq.read_table(out / "summary.parquet").to_pylist() if r["model"] == spec)
    for row in rows.values():
        assert row["task"] == "else_elif" and row["status"] in ("solved", "train_only", "target_missed")
        assert row["test_examples"] > 0 and row["nodes"] >= 0
    # one set of weights behind two interfaces: the same full model on the task
    assert rows["make_hooked"]["full_accuracy"] == rows["make_nnsight"]["full_accuracy"]
    assert abs(rows["make_hooked"]["full_loss"] - rows["make_nnsight"]["full_loss"]) <= 1e-4


def test_factory_spec_errors_name_the_file_and_function(factory_file, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"has no function 'nope'.*make_hooked"):
        load_model(f"{factory_file}:nope", device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"missing\.py is not a file"):
        load_model(f"{tmp_path / 'missing.py'}:make_hooked", device="cpu")
    with pytest.raises(ConfigError, match=r"broken\(\) failed \(RuntimeError: no GPU here\)"):
        load_model(f"{factory_file}:broken", device="cpu")


def test_factory_models_hash_their_weights_as_built(factory_file):
    a = load_model(f"{factory_file}:make_hooked", device="cpu")
    b = load_model(f"{factory_file}:make_hooked", device="cpu", dtype="bfloat16")
    assert a.provenance["weights_sha256"] == b.provenance["weights_sha256"] and b.dtype == torch.bfloat16
    c = load_model(f"{factory_file}:make_nnsight", device="cpu")
    assert isinstance(a, TLAdapter) and isinstance(c, HFAdapter)
    assert (a.logits(tokens()) - c.logits(tokens())).abs().max() <= 1e-4
