"""`baselines/training/gpu.sh` at toy size on the CPU, and the tokenized corpus folder it carries to the GPU machine."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import circuitbench
from circuitbench.corpus import collect_corpus
from circuitbench.errors import CircuitbenchError
from circuitbench.train.tokenized import load_tokenized, write_tokenized

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "baselines" / "training" / "gpu.sh"


def _bash(step: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "XDG_CACHE_HOME": str(tmp / "cache"), **env}
    return subprocess.run(["bash", str(SCRIPT), step], capture_output=True, text=True, env=full, timeout=600)


@pytest.mark.slow
def test_the_gpu_script_prepares_a_corpus_that_travels_and_trains_on_it_at_toy_size(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for f in (f for f in sorted(stdlib.glob("*.py")) if f.stat().st_size < 12_000):  # small files, until one of
        (source / f.name).write_text(f.read_text())  # them is held out for validation (2%, by content hash)
        if len(list(source.iterdir())) >= 40 and collect_corpus(source).val:
            break
    corpus = tmp_path / "corpus"
    done = _bash("prepare", tmp_path, SOURCE=str(source), CORPUS_DIR=str(corpus), MAX_TOKENS="60000", VOCAB="320")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((corpus / "corpus.json").read_text())
    train = np.load(corpus / "train.npy")
    assert len(train) == manifest["train_tokens"] <= 60000 < manifest["source_train_tokens"]
    assert train[-1] == 319 and manifest["corpus_hash"].endswith(f":train[:{len(train)}]")  # cut at a file's end
    assert "training tokens" in done.stdout

    out = tmp_path / "model"
    done = _bash("train", tmp_path, CORPUS_DIR=str(corpus), OUT=str(out), VOCAB="320", DEVICE="cpu", N_LAYER="1",
                 D_MODEL="32", N_HEAD="2", BATCH="4", CTX="16", SECONDS_BUDGET="2", NO_CARD="1")
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["steps"] >= 50 and meta["corpus_hash"] == manifest["corpus_hash"]
    assert meta["config"]["device"] == "cpu" and not (tmp_path / "model.timing").exists()
    assert f"training {meta['steps']} steps on cpu" in done.stdout
    adapter = circuitbench.load_model(str(out), device="cpu")
    assert adapter.config.n_layer == 1 and adapter.config.afrac == 0.25


def test_a_tokenized_folder_is_checked_against_its_manifest(tmp_path, data):
    folder = tmp_path / "tok"
    write_tokenized(data, folder)
    assert len(load_tokenized(folder, vocab_size=320).train) == len(data.train)
    with pytest.raises(CircuitbenchError, match="its tokenizer has 320 ids; give --vocab-size 320"):
        load_tokenized(folder, vocab_size=2048)
    np.save(folder / "val.npy", data.val[:-3])
    with pytest.raises(CircuitbenchError, match=r"val\.npy: expected \d+ uint16 token ids as corpus\.json says"):
        load_tokenized(folder)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(CircuitbenchError, match="tokenizer.json: its sha256 is not the manifest's"):
        load_tokenized(folder)
    (folder / "corpus.json").write_text("{")
    with pytest.raises(CircuitbenchError, match="corpus.json: not a readable corpus manifest: not valid JSON"):
        load_tokenized(folder)
    (folder / "train.npy").unlink()
    with pytest.raises(CircuitbenchError, match="a tokenized corpus folder needs train.npy"):
        load_tokenized(folder)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(CircuitbenchError, match="is not a tokenized corpus folder"):
        write_tokenized(data, user)
    assert (user / "notes.txt").read_text() == "keep"
