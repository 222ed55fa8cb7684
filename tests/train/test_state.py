"""A large checkpoint is written as hashed parts of at most PART_BYTES each, and resumes exactly from them."""

import json

import pytest
import torch

from circuitbench.errors import CircuitbenchError
from circuitbench.train import state
from circuitbench.train.loop import train
from circuitbench.train.state import CHECKPOINT, MANIFEST, load_checkpoint, save_checkpoint, split_existing
from tests.train.test_loop import _cfg, _curve, _weights


def test_a_large_checkpoint_is_split_into_parts_under_the_limit_and_resumes_exactly(tmp_path, data, monkeypatch):
    monkeypatch.setattr(state, "PART_BYTES", 64 * 1024)  # the tiny test model's checkpoint is ~0.3 MB
    full = train(_cfg(tmp_path / "full"), data)
    cut = _cfg(tmp_path / "cut", stop_after=7)
    train(cut, data)
    out = cut.out_dir
    manifest = json.loads((out / MANIFEST).read_text())
    parts = [out / p["file"] for p in manifest["parts"]]
    assert not (out / CHECKPOINT).exists() and len(parts) > 2 and manifest["step"] == 7
    assert all(p.stat().st_size <= 64 * 1024 for p in parts)
    assert len(list(out.glob("checkpoint-split-*"))) == 1  # the step-6 parts were removed when step 7 was written
    train(_cfg(tmp_path / "cut", resume=True), data)
    a, b = _weights(full), _weights(out)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _curve(full) == _curve(out)


def test_a_corrupt_part_is_refused_naming_it(tmp_path):
    state_dict = {"step": 3, "model": {"w": torch.arange(50_000, dtype=torch.float32)}}
    save_checkpoint(state_dict, tmp_path)
    assert (tmp_path / CHECKPOINT).is_file()  # small: one file
    split_existing(tmp_path)
    assert not (tmp_path / CHECKPOINT).exists()
    assert torch.equal(load_checkpoint(tmp_path)["model"]["w"], state_dict["model"]["w"])
    part = tmp_path / json.loads((tmp_path / MANIFEST).read_text())["parts"][0]["file"]
    blob = bytearray(part.read_bytes())
    blob[100] ^= 0xFF
    part.write_bytes(bytes(blob))
    with pytest.raises(CircuitbenchError, match=rf"{part.name}: does not match the sha256"):
        load_checkpoint(tmp_path)
