"""Hub ids through a fake Hugging Face cache in tmp_path, in the openai/circuit-sparsity layout.

The cache is written by hand in huggingface_hub's on-disk structure (checked with its own
`scan_cache_dir`):

    <cache>/models--<owner>--<name>/
        blobs/<sha256 of the file>            the file's bytes
        snapshots/<40-hex commit>/<file>      relative symlink to ../../blobs/<sha256>
        refs/<branch or tag>                  the commit hash, no newline

The Hub names LFS blobs by their sha256 and small files by their git sha1; both are just names here.
Every test runs with HF_HUB_OFFLINE=1: nothing touches the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

import circuitbench
from circuitbench.cli import main as cli_main
from circuitbench.errors import CheckpointError, ModelNotFoundError
from circuitbench.models.config import GPTConfig
from circuitbench.models.hub import detect_format
from tests.models.conftest import FIXTURE_EXPECTED, FIXTURE_MODEL, random_model

REPO_ID = "openai/circuit-sparsity"
VOCAB_WORDS = ["<|endoftext|>", "<unk>", "def", "return", "x", "=", "(", ")", ":"]
HF_EXTRAS = {
    "architectures": ["CircuitGPTForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_circuitgpt.CircuitGPTConfig",
                 "AutoModelForCausalLM": "modeling_circuitgpt.CircuitGPTForCausalLM"},
    "model_type": "circuitgpt",
    "torch_dtype": "float32",
    "transformers_version": "4.57.1",
}


@pytest.fixture(autouse=True)
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE=tmp_path/hub, set after huggingface_hub was imported."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def fixture_cfg() -> dict:
    return json.loads((FIXTURE_MODEL / "beeg_config.json").read_text())


@pytest.fixture(scope="module")
def fixture_sd() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE_MODEL / "final_model.pt", weights_only=True)


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE_EXPECTED, weights_only=True)


def tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB_WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str().encode()


def hub_files(cfg: dict, sd: dict[str, torch.Tensor], prefix: str = "circuit_model.",
              weights: str = "model.safetensors", config: dict | None = None) -> dict[str, bytes]:
    """The files of a circuit-sparsity Hub repo: config.json, weights with the wrapper's prefix, tokenizer."""
    prefixed = {prefix + k: v.clone().contiguous() for k, v in sd.items()}
    if weights.endswith(".safetensors"):
        blob = save_safetensors(prefixed)
    else:
        buf = io.BytesIO()
        torch.save(prefixed, buf)
        blob = buf.getvalue()
    return {
        "config.json": json.dumps(config if config is not None else {**HF_EXTRAS, **cfg}).encode(),
        weights: blob,
        "tokenizer.json": tokenizer_json(),
        "README.md": b"# circuit-sparsity\n",
    }


def write_snapshot(cache: Path, repo_id: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)) -> str:
    """Write one snapshot into a huggingface_hub cache; returns its commit hash."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(b"".join(sorted(files.values()))).hexdigest()
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (storage / "blobs" / digest).write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", digest))
    for ref in refs:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return commit


def max_diff(adapter, expected: dict[str, torch.Tensor]) -> float:
    return float((adapter.logits(expected["idx"]) - expected["logits"]).abs().max())


def test_hub_id_loads_from_the_offline_cache_and_reproduces_the_fixture(offline_cache, fixture_cfg, fixture_sd,
                                                                        expected):
    from huggingface_hub import scan_cache_dir

    commit = write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, fixture_sd))
    (repo,) = scan_cache_dir(offline_cache).repos  # huggingface_hub itself reads our cache
    assert repo.repo_id == REPO_ID and {r.commit_hash for r in repo.revisions} == {commit}

    adapter = circuitbench.load_model(REPO_ID, device="cpu")
    assert max_diff(adapter, expected) <= 1e-4  # the parity test's tolerance
    assert adapter.name == REPO_ID
    prov = adapter.provenance
    assert (prov["repo_id"], prov["revision"], prov["commit"]) == (REPO_ID, "main", commit)
    assert prov["format"] == "circuit-sparsity-hub" and prov["key_prefix"] == "circuit_model."
    assert adapter.tokenizer.encode("def x ( )") == [2, 4, 6, 7]
    assert adapter.tokenizer.eot_id == 0


@pytest.mark.parametrize(("prefix", "weights"), [
    ("", "model.safetensors"),
    ("circuit_model.", "pytorch_model.bin"),
    ("model.circuit_model.", "model.safetensors"),
    ("model.circuit_model.", "final_model.pt"),
])
def test_wrapper_prefix_and_weight_file_are_detected(offline_cache, fixture_cfg, fixture_sd, expected, prefix,
                                                     weights):
    write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, fixture_sd, prefix, weights))
    adapter = circuitbench.load_model(REPO_ID, device="cpu")
    assert max_diff(adapter, expected) <= 1e-4
    assert adapter.provenance["key_prefix"] == prefix


def test_revision_selects_a_branch_or_a_commit(offline_cache, fixture_cfg, fixture_sd, expected):
    main = write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, fixture_sd))
    other_model = random_model(GPTConfig.model_validate(fixture_cfg), seed=7)
    other = write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, other_model.state_dict()), refs=("v2",))
    assert other != main

    adapter = circuitbench.load_model(REPO_ID, device="cpu", revision="v2")
    assert adapter.provenance["commit"] == other and adapter.provenance["revision"] == "v2"
    with torch.no_grad():
        want = other_model(expected["idx"])
    assert float((adapter.logits(expected["idx"]) - want).abs().max()) <= 1e-5
    assert max_diff(adapter, expected) > 1e-2  # really the other weights

    by_commit = circuitbench.load_model(REPO_ID, device="cpu", revision=main)
    assert by_commit.provenance["commit"] == main
    assert max_diff(by_commit, expected) <= 1e-4


def test_nested_and_renamed_config_keys_are_mapped(offline_cache, fixture_cfg, fixture_sd, expected):
    inner = dict(fixture_cfg)
    renamed = {"hidden_size": inner.pop("d_model"), "num_hidden_layers": inner.pop("n_layer"),
               "num_attention_heads": inner.pop("n_head"), "max_position_embeddings": inner.pop("block_size")}
    config = {**HF_EXTRAS, "gpt_config": {**inner, **renamed, "d_model": renamed["hidden_size"],
                                          "n_layer": renamed["num_hidden_layers"], "wandb_run": "abc"}}
    write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, fixture_sd, config=config))
    adapter = circuitbench.load_model(REPO_ID, device="cpu")
    assert max_diff(adapter, expected) <= 1e-4
    assert adapter.config.block_size == fixture_cfg["block_size"]
    assert adapter.config.n_head == fixture_cfg["n_head"]
    assert adapter.provenance["ignored_config_keys"] == ["gpt_config.wandb_run"]


def test_unforeseen_keys_fail_listing_them_and_offer_trust_remote_code(offline_cache, fixture_cfg, fixture_sd):
    sd = {f"circuit_model.{k}": v for k, v in fixture_sd.items()}
    sd["value_head.weight"] = torch.zeros(1, fixture_cfg["d_model"])  # a wrapper module beside the GPT
    write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, sd, prefix=""))
    with pytest.raises(CheckpointError) as info:
        circuitbench.load_model(REPO_ID, device="cpu")
    msg = str(info.value)
    assert "unexpected keys (1): value_head.weight" in msg
    assert "--trust-remote-code" in msg
    assert "config.json, model.safetensors, tokenizer.json" in msg  # the files found


def test_weights_with_no_gpt_keys_fail_listing_the_keys(offline_cache, fixture_cfg):
    write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, {"encoder.layers.0.w": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"no key looks like.*encoder\.layers\.0\.w.*--trust-remote-code"):
        circuitbench.load_model(REPO_ID, device="cpu")


def test_a_hub_id_missing_from_the_offline_cache_says_where_it_looked(offline_cache):
    with pytest.raises(ModelNotFoundError) as info:
        circuitbench.load_model("someone/not-cached", device="cpu")
    msg = str(info.value)
    assert f"not in the Hugging Face cache at {offline_cache}" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "hf download someone/not-cached" in msg


def test_a_revision_missing_from_the_cache_lists_the_cached_ones(offline_cache, fixture_cfg, fixture_sd):
    commit = write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, fixture_sd))
    with pytest.raises(ModelNotFoundError, match=rf"revision v9.*refs main; snapshots {commit}"):
        circuitbench.load_model(REPO_ID, device="cpu", revision="v9")


def test_hf_home_is_read_at_call_time(tmp_path, monkeypatch, fixture_cfg, fixture_sd, expected):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    commit = write_snapshot(tmp_path / "home" / "hub", REPO_ID, hub_files(fixture_cfg, fixture_sd))
    adapter = circuitbench.load_model(REPO_ID, device="cpu")
    assert adapter.provenance["commit"] == commit
    assert max_diff(adapter, expected) <= 1e-4


def test_a_directory_of_other_files_lists_them_and_the_formats(tmp_path):
    d = tmp_path / "junk"
    (d / "sub").mkdir(parents=True)
    (d / "notes.txt").write_text("hi")
    (d / "sub" / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(ModelNotFoundError) as info:
        circuitbench.load_model(str(d), device="cpu")
    msg = str(info.value)
    assert "Files present: notes.txt, sub/image.png" in msg
    assert "beeg_config.json" in msg and "model_type circuitgpt" in msg and "transformers causal LM" in msg


def test_a_local_hub_layout_directory_loads_without_a_hub_id(tmp_path, fixture_cfg, fixture_sd, expected):
    d = tmp_path / "local-copy"
    d.mkdir()
    for name, data in hub_files(fixture_cfg, fixture_sd).items():
        (d / name).write_bytes(data)
    assert detect_format(d) == "circuit-sparsity-hub"
    adapter = circuitbench.load_model(str(d), device="cpu")
    assert max_diff(adapter, expected) <= 1e-4
    assert "commit" not in adapter.provenance


def test_transformers_directory_dispatches_to_the_transformers_adapter(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path / "gpt2-tiny"
    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=len(VOCAB_WORDS),
                                          n_positions=32)).eval()
    hf_model.save_pretrained(d)
    (d / "tokenizer.json").write_bytes(tokenizer_json())
    assert detect_format(d) == "transformers"
    if not (Path(circuitbench.__file__).parent / "models" / "hf.py").is_file():
        with pytest.raises(ModelNotFoundError, match="no transformers adapter"):
            circuitbench.load_model(str(d), device="cpu")
        return
    adapter = circuitbench.load_model(str(d), device="cpu")
    idx = torch.tensor([[2, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        want = hf_model(idx).logits
    assert float((adapter.logits(idx) - want).abs().max()) <= 1e-5


REMOTE_CONFIG = '''
from transformers import PretrainedConfig


class CircuitGPTConfig(PretrainedConfig):
    model_type = "circuitgpt"

    def __init__(self, gpt=None, **kwargs):
        self.gpt = gpt or {}
        super().__init__(**kwargs)
'''
REMOTE_MODEL = '''
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from circuitbench.models.config import GPTConfig
from circuitbench.models.sparse_gpt import SparseGPT

from .configuration_circuitgpt import CircuitGPTConfig


class CircuitGPTForCausalLM(PreTrainedModel):
    config_class = CircuitGPTConfig

    def __init__(self, config):
        super().__init__(config)
        self.circuit_model = SparseGPT(GPTConfig.model_validate(config.gpt))
        self.value_head = nn.Linear(config.gpt["d_model"], 1)  # a module our layout does not foresee
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids, **kwargs):
        return CausalLMOutput(logits=self.circuit_model(input_ids))
'''
LOAD_AND_SAVE = '''
import sys, torch, circuitbench
adapter = circuitbench.load_model("openai/circuit-sparsity", device="cpu", trust_remote_code=True)
idx = torch.load(sys.argv[1], weights_only=True)["idx"]
torch.save({"logits": adapter.logits(idx), "loaded_via": adapter.provenance["loaded_via"]}, sys.argv[2])
'''


@pytest.mark.slow  # a fresh interpreter importing torch and transformers
def test_trust_remote_code_loads_an_unforeseen_layout_through_its_own_code(tmp_path, offline_cache, fixture_cfg,
                                                                           fixture_sd, expected):
    sd = {f"circuit_model.{k}": v for k, v in fixture_sd.items()}
    sd["value_head.weight"], sd["value_head.bias"] = torch.randn(1, fixture_cfg["d_model"]), torch.zeros(1)
    files = hub_files(fixture_cfg, sd, prefix="", config={**HF_EXTRAS, "gpt": fixture_cfg})
    files["configuration_circuitgpt.py"] = REMOTE_CONFIG.encode()
    files["modeling_circuitgpt.py"] = REMOTE_MODEL.encode()
    write_snapshot(offline_cache, REPO_ID, files)

    with pytest.raises(CheckpointError, match=r"value_head\.bias, value_head\.weight(.|\n)*--trust-remote-code"):
        circuitbench.load_model(REPO_ID, device="cpu")  # never implied

    # transformers reads HF_MODULES_CACHE at import, so the remote code runs in a fresh process.
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    out = tmp_path / "out.pt"
    subprocess.run([sys.executable, "-c", LOAD_AND_SAVE, str(FIXTURE_EXPECTED), str(out)], env=env, check=True,
                   timeout=300)
    got = torch.load(out, weights_only=True)
    assert got["loaded_via"] == "trust_remote_code"
    assert float((got["logits"] - expected["logits"]).abs().max()) <= 1e-4


def test_cli_inspect_passes_revision(offline_cache, fixture_cfg, fixture_sd, capsys):
    write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, fixture_sd))
    other = random_model(GPTConfig.model_validate(fixture_cfg), seed=3, density=1.0)
    write_snapshot(offline_cache, REPO_ID, hub_files(fixture_cfg, other.state_dict()), refs=("dense",))
    nonzero = {}
    for rev in ("main", "dense"):
        assert cli_main(["inspect", REPO_ID, "--revision", rev, "--format", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        nonzero[rev] = report["model"]["nonzero params"]
    assert nonzero["main"] != nonzero["dense"]


def test_cli_flags_are_parsed_for_run_and_inspect():
    from circuitbench.cli import build_parser

    args = build_parser().parse_args(["run", "--model", REPO_ID, "--revision", "v2", "--trust-remote-code"])
    assert (args.revision, args.trust_remote_code) == ("v2", True)
    args = build_parser().parse_args(["inspect", REPO_ID])
    assert (args.revision, args.trust_remote_code) == (None, False)


def test_a_bare_hub_id_resolves_as_a_hub_id(offline_cache, fixture_cfg, fixture_sd, expected):
    """Legacy ids without an owner (`gpt2`, as the README shows) are Hub ids, not missing directories."""
    write_snapshot(offline_cache, "bare-model", hub_files(fixture_cfg, fixture_sd))
    adapter = circuitbench.load_model("bare-model", device="cpu")
    assert max_diff(adapter, expected) <= 1e-4 and adapter.provenance["repo_id"] == "bare-model"
    with pytest.raises(ModelNotFoundError, match=r"Did you mean 'tiny-sparse'\?.*As a Hub id: .*HF_HUB_OFFLINE"):
        circuitbench.load_model("tiny-sprase", device="cpu")
