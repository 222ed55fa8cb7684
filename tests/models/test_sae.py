"""SAE splicing: SAELens-format loading, exact splices, ablations, loss recovered, and the run loop over SAE sites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from circuitbench.circuits.ablation import corpus_mean, mean_activations
from circuitbench.circuits.edges import count_edges
from circuitbench.circuits.masks import NodeIndex, gate_hook
from circuitbench.circuits.metrics import count_nodes, loss_recovered
from circuitbench.errors import CheckpointError, CircuitbenchError, ConfigError
from circuitbench.models.config import GPTConfig
from circuitbench.models.native import SparseGPTAdapter, file_sha256
from circuitbench.models.sae import SAEAdapter, load_sae, load_saes
from circuitbench.models.tokenizer import MissingTokenizer
from tests.models.conftest import BASE, random_model

D = 32  # d_model of BASE


@pytest.fixture(scope="module")
def base() -> SparseGPTAdapter:
    model = random_model(GPTConfig.model_validate(BASE), seed=1, density=0.5)
    return SparseGPTAdapter(model, MissingTokenizer(None, BASE["vocab_size"]), "base",  # type: ignore[arg-type]
                            {"weights_sha256": "base-test"})


def write_sae(root: Path, name: str, hook: str, *, arch: str = "standard", d_in: int = D, d_sae: int = 48,
              seed: int = 0, layout: str = "v6", k: int = 6, weights: dict | None = None, **cfg_over) -> Path:
    """A random SAE in SAELens format: cfg.json (SAELens >= 6 or older layout) + sae_weights.safetensors."""
    gen = torch.Generator().manual_seed(seed)
    w = weights or {
        "W_enc": torch.randn(d_in, d_sae, generator=gen) / d_in**0.5,
        "b_enc": 0.1 * torch.randn(d_sae, generator=gen),
        "W_dec": torch.randn(d_sae, d_in, generator=gen) / d_sae**0.5,
        "b_dec": 0.1 * torch.randn(d_in, generator=gen),
    }
    if arch == "jumprelu" and weights is None:
        w["threshold"] = 0.1 * torch.rand(d_sae, generator=gen)
    if layout == "v6":
        cfg: dict = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
                     "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
                     "metadata": {"hook_name": hook, "hook_head_index": None, "sae_lens_version": "6.12.1"}}
        if arch == "topk":
            cfg["k"] = k
    else:  # before SAELens 6: hook at the top, TopK as an activation function
        cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "torch.float32", "hook_name": hook, "hook_layer": 0,
               "hook_head_index": None, "apply_b_dec_to_input": True, "normalize_activations": False,
               "finetuning_scaling_factor": False, "sae_lens_training_version": "3.0.0", "prepend_bos": False}
        if arch == "topk":
            cfg.update(architecture="standard", activation_fn_str="topk", activation_fn_kwargs={"k": k})
        else:
            cfg.update(architecture=arch, activation_fn_str="relu")
    cfg.update(cfg_over)
    out = root / name
    out.mkdir(parents=True)
    (out / "cfg.json").write_text(json.dumps(cfg))
    save_file({key: v.contiguous() for key, v in w.items()}, str(out / "sae_weights.safetensors"))
    return out


def perfect_weights(d_in: int = D) -> dict[str, torch.Tensor]:
    """relu(x) - relu(-x) = x: a ReLU SAE with latents [x+, x-] that reconstructs every input exactly."""
    eye = torch.eye(d_in)
    return {"W_enc": torch.cat([eye, -eye], 1), "b_enc": torch.zeros(2 * d_in),
            "W_dec": torch.cat([eye, -eye], 0), "b_dec": torch.zeros(d_in)}


def tokens(n: int = 4, t: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, BASE["vocab_size"], (n, t), generator=torch.Generator().manual_seed(seed))


# --- loading and encoding --------------------------------------------------------------------------


def _reference_encode(directory: Path, x: np.ndarray) -> np.ndarray:
    """Each architecture's definition (SAELens), computed with numpy from the files."""
    from safetensors.numpy import load_file

    cfg = json.loads((directory / "cfg.json").read_text())
    w = load_file(str(directory / "sae_weights.safetensors"))
    sae_in = x - w["b_dec"] if cfg.get("apply_b_dec_to_input", True) else x
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    if cfg.get("activation_fn_str") == "topk" or cfg["architecture"] == "topk":
        k = cfg.get("k") or cfg["activation_fn_kwargs"]["k"]
        kth = np.sort(pre, axis=-1)[..., -k][..., None]  # the k-th largest pre-activation per row
        return np.where((pre >= kth) & (pre > 0), pre, 0.0)
    if cfg["architecture"] == "jumprelu":
        return np.where((pre > w["threshold"]) & (pre > 0), pre, 0.0)
    return np.maximum(pre, 0.0)


@pytest.mark.parametrize("layout", ["v6", "pre6"])
@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_every_architecture_encodes_as_its_definition(tmp_path, arch, layout):
    directory = write_sae(tmp_path, "sae", "blocks.0.hook_resid_pre", arch=arch, layout=layout, seed=3)
    sae = load_sae(directory)
    x = torch.randn(5, 7, D, generator=torch.Generator().manual_seed(4))
    z = sae.encode(x)
    np.testing.assert_allclose(z.numpy(), _reference_encode(directory, x.numpy()), atol=1e-6)
    assert (z > 0).any() and (z == 0).any()  # some latents fire, some do not: the nonlinearity is exercised
    if arch == "topk":
        assert int((z != 0).sum(-1).max()) <= 6
    w = sae.W_dec.numpy()
    np.testing.assert_allclose(sae.decode(z).numpy(), z.numpy() @ w + sae.b_dec.numpy(), atol=1e-5)
    assert sae.weights_sha256 == file_sha256(directory / "sae_weights.safetensors")


def test_apply_b_dec_to_input_false_encodes_the_raw_activation(tmp_path):
    directory = write_sae(tmp_path, "sae", "blocks.0.hook_resid_pre", apply_b_dec_to_input=False)
    x = torch.randn(3, D, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(load_sae(directory).encode(x).numpy(), _reference_encode(directory, x.numpy()),
                               atol=1e-6)


# --- splicing --------------------------------------------------------------------------------------

SPLICES = [  # (hook as in cfg.json, architecture, d_in, circuitbench point)
    ("blocks.0.hook_resid_pre", "standard", D, "0.resid_in"),
    ("blocks.0.attn.hook_z", "topk", D, "0.attn.y"),
    ("0.mlp.post_act", "jumprelu", 64, "0.mlp.post_act"),
    ("blocks.1.hook_mlp_out", "standard", D, "1.mlp.resid_delta"),
    ("blocks.1.hook_resid_post", "jumprelu", D, "final_resid"),
]


@pytest.fixture
def spliced(tmp_path, base) -> SAEAdapter:
    dirs = [write_sae(tmp_path, f"s{i}", hook, arch=arch, d_in=d_in, seed=i,
                      **({"reshape_activations": "hook_z"} if hook.endswith("hook_z") else {}))
            for i, (hook, arch, d_in, _) in enumerate(SPLICES)]
    return load_saes(base, [str(d) for d in reversed(dirs)])  # any order: sites come out in forward order


def test_sites_are_latents_and_one_error_node_per_splice_in_forward_order(spliced):
    points = [p for *_, p in SPLICES]
    assert list(spliced.splices) == points
    assert [s.name for s in spliced.sites] == [n for p in points for n in (f"{p}.sae", f"{p}.sae_error")]
    assert [s.kind for s in spliced.sites] == ["sae_latent", "sae_error"] * len(points)
    assert all(s.width == (1 if s.kind == "sae_error" else 48) for s in spliced.sites)
    assert [s.value_width for s in spliced.sites if s.kind == "sae_error"] == [d for _, _, d, _ in SPLICES]
    assert [s.layer for s in spliced.sites][::2] == [0, 0, 0, 1, 2]


def test_keeping_everything_reproduces_the_base_logits(spliced, base):
    x = tokens()
    assert (spliced.logits(x) - base.logits(x)).abs().max() <= 1e-5
    index = NodeIndex.of(spliced)
    junk = torch.randn(index.value_size)  # ablation values are ignored where gates are 1
    with torch.no_grad():
        gated = spliced.forward(x, gate_hook(index, torch.ones(index.size), junk))
    assert (gated - base.logits(x)).abs().max() <= 1e-5
    _, cache = spliced.run_with_cache(x, names=["1.mlp.resid_delta", "final_resid"])
    _, plain = base.run_with_cache(x, names=["1.mlp.resid_delta", "final_resid"])
    assert all((cache[n] - plain[n]).abs().max() <= 1e-5 for n in plain)


def test_splices_into_a_transformers_model_through_the_same_protocol(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from circuitbench.models.hf import HFAdapter

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=64, n_embd=D, n_layer=2, n_head=4)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    hf = HFAdapter(model, MissingTokenizer(None, 97), "gpt2")  # type: ignore[arg-type]
    gpt2 = {"model_name": "gpt2-small"}  # TransformerLens's alias of gpt2
    dirs = [write_sae(tmp_path, "post", "blocks.0.hook_resid_post", arch="topk", **gpt2),
            write_sae(tmp_path, "z", "blocks.1.attn.hook_z", reshape_activations="hook_z", seed=1, **gpt2),
            write_sae(tmp_path, "neurons", "blocks.1.mlp.hook_post", arch="jumprelu", d_in=4 * D, seed=2, **gpt2)]
    spliced = load_saes(hf, [str(d) for d in dirs])
    assert list(spliced.splices) == ["1.resid_in", "1.attn.y", "1.mlp.post_act"]
    x = tokens()
    assert (spliced.logits(x) - hf.logits(x)).abs().max() <= 1e-5
    index = NodeIndex.of(spliced)
    errors_only = torch.tensor([k == "sae_error" for k in index.kinds()]).float()
    with torch.no_grad():
        ablated = spliced.forward(x, gate_hook(index, errors_only, torch.zeros(index.value_size)))
    assert (ablated - hf.logits(x)).abs().max() > 1e-3


def test_a_bfloat16_model_keeps_its_dtype_through_the_splice(tmp_path):
    model = random_model(GPTConfig.model_validate(BASE), seed=1, density=0.5).to(torch.bfloat16)
    base16 = SparseGPTAdapter(model, MissingTokenizer(None, BASE["vocab_size"]), "b16")  # type: ignore[arg-type]
    spliced = load_saes(base16, [str(write_sae(tmp_path, "s", "blocks.0.hook_mlp_out"))])
    _, cache = spliced.run_with_cache(tokens(), names=["0.mlp.resid_delta", "0.mlp.resid_delta.sae"])
    assert cache["0.mlp.resid_delta"].dtype == torch.bfloat16 and cache["0.mlp.resid_delta.sae"].dtype == torch.float32
    assert torch.equal(spliced.logits(tokens()), base16.logits(tokens()))  # x0 + (recon - recon) rounds back to x


def test_ablating_latents_changes_the_logits_and_counts_nodes_by_kind(spliced, base):
    x = tokens()
    index = NodeIndex.of(spliced)
    kinds = torch.tensor([k == "sae_error" for k in index.kinds()])
    keep_errors = kinds.float()  # every latent pruned, every error kept
    zero = torch.zeros(index.value_size)
    with torch.no_grad():
        ablated = spliced.forward(x, gate_hook(index, keep_errors, zero))
    assert (ablated - base.logits(x)).abs().max() > 1e-3
    mean = mean_activations(spliced, index, [(x, torch.ones_like(x, dtype=torch.bool))])
    assert mean.shape == (index.value_size,)
    with torch.no_grad():
        mean_ablated = spliced.forward(x, gate_hook(index, keep_errors, mean))
    assert (mean_ablated - base.logits(x)).abs().max() > 1e-3
    assert count_nodes(index, keep_errors) == {"nodes": 5, "nodes_sae_latent": 0, "nodes_sae_error": 5}
    assert count_edges(spliced, index, keep_errors) == {"edges": 0, "edges_weighted": 0, "edges_residual": 0}


def test_adjacent_splices_on_the_residual_stream_join_their_latents_through_decoder_and_encoder(spliced):
    # of the consecutive splices only 1.mlp.resid_delta -> final_resid is a direct path (the write joins the
    # stream the final splice reads); attn.hook_z and mlp.hook_post are off the stream
    sources = {s.name: s.source for s in spliced.sites if s.kind == "sae_latent"}
    assert sources == {"0.resid_in.sae": None, "0.attn.y.sae": None, "0.mlp.post_act.sae": None,
                       "1.mlp.resid_delta.sae": None, "final_resid.sae": "1.mlp.resid_delta.sae"}
    index = NodeIndex.of(spliced)
    site = next(s for s in spliced.sites if s.name == "final_resid.sae")
    a, b = spliced.splices["1.mlp.resid_delta"], spliced.splices["final_resid"]
    w = spliced.site_weight(site)
    assert torch.equal(w, (a.W_dec @ b.W_enc).T) and w.shape == (b.d_sae, a.d_sae)
    # latent i of a adds W_dec[i] to the stream; b's pre-activations move by W_dec[i] @ W_enc
    x = torch.randn(3, D, generator=torch.Generator().manual_seed(5))
    def pre(v: torch.Tensor) -> torch.Tensor:
        return (v - b.b_dec) @ b.W_enc + b.b_enc

    assert torch.allclose(pre(x + a.W_dec[7]) - pre(x), w[:, 7], atol=1e-5)
    gates = (torch.rand(index.size, generator=torch.Generator().manual_seed(6)) < 0.5).float()
    kept = {n: g > 0.5 for n, g in index.split(gates).items()}
    expected = int((w[kept["final_resid.sae"]][:, kept["1.mlp.resid_delta.sae"]] != 0).sum())
    assert count_edges(spliced, index, gates) == {"edges": expected, "edges_weighted": expected,
                                                  "edges_residual": 0}
    assert expected > 0


def test_a_pruned_error_node_takes_its_whole_ablation_vector(tmp_path, base):
    sae_dir = write_sae(tmp_path, "s", "blocks.0.hook_resid_mid", seed=5)
    spliced = load_saes(base, [str(sae_dir)])
    sae = load_sae(sae_dir)
    index = NodeIndex.of(spliced)
    x = tokens()
    # the error's mean over positions, from its definition on the base model's activation
    _, cache = base.run_with_cache(x, names=["0.resid_mid"])
    act = cache["0.resid_mid"]
    expected = (act - sae.decode(sae.encode(act))).mean(dim=(0, 1))
    mean = mean_activations(spliced, index, [(x, torch.ones_like(x, dtype=torch.bool))])
    assert torch.allclose(mean[index.value_offsets[1] :], expected, atol=1e-5)
    seen = {}

    def record(name, v):
        seen[name] = v
        return v

    gates = torch.tensor([1.0] * 48 + [0.0])
    with torch.no_grad():
        spliced.forward(x, gate_hook(index, gates, mean, also=record))
    assert torch.equal(seen["0.resid_mid.sae_error"], mean[48:].expand_as(seen["0.resid_mid.sae_error"]))


def test_a_perfect_sae_needs_no_error_node(tmp_path, base):
    sae_dir = write_sae(tmp_path, "perfect", "blocks.1.hook_resid_pre", d_sae=2 * D, weights=perfect_weights())
    spliced = load_saes(base, [str(sae_dir)])
    index = NodeIndex.of(spliced)
    x = tokens()
    no_error = torch.tensor([1.0] * 2 * D + [0.0])
    with torch.no_grad():
        logits = spliced.forward(x, gate_hook(index, no_error, torch.zeros(index.value_size)))
        no_latents = spliced.forward(x, gate_hook(index, 1 - no_error, torch.zeros(index.value_size)))
    assert (logits - base.logits(x)).abs().max() <= 1e-5
    assert (no_latents - base.logits(x)).abs().max() > 1e-3


# --- loss recovered --------------------------------------------------------------------------------


def _rows(n: int = 16, seed: int = 0):
    from tests.circuits.toy import ToyTask

    x = tokens(n, 10, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    return ToyTask(x, torch.randint(3, 10, (n,), generator=gen), torch.randint(0, 40, (n,), generator=gen),
                   torch.randint(40, 97, (n,), generator=gen))


def test_loss_recovered_is_one_for_a_perfect_sae_and_zero_for_one_that_reconstructs_nothing(tmp_path, base):
    perfect = write_sae(tmp_path, "perfect", "blocks.1.hook_resid_pre", d_sae=2 * D, weights=perfect_weights())
    w = perfect_weights()
    nothing = write_sae(tmp_path, "nothing", "blocks.1.hook_resid_pre", d_sae=2 * D,
                        weights=dict(w, W_dec=torch.zeros_like(w["W_dec"])))
    rows = _rows()
    good = loss_recovered(load_saes(base, [str(perfect)]), rows)
    assert abs(good["sae_loss_recovered"] - 1.0) <= 1e-4
    assert good["sae_loss_recovered.loss_zero"] != pytest.approx(good["sae_loss_recovered.loss_clean"], abs=1e-3)
    bad = loss_recovered(load_saes(base, [str(nothing)]), rows)
    assert abs(bad["sae_loss_recovered"]) <= 1e-4


def test_loss_recovered_reports_each_splice_when_there_are_several(spliced):
    out = loss_recovered(spliced, _rows())
    assert {f"sae_loss_recovered.{p}" for *_, p in SPLICES} <= set(out)
    assert all(np.isfinite(v) for v in out.values())


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "field"),
    [({"d_sae": None}, "d_sae"), ({"architecture": "gated"}, "architecture"),
     ({"normalize_activations": "layer_norm"}, "normalize_activations"), ({"k": None}, "k"),
     ({"metadata": {"hook_name": None}}, "hook_name"),
     ({"rescale_acts_by_decoder_norm": True}, "rescale_acts_by_decoder_norm")],
)
def test_bad_cfg_json_names_the_file_and_the_field(tmp_path, over, field):
    directory = write_sae(tmp_path, "bad", "blocks.0.hook_resid_pre", arch="topk")
    cfg = json.loads((directory / "cfg.json").read_text())
    cfg.update(over)
    cfg = {key: v for key, v in cfg.items() if v is not None}
    (directory / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as err:
        load_sae(directory)
    assert f"{directory / 'cfg.json'}: {field}:" in str(err.value)


def test_d_in_mismatch_and_unknown_hook_name_the_file_and_the_valid_hooks(tmp_path, base):
    wide = write_sae(tmp_path, "wide", "blocks.0.hook_resid_pre", d_in=D + 1)
    with pytest.raises(ConfigError, match=r"wide/cfg\.json: d_in: 33.*width 32"):
        load_saes(base, [str(wide)])
    nowhere = write_sae(tmp_path, "nowhere", "blocks.7.hook_resid_pre")
    with pytest.raises(ConfigError, match=r"nowhere/cfg\.json: hook_name: 'blocks\.7\.hook_resid_pre'.*0\.resid_in"):
        load_saes(base, [str(nowhere)])


def test_weights_that_do_not_fit_the_cfg_are_listed(tmp_path):
    no_threshold = write_sae(tmp_path, "jr", "blocks.0.hook_resid_pre", arch="jumprelu",
                             weights=perfect_weights(), d_sae=2 * D)
    with pytest.raises(CheckpointError, match=r"sae_weights\.safetensors.*missing: threshold"):
        load_sae(no_threshold)
    w = perfect_weights()
    misfit = write_sae(tmp_path, "misfit", "blocks.0.hook_resid_pre", d_sae=2 * D,
                       weights=dict(w, b_dec=torch.zeros(D + 1)))
    with pytest.raises(CheckpointError, match=r"b_dec has shape \[33\].*needs \[32\]"):
        load_sae(misfit)
    with pytest.raises(CircuitbenchError, match="cfg.json"):
        load_sae(tmp_path / "missing")


def test_a_hub_id_resolves_from_the_local_hub_cache_offline(tmp_path, base, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--test-saes"
    write_sae(repo / "snapshots" / commit, "blocks.0.hook_resid_mid", "blocks.0.hook_resid_mid")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spliced = load_saes(base, ["someone/test-saes/blocks.0.hook_resid_mid"])
    assert list(spliced.splices) == ["0.resid_mid"]
    assert spliced.provenance["saes"][0]["path"].endswith(f"{commit}/blocks.0.hook_resid_mid")
    with pytest.raises(CircuitbenchError, match="someone/missing.*HF_HUB_OFFLINE"):
        load_saes(base, ["someone/missing/blocks.0.hook_resid_mid"])


# --- the run loop and the CLI ----------------------------------------------------------------------

TASK = "while_return_true"


@pytest.fixture(scope="module")
def small_adapter(python_bpe):
    cfg = GPTConfig(block_size=256, vocab_size=2048, n_layer=1, n_head=2, d_model=32, d_mlp=64, rms_norm=True,
                    sink=True, afrac=0.25, afrac_loctypes="attn_in,attn_out,mlp_in,mlp_out,attn_q,attn_k,attn_v")
    return SparseGPTAdapter(random_model(cfg, seed=0, density=0.3), python_bpe, "small", {"weights_sha256": "small"})


def test_run_loop_prunes_sae_sites_and_writes_schema_valid_results(tmp_path, small_adapter):
    import pyarrow.parquet as pq

    from circuitbench.results.schema import MEASUREMENTS, SUMMARY
    from circuitbench.results.store import read_unit
    from circuitbench.runs.runner import RunConfig, run

    dirs = [write_sae(tmp_path / "saes", "post", "blocks.0.hook_resid_post", arch="topk", d_sae=64),
            write_sae(tmp_path / "saes", "mlp", "blocks.0.hook_mlp_out", arch="jumprelu", d_sae=64, seed=1)]
    cfg = RunConfig(model="small", saes=[str(d) for d in dirs], tasks=[TASK], method_kwargs={"steps": 3},
                    ablation="task-mean", min_accuracy=0.0, control=False, out=tmp_path / "out",
                    show_progress=False, search_examples=64)
    (summary,) = run(cfg, small_adapter)
    (unit,) = (tmp_path / "out").glob("small_sae_*/*.seed0.parquet")
    table, _, prov = read_unit(unit)
    assert table.schema.equals(MEASUREMENTS, check_metadata=False)
    assert pq.read_table(tmp_path / "out" / "summary.parquet").schema.equals(SUMMARY, check_metadata=False)
    assert summary["model"].startswith("small+sae:mlp,post-") and summary["status"] in ("solved", "train_only", "target_missed")
    m = {metric: v for split, metric, v in zip(*(table.column(c).to_pylist() for c in ("split", "metric", "value")),
                                                  strict=True) if split in ("", "test")}
    assert m["nodes"] == m["nodes_sae_latent"] + m["nodes_sae_error"] == summary["nodes"] <= 2 * 64 + 2
    assert m["nodes_sae_error"] <= 2 and m["edges"] <= 64 * 64  # mlp_out -> final_resid latents: direct path
    assert {"sae_loss_recovered", "sae_loss_recovered.0.mlp.resid_delta", "sae_loss_recovered.final_resid"} <= set(m)
    # the splice with its error kept is the base model: the clean loss is the full model's test loss
    assert m["sae_loss_recovered.loss_clean"] == pytest.approx(m["full_loss"], abs=1e-4)
    assert prov.unit.model.weights_sha256 == "small"
    assert [(s["hook"], s["weights_sha256"]) for s in prov.saes] == [
        ("0.mlp.resid_delta", file_sha256(dirs[1] / "sae_weights.safetensors")),
        ("final_resid", file_sha256(dirs[0] / "sae_weights.safetensors"))]


def test_corpus_means_of_sae_sites_are_cached_apart_from_the_base_model(tmp_path, small_adapter):
    sae_dir = write_sae(tmp_path, "s", "blocks.0.hook_resid_mid")
    spliced = load_saes(small_adapter, [str(sae_dir)])
    windows = torch.randint(0, 2048, (4, 16), generator=torch.Generator().manual_seed(0))
    base_means = corpus_mean(small_adapter, NodeIndex.of(small_adapter), windows, "k", cache_dir=tmp_path)
    index = NodeIndex.of(spliced)
    means = corpus_mean(spliced, index, windows, "k", cache_dir=tmp_path)
    assert means.shape == (48 + D,) and base_means.shape == (NodeIndex.of(small_adapter).size,)
    assert len(list((tmp_path / "ablation").glob("*.pt"))) == 2
    assert torch.equal(corpus_mean(spliced, index, windows, "k", cache_dir=tmp_path), means)


def test_cli_run_with_sae_records_loss_recovered(tmp_path, capsys, small_adapter, python_bpe):
    from circuitbench.cli import main
    from circuitbench.models.checkpoint import save_checkpoint
    from circuitbench.results.store import read_unit

    model_dir = tmp_path / "small"
    save_checkpoint(small_adapter.model, model_dir)
    python_bpe._tok.save(str(model_dir / "tokenizer.json"))
    sae_dir = write_sae(tmp_path, "tiny-sae", "blocks.0.hook_resid_mid")
    # --min-accuracy 1 (this random model is below it): reported, not pruned (the loop test above prunes); loss
    # recovered is measured anyway
    argv = ["run", "--model", str(model_dir), "--sae", str(sae_dir), "--tasks", TASK, "--min-accuracy", "1.0",
            "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet", "--format", "json"]
    assert main(argv) == 0
    (unit,) = (tmp_path / "out").glob("*small_sae_tiny-sae-*/*.seed0.parquet")
    table, summary, prov = read_unit(unit)
    assert "sae_loss_recovered" in table.column("metric").to_pylist() and summary["status"] == "unsolved"
    assert prov.saes[0]["path"] == str(sae_dir.resolve())
    assert prov.saes[0]["weights_sha256"] == file_sha256(sae_dir / "sae_weights.safetensors")
    assert main(["run", "--model", str(model_dir), "--sae", str(tmp_path / "nope"), "--tasks", TASK, "--quiet"]) == 1
    assert "nope" in capsys.readouterr().err
