"""The transformers adapter on tiny random GPT-2, GPT-NeoX and Llama (GQA) models built here from a seed."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from circuitbench.circuits.edges import count_edges
from circuitbench.circuits.masks import NodeIndex, gate_hook
from circuitbench.errors import CheckpointError, ConfigError
from circuitbench.models.adapter import READ_KINDS, WRITE_KINDS, ModelAdapter, Site
from circuitbench.models.hf import HFAdapter
from circuitbench.models.hf_load import is_transformers_dir, load_transformers
from circuitbench.models.hub import load_model
from circuitbench.models.native import file_sha256
from circuitbench.models.tokenizer import HFTokenizer

V = 2048  # the python_bpe fixture's vocabulary
SMALL = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=512, bos_token_id=0, eos_token_id=0, pad_token_id=0)
LLAMA_LIKE = dict(SMALL, num_key_value_heads=2)  # grouped-query attention: 2 query heads per kv head

BUILDERS: dict[str, Callable[[], PreTrainedModel]] = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=512, n_embd=32, n_layer=2, n_head=4,
                                               bos_token_id=0, eos_token_id=0)),
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(**SMALL, rotary_pct=0.5)),  # parallel residual
    "gpt_neox_sequential": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(**SMALL, use_parallel_residual=False)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**LLAMA_LIKE)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**LLAMA_LIKE)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**LLAMA_LIKE)),
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**LLAMA_LIKE, head_dim=8)),
    "gemma": lambda: GemmaForCausalLM(GemmaConfig(**LLAMA_LIKE, head_dim=8)),  # Llama's block, (1 + w) norms
    # soft-caps small enough to bind on these weights; a 4-token sliding window on alternate layers
    "gemma2": lambda: Gemma2ForCausalLM(Gemma2Config(**LLAMA_LIKE, head_dim=8, sliding_window=4,
                                                     attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                                                     query_pre_attn_scalar=8)),
    "gemma3_text": lambda: Gemma3ForCausalLM(Gemma3TextConfig(**LLAMA_LIKE, head_dim=8, sliding_window=4,
                                                              final_logit_softcapping=None,
                                                              layer_types=["sliding_attention", "full_attention"])),
    "phi3": lambda: Phi3ForCausalLM(Phi3Config(**LLAMA_LIKE)),  # fused [q | k | v] under GQA, fused [gate | up]
    "phi": lambda: PhiForCausalLM(PhiConfig(**SMALL)),  # one norm feeds attention and MLP, in parallel
    "opt": lambda: OPTForCausalLM(OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                            num_attention_heads=4, max_position_embeddings=512,
                                            word_embed_proj_dim=32, bos_token_id=0, eos_token_id=0, pad_token_id=1)),
    # for the Jacobian edge count: ReLU's zero derivative would hide connections that exist
    "opt_gelu": lambda: OPTForCausalLM(OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                                 num_attention_heads=4, activation_function="gelu")),
    "gptj": lambda: GPTJForCausalLM(GPTJConfig(vocab_size=V, n_positions=512, n_embd=32, n_layer=2, n_head=4,
                                               rotary_dim=4, n_inner=64, bos_token_id=0, eos_token_id=0)),
}
CORE = ["gpt2", "gpt_neox", "gpt_neox_sequential", "llama"]
NEW = ["gemma", "gemma2", "gemma3_text", "phi3", "phi", "opt", "gptj"]
"""Families whose blocks differ from the pre-norm residual block (post-norms, shared reads, flat MLPs)."""
POST_NORM = {"gemma2", "gemma3_text"}


def build(arch: str, seed: int = 0, density: float | None = None) -> PreTrainedModel:
    """A tiny model with weights large enough that every site visibly matters (HF's init is 0.02)."""
    torch.manual_seed(seed)
    model = BUILDERS[arch]()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):  # norm gains
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.3)
            if density is not None and p.ndim == 2 and p.shape[0] != V and p.shape[1] != V:
                p.mul_(torch.rand_like(p) < density)
    return model.eval()


def adapter_for(model: PreTrainedModel, tok: HFTokenizer) -> HFAdapter:
    return HFAdapter(model, tok, model.config.model_type)


def tokens(seed: int = 1, shape: tuple[int, int] = (3, 12)) -> Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def site(adapter: HFAdapter, name: str) -> Site:
    return next(s for s in adapter.sites if s.name == name)


def ones_hook(adapter: ModelAdapter) -> Callable[[str, Tensor], Tensor]:
    index = NodeIndex.of(adapter)
    return gate_hook(index, torch.ones(index.size), torch.randn(index.size))


# --- parity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_all_ones_masks_reproduce_transformers_logits(arch, python_bpe):
    model = build(arch)
    adapter = adapter_for(model, python_bpe)
    x = tokens()
    with torch.no_grad():
        ref = model(x).logits  # (B, T, V)
        out = adapter.forward(x, ones_hook(adapter))
        at = torch.tensor([11, 4, 0])
        at_out = adapter.forward(x, ones_hook(adapter), at=at)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 1e-5
    assert (at_out - ref[torch.arange(3), at]).abs().max() <= 1e-5
    assert (adapter.logits(x) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("arch", CORE + NEW)
def test_cache_matches_transformers_hidden_states_and_residual_sums(arch, python_bpe):
    model = build(arch)
    adapter = adapter_for(model, python_bpe)
    x = tokens()
    with torch.no_grad():
        hidden = model(x, output_hidden_states=True).hidden_states
    _, cache = adapter.run_with_cache(x)
    assert set(cache) == set(adapter.hook_names)
    n = model.config.num_hidden_layers
    # transformers: hidden_states[i] is layer i's input; the last one is after the final norm
    assert len(hidden) == n + 1
    for i in range(n):
        assert torch.equal(cache[f"{i}.resid_in"], hidden[i])
    assert torch.allclose(adapter._final_norm(cache["final_resid"]), hidden[-1], atol=1e-6)
    for i in range(n):
        after = cache[f"{i + 1}.resid_in"] if i + 1 < n else cache["final_resid"]
        attn, mlp = cache[f"{i}.attn.resid_delta"], cache[f"{i}.mlp.resid_delta"]
        if adapter.parallel[i]:
            assert f"{i}.resid_mid" not in cache
            assert torch.allclose(after, cache[f"{i}.resid_in"] + attn + mlp, atol=1e-5)
        else:
            assert torch.allclose(cache[f"{i}.resid_mid"], cache[f"{i}.resid_in"] + attn, atol=1e-5)
            assert torch.allclose(after, cache[f"{i}.resid_mid"] + mlp, atol=1e-5)
    # sites reached through a weight are that weight applied to their source, plus a constant (the bias)
    for s in adapter.sites:
        source = "attn.y" if s.kind == "attn_out" else s.source
        gqa_write = s.kind == "attn_out" and adapter.n_kv_heads < adapter.n_heads  # a folded matrix
        post_norm = arch in POST_NORM and s.kind in ("attn_out", "mlp_out")  # the norm follows the weight
        if s.kind == "mlp_neuron" or s.source is None or gqa_write or post_norm:
            continue
        src = cache[f"{s.layer}.{source}"] if s.kind == "attn_out" else cache[s.source]
        rest = cache[s.name] - src @ adapter.site_weight(s).T  # (B, T, width)
        assert torch.allclose(rest, rest[:1, :1].expand_as(rest), atol=1e-4), s.name


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_site_widths_follow_heads_and_gqa(arch, python_bpe):
    adapter = adapter_for(build(arch), python_bpe)
    widths = {s.name: s.width for s in adapter.sites}
    kv = 16 if arch == "llama" else 32
    assert (widths["1.attn.q"], widths["1.attn.k"], widths["1.attn.v"]) == (32, kv, kv)
    assert widths["0.mlp.post_act"] == (128 if arch == "gpt2" else 64)
    kinds = [s.kind for s in adapter.sites if s.layer == 0]
    assert sorted(kinds) == sorted(["attn_in", "q", "k", "v", "attn_out", "mlp_in", "mlp_neuron", "mlp_out"])
    for s in adapter.sites:
        if s.source is not None:
            assert adapter.site_weight(s).shape == (s.width, site(adapter, s.source).width)


# --- masking changes the computation, exactly as weight surgery does -----------------------------------


@pytest.mark.parametrize("arch", CORE + NEW)
def test_zero_gating_any_site_changes_logits(arch, python_bpe):
    adapter = adapter_for(build(arch), python_bpe)
    index = NodeIndex.of(adapter)
    x = tokens()
    full = adapter.logits(x)
    for i, s in enumerate(index.sites):
        if s.layer != 0:
            continue
        gates = torch.ones(index.size)
        gates[index.slice(i)] = 0.0
        with torch.no_grad():
            out = adapter.forward(x, gate_hook(index, gates, torch.zeros(index.size)))
        assert (out - full).abs().max() > 1e-3, s.name


def _linear_rows_to_constant(lin: nn.Module, rows: Tensor, values: Tensor) -> None:
    """Make output rows of an nn.Linear constant: weight rows zero, bias = values (adding a bias if absent)."""
    with torch.no_grad():
        lin.weight[rows] = 0.0
        if lin.bias is None:
            lin.bias = nn.Parameter(torch.zeros(lin.weight.shape[0]))
        lin.bias[rows] = values


def _linear_inputs_to_constant(lin: nn.Module, cols: Tensor, values: Tensor, conv1d: bool = False) -> None:
    """Replace input channels `cols` of a projection by constants: fold them into the bias."""
    with torch.no_grad():
        w = lin.weight.T if conv1d else lin.weight  # (out, in)
        if lin.bias is None:
            lin.bias = nn.Parameter(torch.zeros(w.shape[0]))
        lin.bias += w[:, cols] @ values
        w[:, cols] = 0.0


def surgery_gpt2_v(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    c_attn = m.transformer.h[0].attn.c_attn  # Conv1D: weight (d_model, 3*d_model), columns [q | k | v]
    with torch.no_grad():
        c_attn.weight[:, 64 + pruned] = 0.0
        c_attn.bias[64 + pruned] = mu


def surgery_gpt2_mlp_neuron(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_inputs_to_constant(m.transformer.h[0].mlp.c_proj, pruned, mu, conv1d=True)


def _neox_rows(pruned: Tensor, which: int) -> Tensor:
    head, dim = pruned // 8, pruned % 8  # d_head 8; per head the fused rows are [q_h | k_h | v_h]
    return head * 24 + which * 8 + dim


def surgery_neox_q(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_rows_to_constant(m.gpt_neox.layers[0].attention.query_key_value, _neox_rows(pruned, 0), mu)


def surgery_neox_k(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_rows_to_constant(m.gpt_neox.layers[1].attention.query_key_value, _neox_rows(pruned, 1), mu)


def surgery_neox_attn_in(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    ln = m.gpt_neox.layers[0].input_layernorm
    with torch.no_grad():
        ln.weight[pruned], ln.bias[pruned] = 0.0, mu


def surgery_llama_k(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_rows_to_constant(m.model.layers[0].self_attn.k_proj, pruned, mu)


def surgery_llama_mlp_neuron(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_inputs_to_constant(m.model.layers[1].mlp.down_proj, pruned, mu)


def surgery_gemma2_mlp_neuron(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_inputs_to_constant(m.model.layers[1].mlp.down_proj, pruned, mu)


def surgery_gemma3_q(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_rows_to_constant(m.model.layers[0].self_attn.q_proj, pruned, mu)  # before q_norm, as the site is


def surgery_phi3_k(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_rows_to_constant(m.model.layers[0].self_attn.qkv_proj, 32 + pruned, mu)  # rows [q 32 | k 16 | v 16]


def surgery_phi3_mlp_neuron(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_inputs_to_constant(m.model.layers[0].mlp.down_proj, pruned, mu)


def surgery_opt_v(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_rows_to_constant(m.model.decoder.layers[1].self_attn.v_proj, pruned, mu)


def surgery_opt_mlp_neuron(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_inputs_to_constant(m.model.decoder.layers[0].fc2, pruned, mu)


def _attention_reads_constant(attn: nn.Module, pruned: Tensor, mu: Tensor) -> None:
    """The attention's input channels `pruned` set to `mu`, for q, k and v alike; the MLP is not touched."""
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        _linear_inputs_to_constant(proj, pruned, mu)


def surgery_gptj_attn_in(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _attention_reads_constant(m.transformer.h[0].attn, pruned, mu)


def surgery_gptj_mlp_in(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _linear_inputs_to_constant(m.transformer.h[1].mlp.fc_in, pruned, mu)


def surgery_phi_attn_in(m: PreTrainedModel, pruned: Tensor, mu: Tensor) -> None:
    _attention_reads_constant(m.model.layers[1].self_attn, pruned, mu)


@pytest.mark.parametrize(
    ("arch", "site_name", "surgery"),
    [
        ("gpt2", "0.attn.v", surgery_gpt2_v),
        ("gpt2", "0.mlp.post_act", surgery_gpt2_mlp_neuron),
        ("gpt_neox", "0.attn.q", surgery_neox_q),
        ("gpt_neox", "1.attn.k", surgery_neox_k),
        ("gpt_neox", "0.attn.act_in", surgery_neox_attn_in),
        ("llama", "0.attn.k", surgery_llama_k),
        ("llama", "1.mlp.post_act", surgery_llama_mlp_neuron),
        ("gemma2", "1.mlp.post_act", surgery_gemma2_mlp_neuron),
        ("gemma3_text", "0.attn.q", surgery_gemma3_q),
        ("phi3", "0.attn.k", surgery_phi3_k),
        ("phi3", "0.mlp.post_act", surgery_phi3_mlp_neuron),
        ("opt", "1.attn.v", surgery_opt_v),
        ("opt", "0.mlp.post_act", surgery_opt_mlp_neuron),
        ("gptj", "0.attn.act_in", surgery_gptj_attn_in),
        ("gptj", "1.mlp.act_in", surgery_gptj_mlp_in),
        ("phi", "1.attn.act_in", surgery_phi_attn_in),
    ],
)
def test_ablating_a_site_equals_weight_surgery(arch, site_name, surgery, python_bpe):
    model = build(arch)
    adapter = adapter_for(model, python_bpe)
    index = NodeIndex.of(adapter)
    i = [s.name for s in index.sites].index(site_name)
    width = index.sites[i].width
    g = torch.Generator().manual_seed(3)
    keep = torch.rand(width, generator=g) < 0.5
    gates, ablation = torch.ones(index.size), torch.zeros(index.size)
    gates[index.slice(i)] = keep.float()
    ablation[index.slice(i)] = torch.randn(width, generator=g)
    pruned = torch.nonzero(~keep).flatten()
    assert 0 < len(pruned) < width
    reference = copy.deepcopy(model)
    surgery(reference, pruned, ablation[index.slice(i)][pruned])
    x = tokens()
    with torch.no_grad():
        out = adapter.forward(x, gate_hook(index, gates, ablation))
        expected = reference(x).logits
        full = model(x).logits
    assert (out - expected).abs().max() <= 1e-4
    assert (out - full).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox_sequential", "llama", "gemma2", "phi3", "opt"])
def test_replacing_resid_mid_reaches_the_residual_stream_too(arch, python_bpe):
    # resid_mid = resid_in + attention write: shifting either by c must give the same logits
    adapter = adapter_for(build(arch), python_bpe)
    c = torch.randn(32, generator=torch.Generator().manual_seed(5))

    def shift(target: str) -> Callable[[str, Tensor], Tensor]:
        return lambda name, x: x + c if name == target else x

    x = tokens()
    with torch.no_grad():
        via_mid = adapter.forward(x, shift("0.resid_mid"))
        via_delta = adapter.forward(x, shift("0.attn.resid_delta"))
        full = adapter.forward(x)
    assert (via_mid - via_delta).abs().max() <= 1e-4
    assert (via_mid - full).abs().max() > 1e-2


def test_hooks_are_removed_after_forward_even_on_error(python_bpe):
    model = build("llama")
    adapter = adapter_for(model, python_bpe)

    def boom(name: str, x: Tensor) -> Tensor:
        if name == "1.mlp.post_act":
            raise RuntimeError("boom")
        return x

    with pytest.raises(RuntimeError, match="boom"):
        adapter.forward(tokens(), boom)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_gradients_reach_the_gates_but_not_the_weights(python_bpe):
    adapter = adapter_for(build("gpt_neox"), python_bpe)
    index = NodeIndex.of(adapter)
    gates = torch.ones(index.size, requires_grad=True)
    loss = adapter.forward(tokens(), gate_hook(index, gates, torch.zeros(index.size)), at=torch.tensor([3, 4, 5]))
    loss.logsumexp(-1).sum().backward()
    assert gates.grad is not None and (gates.grad != 0).float().mean() > 0.5
    assert all(p.grad is None and not p.requires_grad for p in adapter.model.parameters())


# --- edges -----------------------------------------------------------------------------------------


def _jacobian(adapter: HFAdapter, s: Site) -> Tensor:
    """d site / d source at the first position of a one-token input, through the real forward pass.

    At position 0 attention only sees position 0 (weight exactly 1), so this is the connecting matrix
    (times the activation's derivative for MLP neurons): its nonzeros are the connections that exist.
    """
    leaf: dict[str, Tensor] = {}

    def hook(name: str, x: Tensor) -> Tensor:
        if name == s.source:
            x = x.detach().requires_grad_(True)
            leaf["x"] = x
        elif name == s.name:
            leaf["y"] = x
        return x

    with torch.enable_grad():
        adapter.forward(tokens(7, (1, 1)), hook)
        y, x = leaf["y"][0, 0], leaf["x"]
        rows = [torch.autograd.grad(y[r], x, retain_graph=True)[0][0, 0] for r in range(y.shape[0])]
    return torch.stack(rows)  # (site width, source width)


def independent_edge_count(adapter: HFAdapter, kept: dict[str, Tensor]) -> int:
    weighted = 0
    for s in adapter.sites:
        if s.source is not None:
            j = _jacobian(adapter, s)
            weighted += int((j[kept[s.name]][:, kept[s.source]] != 0).sum())
    residual = 0
    writes = [s for s in adapter.sites if s.kind in WRITE_KINDS]
    reads = [s for s in adapter.sites if s.kind in READ_KINDS]
    for w in writes:
        for r in reads:
            same_layer_later = (w.kind == "attn_out" and r.kind == "mlp_in" and not adapter.parallel[w.layer])
            if r.layer > w.layer or (r.layer == w.layer and same_layer_later):
                residual += int((kept[w.name] & kept[r.name]).sum())
    return weighted + residual


# Gemma's post-norm writes depend on every channel through the norm's shared scale, so their Jacobian is
# dense; their edges are the projection's nonzeros (tested below), as a pre-norm read's are.
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "gpt_neox_sequential", "llama", "phi3", "phi", "opt_gelu",
                                  "gptj"])
def test_count_edges_on_sparse_model_equals_independent_count(arch, python_bpe):
    adapter = adapter_for(build(arch, seed=2, density=0.4), python_bpe)
    index = NodeIndex.of(adapter)
    gates = (torch.rand(index.size, generator=torch.Generator().manual_seed(4)) < 0.6).float()
    kept = {name: g > 0.5 for name, g in index.split(gates).items()}
    edges = count_edges(adapter, index, gates)
    assert edges["edges"] == independent_edge_count(adapter, kept)
    # a dense model with every node kept has strictly more weighted edges
    dense = adapter_for(build(arch, seed=2), python_bpe)
    assert count_edges(dense, NodeIndex.of(dense), torch.ones(index.size))["edges_weighted"] > edges["edges_weighted"]


@pytest.mark.parametrize("arch", sorted(POST_NORM))
def test_post_norm_writes_take_their_edges_from_the_projection_and_their_values_after_the_norm(arch, python_bpe):
    model = build(arch, seed=2, density=0.4)
    adapter = adapter_for(model, python_bpe)
    layer = model.model.layers[1]
    attn_w, mlp_w = site(adapter, "1.attn.resid_delta"), site(adapter, "1.mlp.resid_delta")
    assert (attn_w.source, attn_w.weight) == ("1.attn.v", "model.layers.1.self_attn.o_proj.weight")
    assert (mlp_w.source, mlp_w.weight) == ("1.mlp.post_act", "model.layers.1.mlp.down_proj.weight")
    assert torch.equal(adapter.site_weight(mlp_w), layer.mlp.down_proj.weight)
    folded = adapter.site_weight(attn_w)  # GQA: query heads 2h and 2h+1 read kv head h
    o = layer.self_attn.o_proj.weight.view(32, 2, 2, 8)
    assert torch.equal(folded != 0, (o != 0).any(2).reshape(32, 16))
    # the write that joins the stream is the post-norm's output: the residual sum holds with it
    _, cache = adapter.run_with_cache(tokens())
    normed = layer.post_attention_layernorm(cache["1.attn.y"] @ layer.self_attn.o_proj.weight.T)
    assert torch.allclose(cache["1.attn.resid_delta"], normed, atol=1e-5)


def test_gqa_attention_write_edges_fold_the_query_heads_sharing_a_kv_head(python_bpe):
    model = build("llama")
    o = model.model.layers[0].self_attn.o_proj.weight  # (d_model, n_heads*d_head); heads 0,1 share kv head 0
    with torch.no_grad():
        o.zero_()
        o[5, 0 * 8 + 3] = 1.0  # head 0, dim 3 -> kv channel 3
        o[5, 1 * 8 + 3] = 2.0  # head 1, dim 3 -> kv channel 3 again: one edge
        o[6, 3 * 8 + 1] = 1.0  # head 3 (kv head 1), dim 1 -> kv channel 8 + 1
    adapter = adapter_for(model, python_bpe)
    w = adapter.site_weight(site(adapter, "0.attn.resid_delta"))
    assert w.shape == (32, 16)
    assert sorted(map(tuple, torch.nonzero(w).tolist())) == [(5, 3), (6, 9)]


# --- loading -----------------------------------------------------------------------------------------


def save_model_dir(model: PreTrainedModel, tok: HFTokenizer, directory: Path) -> Path:
    model.save_pretrained(directory)
    tok._tok.save(str(directory / "tokenizer.json"))
    return directory


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_save_pretrained_round_trips_through_load_transformers(arch, python_bpe, tmp_path):
    model = build(arch)
    directory = save_model_dir(model, python_bpe, tmp_path / arch)
    assert is_transformers_dir(directory)
    adapter = load_transformers(directory, device="cpu")
    x = tokens()
    with torch.no_grad():
        assert (adapter.logits(x) - model(x).logits).abs().max() <= 1e-5
    assert adapter.name == arch and adapter.device.type == "cpu" and adapter.dtype == torch.float32
    prov = adapter.provenance
    assert prov["format"] == "transformers" and prov["model_type"] == model.config.model_type
    assert prov["weights_sha256"] == file_sha256(directory / "model.safetensors")
    assert prov["model_path"] == str(directory.resolve())
    text = "def f(x):\n    return x + 1\n"
    assert adapter.tokenizer.encode(text) == python_bpe.encode(text)
    assert adapter.tokenizer.decode(adapter.tokenizer.encode(text)) == text
    assert not any(p.requires_grad for p in adapter.model.parameters()) and not adapter.model.training
    assert isinstance(adapter, ModelAdapter)


def test_load_transformers_records_revision_info(python_bpe, tmp_path):
    directory = save_model_dir(build("gpt2"), python_bpe, tmp_path / "m")
    adapter = load_transformers(directory, device="cpu", name="org/m", revision_info={"revision": "abc123"})
    assert adapter.name == "org/m" and adapter.provenance["revision"] == "abc123"


def test_bfloat16_loads_and_runs(python_bpe, tmp_path):
    model = build("llama")
    directory = save_model_dir(model, python_bpe, tmp_path / "m")
    adapter = load_transformers(directory, device="cpu", dtype="bfloat16")
    assert adapter.dtype == torch.bfloat16 and next(adapter.model.parameters()).dtype == torch.bfloat16
    index = NodeIndex.of(adapter)
    keep_all = gate_hook(index, torch.ones(index.size), torch.zeros(index.size))  # exact in any dtype
    x = tokens()
    with torch.no_grad():
        out = adapter.forward(x, keep_all)
        at = adapter.forward(x, keep_all, at=torch.tensor([11, 11, 11]))
        plain = adapter.model(x).logits
        fp32 = model(x).logits
    assert out.dtype == at.dtype == torch.bfloat16
    assert torch.equal(out, plain)
    assert (at.float() - plain[:, -1].float()).abs().max() <= 2e-2 * plain.float().abs().max()
    assert torch.corrcoef(torch.stack([out.float().flatten(), fp32.flatten()]))[0, 1] > 0.99


@pytest.mark.gpu
def test_cuda_bfloat16_matches_cpu_float32(python_bpe, tmp_path):
    model = build("gpt_neox")
    directory = save_model_dir(model, python_bpe, tmp_path / "m")
    adapter = load_transformers(directory, device="cuda", dtype="bfloat16")
    assert adapter.device.type == "cuda"
    x = tokens()
    with torch.no_grad():
        out = adapter.forward(x, ones_hook(adapter)).float().cpu()
        ref = model(x).logits
    assert torch.corrcoef(torch.stack([out.flatten(), ref.flatten()]))[0, 1] > 0.99


def test_missing_weights_are_an_error_not_a_random_init(python_bpe, tmp_path):
    directory = save_model_dir(build("llama"), python_bpe, tmp_path / "m")
    weights = load_file(directory / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        load_transformers(directory, device="cpu")


def test_unsupported_model_type_names_the_supported_ones(python_bpe, tmp_path):
    from transformers import BloomConfig, BloomForCausalLM

    directory = tmp_path / "bloom"
    BloomForCausalLM(BloomConfig(vocab_size=V, hidden_size=32, n_layer=1, n_head=4)).save_pretrained(directory)
    assert is_transformers_dir(directory)  # transformers knows it; the hook adapter does not
    with pytest.raises(ConfigError, match=r"model_type 'bloom'.*gpt2, gpt_neox, gptj, llama"):
        load_transformers(directory, device="cpu")


def test_post_norm_opt_is_refused_not_approximated(python_bpe, tmp_path):
    cfg = OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=4,
                    word_embed_proj_dim=32, do_layer_norm_before=False)
    model = OPTForCausalLM(cfg)
    with pytest.raises(ConfigError, match=r"do_layer_norm_before is false.*does not approximate"):
        HFAdapter(model, python_bpe, "opt-350m-like")
    directory = save_model_dir(model, python_bpe, tmp_path / "opt")
    with pytest.raises(ConfigError, match=r"opt/config\.json: do_layer_norm_before is false"):
        load_transformers(directory, device="cpu")


def test_multimodal_gemma3_points_to_its_text_model(tmp_path):
    directory = tmp_path / "gemma3"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    (directory / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"multimodal Gemma-3.*gemma3_text"):
        load_transformers(directory, device="cpu")


def test_is_transformers_dir_needs_known_model_type_and_weights(python_bpe, tmp_path):
    directory = save_model_dir(build("gpt2"), python_bpe, tmp_path / "m")
    assert is_transformers_dir(directory)
    raw = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(dict(raw, model_type="circuitgpt")))
    assert not is_transformers_dir(directory)
    (directory / "config.json").write_text(json.dumps(raw))
    (directory / "model.safetensors").unlink()
    assert not is_transformers_dir(directory)
    assert not is_transformers_dir(tmp_path / "nowhere")


# --- through load_model and the CLI ----------------------------------------------------------------


def test_load_model_dispatches_to_the_transformers_adapter(python_bpe, tmp_path):
    directory = save_model_dir(build("gpt_neox"), python_bpe, tmp_path / "pythia-tiny")
    adapter = load_model(str(directory), device="cpu")
    assert isinstance(adapter, HFAdapter) and adapter.provenance["format"] == "transformers"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gemma2", "opt"])
def test_cli_run_finishes_on_a_transformers_model_and_prunes_over_its_sites(arch, python_bpe, tmp_path, monkeypatch):
    from circuitbench.cli import main

    monkeypatch.setenv("CIRCUITBENCH_CACHE", str(tmp_path / "cache"))
    directory = save_model_dir(build(arch), python_bpe, tmp_path / f"{arch}-tiny")
    out = tmp_path / "results"
    args = ["run", "--model", str(directory), "--tasks", "else_elif,with_as", "--steps", "20", "--quiet",
            "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    summary = pq.read_table(out / "summary.parquet").to_pylist()
    assert sorted(r["task"] for r in summary) == ["else_elif", "with_as"]
    # a random model solves no task: reported, not pruned
    assert all(r["status"] == "unsolved" for r in summary)

    pruned = tmp_path / "pruned"
    assert main([*args, "--out", str(pruned), "--min-accuracy", "0", "--no-control"]) == 0
    rows = pq.read_table(pruned / "summary.parquet").to_pylist()
    assert {r["status"] for r in rows} <= {"solved", "train_only", "target_missed"}
    n_nodes = sum(s.width for s in adapter_for(build(arch), python_bpe).sites)
    assert all(0 <= r["nodes"] <= n_nodes and r["edges"] >= 0 for r in rows)
    units = [p for p in pruned.rglob("*.seed0.parquet")]
    assert len(units) == 2
    metrics = set(pq.read_table(units[0]).column("metric").to_pylist())
    assert {"nodes", "edges", "sufficiency_loss", "faithfulness"} <= metrics
