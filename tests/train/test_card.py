import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import circuitbench
from circuitbench.models.hub import bundled_models
from circuitbench.tasks.encode import encode_task
from circuitbench.tasks.load import get_task, list_specs
from circuitbench.train.card import TASK_EVAL, render_card, score_task
from circuitbench.train.release import META

BUNDLED = ("tiny-sparse", "tiny-dense")


class _FixedLogits:
    """A model whose logits at every position are a fixed row per example."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows

    def forward(self, tokens: torch.Tensor, hook=None, at=None) -> torch.Tensor:
        out = self.rows[tokens[:, 0]]  # (b, V): token 0 of each row indexes its logits
        return out if at is not None else out[:, None, :].expand(-1, tokens.shape[1], -1)


def test_score_task_accuracy_and_two_way_task_loss():
    rows = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    enc = SimpleNamespace(
        tokens=torch.tensor([[0, 1], [1, 1], [2, 0]]),
        last=torch.tensor([1, 0, 1]),
        correct=torch.tensor([0, 1, 0]),
        incorrect=torch.tensor([1, 2, 1]),
    )
    res = score_task(_FixedLogits(rows), enc, batch=2)
    assert res["n"] == 3
    assert res["accuracy"] == pytest.approx(1 / 3)  # a tie is not correct
    expect = [-F.log_softmax(torch.tensor(p), 0)[0] for p in ([2.0, 0.0], [1.0, 3.0], [0.0, 0.0])]
    assert res["task_loss"] == pytest.approx(float(torch.stack(expect).mean()))


def test_render_card_states_provenance_and_task_count():
    meta = {
        "config": {"dense": False, "corpus": None, "n_layer": 2, "d_model": 128, "n_head": 4,
                   "d_mlp": None, "ctx": 256, "weight_density": 0.0625, "afrac": 0.25,
                   "batch_size": 32},
        "command": "circuitbench train --out x", "corpus_hash": "ab" * 32,
        "tokenizer_sha256": "cd" * 32, "train_tokens_in_corpus": 10, "val_tokens_in_corpus": 5,
        "steps": 3, "tokens_seen": 96, "val_loss": 3.21, "val_tokens": 50, "params_total": 100,
        "params_nonzero": 40, "wall_time_s": 60.0, "hardware": "cpu", "final_model_bytes": 1e6,
        "sparsified": {"lm_head.weight": {"numel": 16, "nonzero": 1}},
    }
    tasks = [{"task": "a", "n": 4, "kept_fraction": 1.0, "accuracy": 0.95, "task_loss": 0.1},
             {"task": "b", "n": 4, "kept_fraction": 1.0, "accuracy": 0.5, "task_loss": 0.7}]
    text = render_card("m", meta, tasks)
    for needle in ("circuitbench train --out x", "ab" * 32, "3.2100", "**1 of 2**", "| 96 |"[2:],
                   "100 total, 40 nonzero"):
        assert needle in text


def test_bundled_tokenizer_keeps_at_least_90_percent_of_every_task():
    models = bundled_models()
    tok = (models["tiny-sparse"] / "tokenizer.json").read_bytes()
    assert (models["tiny-dense"] / "tokenizer.json").read_bytes() == tok  # one tokenizer for both
    adapter = circuitbench.load_model("tiny-sparse", device="cpu")
    for spec in list_specs():
        for split in ("train", "test"):
            enc = encode_task(spec, adapter.tokenizer, split)
            assert enc.kept_fraction >= 0.9, (spec.name, split, enc.drop_reasons)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_card_table_agrees_with_a_fresh_measurement(name):
    adapter = circuitbench.load_model(name, device="cpu")
    table = {r["task"]: r for r in json.loads((bundled_models()[name] / TASK_EVAL).read_text())}
    assert set(table) == {s.name for s in list_specs()}
    card = (bundled_models()[name] / "README.md").read_text()
    for task in ("else_elif",):  # one task keeps the test fast; the table covers all 20
        res = score_task(adapter, encode_task(get_task(task), adapter.tokenizer, "test"))
        assert res["accuracy"] == pytest.approx(table[task]["accuracy"], abs=1e-4)
        assert res["task_loss"] == pytest.approx(table[task]["task_loss"], abs=1e-4)
        assert f"| {task}" in card


def test_bundled_sparse_model_is_sparse_and_dense_twin_matches_its_val_loss():
    sparse = circuitbench.load_model("tiny-sparse", device="cpu")
    params = dict(sparse.model.named_parameters())
    meta = json.loads((bundled_models()["tiny-sparse"] / META).read_text())
    for name in meta["sparsified"]:
        p = params[name]
        assert int((p != 0).sum()) <= -(-p.numel() // 8), name  # every matrix and bias at most 1/8
    assert sparse.config.afrac == 0.25 and len(sparse.config.loctypes) == 8
    dense_meta = json.loads((bundled_models()["tiny-dense"] / META).read_text())
    assert abs(dense_meta["val_loss"] - meta["val_loss"]) <= 0.02 * meta["val_loss"]
    assert dense_meta["config"]["dense"] and not meta["config"]["dense"]
    for name in BUNDLED:
        size = sum(f.stat().st_size for f in bundled_models()[name].iterdir())
        assert size <= 32 * 2**20, name


def test_bundled_cards_record_the_corpus_package_list_and_how_the_model_was_trained():
    from circuitbench.train import packages

    for name in BUNDLED:
        meta = json.loads((bundled_models()[name] / META).read_text())
        record = meta["corpus_packages"]
        assert record["list_sha256"] == packages.package_list_record(None)["list_sha256"]
        assert len(record["val_packages"]) >= 5 and meta["train_tokens_in_corpus"] >= 100_000_000
        card = (bundled_models()[name] / "README.md").read_text()
        assert meta["command"] in card and meta["corpus_hash"] in card and "pinned PyPI packages" in card
    sparse = json.loads((bundled_models()["tiny-sparse"] / META).read_text())
    dense = json.loads((bundled_models()["tiny-dense"] / META).read_text())
    assert sparse["corpus_hash"] == dense["corpus_hash"] and sparse["tokenizer_sha256"] == dense["tokenizer_sha256"]


def test_the_readme_states_how_many_tasks_the_reference_model_solves():
    from pathlib import Path

    table = json.loads((bundled_models()["tiny-sparse"] / TASK_EVAL).read_text())
    n = sum(1 for r in table if r["accuracy"] >= 0.9)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"**{n} of 20**" in readme
