import json

import pytest
import torch

import circuitbench
from circuitbench.models.config import GPTConfig
from circuitbench.models.sparse_gpt import SparseGPT, abs_topk
from tests.models.conftest import FIXTURE_EXPECTED, FIXTURE_MODEL, random_model
from tests.models.reference_gpt import reference_forward


def _cache_and_logits(adapter, idx):
    logits, cache = adapter.run_with_cache(idx)
    return logits, cache


def test_fixture_logits_and_every_hook_match_the_official_implementation():
    expected = torch.load(FIXTURE_EXPECTED, weights_only=True)
    adapter = circuitbench.load_model(str(FIXTURE_MODEL), device="cpu")
    logits, cache = _cache_and_logits(adapter, expected["idx"])
    assert (logits - expected["logits"]).abs().max() <= 1e-4
    acts = {k[4:]: v for k, v in expected.items() if k.startswith("act/")}
    assert set(acts) == set(cache)
    for name, want in acts.items():
        assert (cache[name] - want).abs().max() <= 1e-4, name


def test_reference_oracle_itself_matches_the_official_fixture():
    expected = torch.load(FIXTURE_EXPECTED, weights_only=True)
    cfg = json.loads((FIXTURE_MODEL / "beeg_config.json").read_text())
    sd = torch.load(FIXTURE_MODEL / "final_model.pt", weights_only=True)
    logits, acts = reference_forward(cfg, sd, expected["idx"])
    assert (logits - expected["logits"]).abs().max() <= 1e-4
    for name, got in acts.items():
        assert (got - expected[f"act/{name}"]).abs().max() <= 1e-4, name


OTHER_CONFIGS = {
    # the "another checkpoint": LayerNorm+bias, no AbsTopK, no sink, n_mlp, relu, narrow heads
    "layernorm_relu_nmlp_narrow_heads": dict(
        rms_norm=False, ln_bias=True, afrac=None, sink=False, n_mlp=48, activation_type="relu",
        d_head=6, d_mlp=None,
    ),
    "layernorm_no_bias_tied": dict(rms_norm=False, ln_bias=False, tied_unembed=True),
    "rms_sink_bigram_all_locs": dict(
        rms_norm=True, sink=True, enable_bigram_table=True, tied_unembed=False, afrac=0.25,
        afrac_loctypes="attn_in,attn_out,mlp_in,mlp_out,attn_q,attn_k,attn_v,mlp_neuron,resid_post_attn,resid_post_mlp",
    ),
    "wide_heads_no_linear_bias": dict(d_head=16, bias=False, sink=True),
    "residual_relu": dict(residual_activation_type="relu", afrac=0.5),
    "concatenated_positions": dict(d_pos_emb=8, sink=True, rms_norm=True),
    "learnable_bigram": dict(enable_bigram_table=True, learnable_bigram_table=True, tied_unembed=False),
}


@pytest.mark.parametrize("over", OTHER_CONFIGS.values(), ids=OTHER_CONFIGS.keys())
def test_other_configurations_load_and_match_the_reference(make_model_dir, over):
    raw = dict(block_size=32, vocab_size=97, n_layer=2, n_head=4, d_model=32, d_mlp=64)
    raw.update(over)
    raw = {k: v for k, v in raw.items() if v is not None}
    directory, raw = make_model_dir(raw=raw)
    if over.get("d_pos_emb"):  # concatenated positions are real (not zeroed) positional inputs
        sd = torch.load(directory / "final_model.pt", weights_only=True)
        sd["transformer.wpe.weight"].normal_(0, 0.3)
        torch.save(sd, directory / "final_model.pt")
    adapter = circuitbench.load_model(str(directory), device="cpu")
    idx = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(1))
    logits, cache = adapter.run_with_cache(idx)
    sd = torch.load(directory / "final_model.pt", weights_only=True)
    want_logits, want_acts = reference_forward(raw, sd, idx)
    assert (logits - want_logits).abs().max() <= 1e-4
    assert set(want_acts) == set(cache)
    for name, want in want_acts.items():
        assert (cache[name] - want).abs().max() <= 1e-4, name


def test_narrow_heads_give_q_width_n_head_times_d_head(make_model_dir):
    directory, _ = make_model_dir(d_head=6)
    adapter = circuitbench.load_model(str(directory), device="cpu")
    widths = {s.name: s.width for s in adapter.sites}
    assert widths["0.attn.q"] == 4 * 6 and widths["0.attn.act_in"] == 32
    _, cache = adapter.run_with_cache(torch.zeros(1, 5, dtype=torch.long))
    assert cache["1.attn.y"].shape == (1, 5, 24)


def test_abs_topk_keeps_exactly_int_afrac_d_entries_of_largest_magnitude():
    x = torch.randn(4, 7, 50, generator=torch.Generator().manual_seed(0))
    out = abs_topk(x, int(0.25 * 50))
    assert ((out != 0).sum(-1) == 12).all()
    kept_min = torch.where(out != 0, out.abs(), torch.inf).amin(-1)
    dropped_max = torch.where(out == 0, x.abs(), 0).amax(-1)
    assert (kept_min >= dropped_max).all()
    assert torch.equal(out[out != 0], x[out != 0])


def test_abstopk_sites_of_the_fixture_have_exactly_a_quarter_nonzero():
    adapter = circuitbench.load_model(str(FIXTURE_MODEL), device="cpu")
    _, cache = adapter.run_with_cache(torch.randint(0, 512, (2, 16)))
    for site in adapter.sites:
        assert ((cache[site.name] != 0).sum(-1) <= int(0.25 * site.width)).all(), site.name
        assert ((cache[site.name] != 0).sum(-1) == int(0.25 * site.width)).float().mean() > 0.9


def test_sink_equals_a_dummy_key_with_zero_value_and_the_sink_logit_as_score():
    cfg = GPTConfig(block_size=16, vocab_size=11, n_layer=1, n_head=2, d_model=8, sink=True)
    model = random_model(cfg, seed=3)
    attn = model.transformer.h[0].attn
    q, k, v = (torch.randn(2, 2, 5, 4, generator=torch.Generator().manual_seed(s)) for s in range(3))
    got = attn._sink_attention(q, k, v)
    sink = attn.attn_imp.sink_logit.detach()
    scores = q @ k.transpose(-1, -2) / 2.0  # (B, H, T, T), d_head 4
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    denom = scores.exp().sum(-1, keepdim=True) + sink.view(1, 2, 1, 1).exp()
    want = (scores.exp() / denom) @ v
    assert torch.allclose(got, want, atol=1e-6)
    plain = torch.softmax(scores, -1) @ v
    assert not torch.allclose(got, plain, atol=1e-3)  # the sink really changes the output


def test_sink_logit_of_minus_infinity_recovers_plain_attention():
    cfg = GPTConfig(block_size=16, vocab_size=11, n_layer=1, n_head=2, d_model=8, sink=True)
    model = random_model(cfg, seed=4)
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        attn.attn_imp.sink_logit.fill_(-1e9)
    q, k, v = (torch.randn(1, 2, 6, 4, generator=torch.Generator().manual_seed(s)) for s in range(3))
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(attn._sink_attention(q, k, v), plain, atol=1e-6)


def test_hook_replacement_changes_downstream_activations():
    model = random_model(GPTConfig(**dict(block_size=16, vocab_size=31, n_layer=2, n_head=2, d_model=16)))
    idx = torch.randint(0, 31, (2, 6))

    def zero_mlp0(name, x):
        return torch.zeros_like(x) if name == "0.mlp.post_act" else x

    with torch.no_grad():
        base, patched = model(idx), model(idx, zero_mlp0)
    assert not torch.allclose(base, patched)


def test_bfloat16_forward_is_close_to_float32():
    model = random_model(GPTConfig(block_size=16, vocab_size=31, n_layer=2, n_head=2, d_model=16))
    idx = torch.randint(0, 31, (2, 6))
    with torch.no_grad():
        ref = model(idx)
        low = model.to(torch.bfloat16)(idx)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_state_dict_keys_are_the_released_checkpoint_keys():
    sd = torch.load(FIXTURE_MODEL / "final_model.pt", weights_only=True)
    cfg = GPTConfig.model_validate(json.loads((FIXTURE_MODEL / "beeg_config.json").read_text()))
    assert set(SparseGPT(cfg).state_dict()) == set(sd)


def _abs_topk_scatter(x, k):  # the previous implementation, kept as the oracle
    idx = x.abs().topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mask_abs_topk_equals_the_scatter_form_values_and_gradient(dtype):
    torch.manual_seed(0)
    x = torch.randn(64, 7, 96).to(dtype)  # bfloat16 has many ties at the k-th magnitude
    x[0, 0, :10] = 0.5
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = abs_topk(a, 24), _abs_topk_scatter(b, 24)
    assert torch.equal(ya, yb)
    assert ((ya != 0).sum(-1) <= 24).all()
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_sink_attention_equals_the_explicit_mask_form(dtype):
    model = random_model(GPTConfig(block_size=32, vocab_size=31, n_layer=1, n_head=3, d_model=24, sink=True))
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        attn.attn_imp.sink_logit.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 17, 8, dtype=dtype, requires_grad=True) for _ in range(3))
    fused, masked = attn._sink_attention(q, k, v), attn._sink_attention_masked(q, k, v)
    assert fused.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (fused.float() - masked.float()).abs().max() < tol
    g = torch.randn_like(fused)
    grads_f = torch.autograd.grad(fused, [q, k, v, attn.attn_imp.sink_logit], g)
    grads_m = torch.autograd.grad(masked, [q, k, v, attn.attn_imp.sink_logit], g)
    for gf, gm in zip(grads_f, grads_m, strict=True):
        assert (gf.float() - gm.float()).abs().max() < tol * max(1.0, gm.float().abs().max().item())


@pytest.mark.parametrize("over", OTHER_CONFIGS.values(), ids=OTHER_CONFIGS.keys())
def test_answer_only_gives_the_same_logits_and_gate_gradients(make_model_dir, over):
    """The last block at the answer positions only: same logits and gate gradients as the full forward."""
    from circuitbench.circuits.masks import NodeIndex, gate_hook

    raw = dict(block_size=32, vocab_size=97, n_layer=2, n_head=4, d_model=32, d_mlp=64)
    raw.update(over)
    raw = {k: v for k, v in raw.items() if v is not None}
    directory, raw = make_model_dir(raw=raw)
    if over.get("d_pos_emb"):
        sd = torch.load(directory / "final_model.pt", weights_only=True)
        sd["transformer.wpe.weight"].normal_(0, 0.3)
        torch.save(sd, directory / "final_model.pt")
    adapter = circuitbench.load_model(str(directory), device="cpu")
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 97, (6, 20), generator=gen)
    at = torch.tensor([19, 0, 7, 12, 3, 19])  # first, last and middle positions: padding after them
    index = NodeIndex.of(adapter)
    grads = []
    for answer_only in (False, True):
        gates = torch.rand(index.size, generator=torch.Generator().manual_seed(3)).requires_grad_()
        mu = torch.randn(index.value_size, generator=torch.Generator().manual_seed(4))
        logits = adapter.forward(idx, gate_hook(index, gates, mu), at=at, answer_only=answer_only)
        assert logits.shape == (6, 97)
        logits.pow(2).sum().backward()
        grads.append((logits.detach(), gates.grad))
    (full, g_full), (fast, g_fast) = grads
    assert (full - fast).abs().max() <= 1e-4 * max(1.0, float(full.abs().max()))
    assert (g_full - g_fast).abs().max() <= 1e-4 * max(1.0, float(g_full.abs().max()))
    assert g_full.abs().sum() > 0


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_logits_add_bias_and_bigram_in_place_bit_for_bit_as_out_of_place(precision):
    from circuitbench.hardware import autocast

    adapter = circuitbench.load_model("tiny-sparse", device="cpu")
    model = adapter.model
    assert model.bigram_table is not None
    idx = torch.randint(0, model.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0))
    seen = {}

    def keep(name, x):
        if name == "final_resid":
            seen["x"] = x
        return x

    with torch.no_grad(), autocast(precision):
        logits = model(idx, keep)
        head = model.lm_head(model.transformer.ln_f(seen["x"]))
        want = head + model.final_logits_bias + torch.nn.functional.embedding(idx, model.bigram_table).to(
            torch.result_type(head, model.final_logits_bias))
    assert logits.dtype == want.dtype == torch.float32 and torch.equal(logits, want)
