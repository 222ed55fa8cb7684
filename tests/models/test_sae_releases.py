"""SAELens releases by id (`--sae RELEASE/ID`), resolved through sae-lens's registry and conversion functions
from a local Hub cache built here; SAEs refused for another model or other weight processing; prepend_bos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from circuitbench.circuits.masks import NodeIndex, gate_hook
from circuitbench.errors import ConfigError, ModelNotFoundError
from circuitbench.models.hf_load import load_transformers
from circuitbench.models.hub import load_model
from circuitbench.models.sae import BOSTokenizer, load_saes
from circuitbench.tasks import encode_task, get_task
from tests.models.test_external import hooked
from tests.models.test_hf import build, save_model_dir, tokens

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HOOK_Z = "gpt2-small-hook-z-kk/blocks.1.hook_z"  # conversion function connor_rob_hook_z (.pt + _cfg.json)
RESID = "gpt2-small-res-jb/blocks.1.hook_resid_pre"  # SAELens format; the release asks for center_writing_weights
D, D_SAE = 32, 48


def registry_path(release: str, sae_id: str) -> tuple[str, str]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory()[release]
    return lookup.repo_id, lookup.saes_map[sae_id]


def random_sae(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(D, D_SAE, generator=g) / D**0.5, "b_enc": 0.1 * torch.randn(D_SAE, generator=g),
            "W_dec": torch.randn(D_SAE, D, generator=g) / D_SAE**0.5, "b_dec": 0.1 * torch.randn(D, generator=g)}


def put(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """Files of a Hub repo at one commit, laid out as huggingface_hub's cache keeps them."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        path = root / "snapshots" / COMMIT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> tuple[Path, dict[str, dict[str, torch.Tensor]]]:
    """A local Hub cache holding one SAE of each release, in the files each release really publishes."""
    cache = tmp_path / "hub"
    weights = {HOOK_Z: random_sae(1), RESID: random_sae(2)}
    repo, pt_name = registry_path(*HOOK_Z.split("/", 1))
    pt = tmp_path / "w.pt"
    torch.save(weights[HOOK_Z], pt)
    put(cache, repo, {pt_name: pt.read_bytes(), pt_name.split(".pt")[0] + "_cfg.json": json.dumps(
        {"act_size": D, "dict_size": D_SAE, "act_name": "blocks.1.attn.hook_z"}).encode()})
    repo, folder = registry_path(*RESID.split("/", 1))
    st = tmp_path / "w.safetensors"
    save_file(weights[RESID], str(st))
    cfg = {"d_in": D, "d_sae": D_SAE, "hook_point": "blocks.1.hook_resid_pre", "model_name": "gpt2-small",
           "dtype": "torch.float32", "architecture": "standard", "apply_b_dec_to_input": True,
           "normalize_activations": False, "sae_lens_training_version": "2.1.3"}  # prepend_bos: SAELens's default
    put(cache, repo, {f"{folder}/cfg.json": json.dumps(cfg).encode(), f"{folder}/sae_weights.safetensors":
                      st.read_bytes()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache, weights


@pytest.fixture
def gpt2(python_bpe, tmp_path):
    """A tiny random GPT-2 saved as a directory named gpt2 (as a local copy of it would be)."""
    model = build("gpt2")
    model.config.n_ctx = model.config.n_positions  # read by TransformerLens's config conversion
    directory = save_model_dir(model, python_bpe, tmp_path / "gpt2")
    return model, directory, load_transformers(directory, device="cpu")


def test_a_release_with_a_conversion_function_resolves_from_the_local_hub_cache(hub, gpt2):
    _, weights = hub
    _, _, base = gpt2
    spliced = load_saes(base, [HOOK_Z])
    assert list(spliced.splices) == ["1.attn.y"]
    sae = spliced.splices["1.attn.y"]
    assert torch.equal(sae.W_enc, weights[HOOK_Z]["W_enc"]) and torch.equal(sae.b_dec, weights[HOOK_Z]["b_dec"])
    prov = spliced.provenance["saes"][0]
    assert prov["spec"] == HOOK_Z and prov["conversion"] == "connor_rob_hook_z"
    assert prov["repo_id"] == "ckkissane/attn-saes-gpt2-small-all-layers" and prov["release"] == "gpt2-small-hook-z-kk"
    # every latent and the error kept: the base model's logits
    index = NodeIndex.of(spliced)
    x = tokens()
    with torch.no_grad():
        out = spliced.forward(x, gate_hook(index, torch.ones(index.size), torch.zeros(index.value_size)))
    assert (out - base.logits(x)).abs().max() <= 1e-4


def test_prepend_bos_puts_the_bos_token_before_every_prompt(hub, gpt2):
    _, _, base = gpt2
    spliced = load_saes(base, [HOOK_Z])  # the conversion records prepend_bos: true
    assert isinstance(spliced.tokenizer, BOSTokenizer) and spliced.tokenizer.bos_id == 0  # config.json's
    text = "for x in xs:\n    print(x)\n"
    assert spliced.tokenizer.encode(text) == [0, *base.tokenizer.encode(text)]
    assert spliced.tokenizer.decode(spliced.tokenizer.encode(text)) == text
    encoded = encode_task(get_task("else_elif"), spliced.tokenizer, split="test")
    plain = encode_task(get_task("else_elif"), base.tokenizer, split="test")
    assert (encoded.tokens[:, 0] == 0).all() and torch.equal(encoded.last, plain.last + 1)
    assert torch.equal(encoded.correct, plain.correct) and torch.equal(encoded.tokens[:, 1:], plain.tokens)


def test_an_sae_for_another_model_is_refused(hub, python_bpe, tmp_path):
    other = load_transformers(save_model_dir(build("llama"), python_bpe, tmp_path / "tiny-gqa"), device="cpu")
    with pytest.raises(ConfigError, match=r"gpt2-small-hook-z-kk/blocks\.1\.hook_z: model_name: the SAE was "
                                          r"trained on 'gpt2-small' \(Hub: gpt2\), but this model is 'tiny-gqa'"):
        load_saes(other, [HOOK_Z])


def test_an_sae_trained_on_centred_writing_weights_needs_them(hub, gpt2, python_bpe):
    model, directory, base = gpt2
    with pytest.raises(ConfigError, match=r"center_writing_weights=true, but this model's writing weights are not "
                                          r"centred, so its 1\.resid_in activations"):
        load_saes(base, [RESID])
    processed = load_model(hooked("gpt2", model, directory, python_bpe, processed=True))  # TransformerLens's way
    spliced = load_saes(processed, [RESID])
    assert list(spliced.splices) == ["1.resid_in"] and spliced.provenance["saes"][0]["conversion"] == "sae_lens"
    assert spliced.provenance["saes"][0]["prepend_bos"] is True  # SAELens's default before 6.0
    # the unprocessed TransformerLens model is refused like the transformers one
    with pytest.raises(ConfigError, match="center_writing_weights=true"):
        load_saes(load_model(hooked("gpt2", model, directory, python_bpe)), [RESID])


def test_release_id_errors_name_the_release_and_the_cache(hub, gpt2):
    _, _, base = gpt2
    with pytest.raises(ModelNotFoundError, match=r"release gpt2-small-res-jb has no SAE 'blocks\.1\.hook_resid_prex'; "
                                                 r"did you mean blocks\.1\.hook_resid_pre"):
        load_saes(base, ["gpt2-small-res-jb/blocks.1.hook_resid_prex"])
    with pytest.raises(ModelNotFoundError, match=r"jbloom/GPT2-Small-SAEs-Reformatted.*HF_HUB_OFFLINE=1.*hub"):
        load_saes(base, ["gpt2-small-res-jb/blocks.2.hook_resid_pre"])  # in the registry, not in the cache


@pytest.mark.slow
def test_cli_run_with_a_release_id_and_its_circuit_reevaluates(hub, gpt2, tmp_path):
    cache, _ = hub
    _, directory, _ = gpt2
    out = tmp_path / "results"
    env = {"CIRCUITBENCH_CACHE": str(tmp_path / "cb-cache"), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "circuitbench", "run", "--model", str(directory), "--sae", HOOK_Z, "--tasks",
           "else_elif", "--steps", "10", "--min-accuracy", "0", "--no-control", "--device", "cpu", "--quiet",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = pq.read_table(out / "summary.parquet").to_pylist()
    assert "+sae:blocks.1.hook_z-" in row["model"] and row["status"] in ("solved", "train_only", "target_missed")
    (unit,) = out.rglob("*.seed0.parquet")
    shown = subprocess.run([sys.executable, "-m", "circuitbench", "circuit", "eval", str(unit), "--device", "cpu"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert shown.returncode == 0, shown.stderr[-3000:]  # reloaded by its release id, from the cache
