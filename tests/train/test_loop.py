import json
from pathlib import Path

import numpy as np
import pytest
import torch

import circuitbench
from circuitbench.errors import CircuitbenchError
from circuitbench.train.data import TokenData, sample_batch
from circuitbench.train.loop import TrainConfig, train
from circuitbench.train.release import LOSS_CURVE, META
from circuitbench.train.state import CHECKPOINT

VOCAB = 320


def _cfg(out: Path, **kw) -> TrainConfig:
    base = dict(out_dir=out, vocab_size=VOCAB, n_layer=1, d_model=32, n_head=2, ctx=16,
                batch_size=4, max_steps=12, eval_every=4, checkpoint_every=3, val_windows=4,
                quiet=True, threads=1)
    return TrainConfig(**(base | kw))


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "final_model.pt", weights_only=True)


def _curve(out: Path) -> list[dict]:
    rows = json.loads((out / META).read_text()), (out / LOSS_CURVE).read_text().splitlines()
    return [",".join(r.split(",")[:-1]) for r in rows[1]]  # drop the wall-time column


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, data):
    full = train(_cfg(tmp_path / "full"), data)
    cut = _cfg(tmp_path / "cut", stop_after=7)
    train(cut, data)
    assert (cut.out_dir / CHECKPOINT).is_file() and not (cut.out_dir / "final_model.pt").exists()
    train(_cfg(tmp_path / "cut", resume=True), data)
    a, b = _weights(full), _weights(cut.out_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _curve(full) == _curve(cut.out_dir)


def test_output_loads_with_load_model_and_is_sparse(tmp_path, data):
    out = train(_cfg(tmp_path / "m", d_model=64), data)  # 64 / 16 = 4 per row: the minimum fits
    adapter = circuitbench.load_model(str(out), device="cpu")
    assert adapter.config.afrac == 0.25 and adapter.config.sink and adapter.config.enable_bigram_table
    assert len(adapter.config.loctypes) == 8
    model = adapter.model
    for name in ("transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight",
                 "lm_head.weight", "transformer.wte.weight"):
        p = dict(model.named_parameters())[name]
        assert int((p != 0).sum()) <= -(-p.numel() // 16), name
    assert float(model.transformer.wpe.weight.abs().sum()) == 0.0
    meta = json.loads((out / META).read_text())
    assert meta["steps"] == 12 and meta["tokens_seen"] == 12 * 4 * 16
    assert meta["params_nonzero"] < meta["params_total"]
    x, _ = sample_batch(data.val, 2, 16, torch.Generator().manual_seed(0))
    assert adapter.logits(x).shape == (2, 16, VOCAB)


def test_dense_twin_has_no_sparsity(tmp_path, data):
    out = train(_cfg(tmp_path / "d", dense=True), data)
    adapter = circuitbench.load_model(str(out), device="cpu")
    assert adapter.config.afrac is None
    w = dict(adapter.model.named_parameters())["transformer.h.0.mlp.c_fc.weight"]
    assert bool((w != 0).all())


def test_target_val_loss_stops_training_early(tmp_path, data):
    out = train(_cfg(tmp_path / "t", dense=True, target_val_loss=100.0), data)
    meta = json.loads((out / META).read_text())
    assert meta["steps"] == 4  # the first validation measurement


def test_existing_checkpoint_needs_resume_and_the_same_config(tmp_path, data):
    train(_cfg(tmp_path / "r", stop_after=3), data)
    with pytest.raises(CircuitbenchError, match="--resume"):
        train(_cfg(tmp_path / "r"), data)
    with pytest.raises(CircuitbenchError, match=r"different configuration \(--lr [0-9.e-]+ there, 0.001 now\)"):
        train(_cfg(tmp_path / "r", resume=True, lr=1e-3), data)


def test_a_checkpoint_from_before_a_setting_existed_resumes_when_it_is_left_at_its_default(tmp_path, data):
    """A run checkpointed before `--lr-decay` existed resumes exactly; asked for another value, it is refused."""
    full = train(_cfg(tmp_path / "full"), data)
    train(_cfg(tmp_path / "old", stop_after=6), data)
    path = tmp_path / "old" / CHECKPOINT
    state = torch.load(path, weights_only=False)
    config = json.loads(state["config"])
    del config["lr_decay"]  # as an earlier circuitbench wrote it
    state["config"] = json.dumps(config)
    torch.save(state, path)
    with pytest.raises(CircuitbenchError, match=r"--lr-decay \(unset\) there, 0.5 now"):
        train(_cfg(tmp_path / "old", resume=True, lr_decay=0.5), data)
    out = train(_cfg(tmp_path / "old", resume=True), data)
    a, b = _weights(full), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_is_an_error(tmp_path, data):
    with pytest.raises(CircuitbenchError, match="no checkpoint"):
        train(_cfg(tmp_path / "none", resume=True), data)


def test_finish_writes_the_final_model_from_a_checkpoint(tmp_path, data):
    train(_cfg(tmp_path / "f", stop_after=6), data)
    out = train(_cfg(tmp_path / "f", resume=True, finish=True), data)
    meta = json.loads((out / META).read_text())
    assert meta["steps"] == 6 and meta["planned_steps"] == 12
    circuitbench.load_model(str(out), device="cpu")


def test_keep_checkpoints_keeps_one_file_per_checkpoint_step(tmp_path, data):
    out = train(_cfg(tmp_path / "k", dense=True, max_steps=6, keep_checkpoints=True), data)
    assert sorted(p.name for p in out.glob("checkpoint-*.pt")) == ["checkpoint-3.pt", "checkpoint-6.pt"]


_CHILD = """
import sys
from pathlib import Path
import numpy as np
from circuitbench.train.data import TokenData
from circuitbench.train.loop import TrainConfig, train
d = Path(sys.argv[1])
data = TokenData(np.load(d / "train.npy"), np.load(d / "val.npy"), d / "tokenizer.json", "c" * 64, "t")
cfg = TrainConfig.model_validate_json((d / "cfg.json").read_text())
train(cfg, data)
"""


def test_resume_after_a_real_kill_equals_uninterrupted_run(tmp_path, data):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    np.save(tmp_path / "train.npy", data.train)
    np.save(tmp_path / "val.npy", data.val)
    shutil.copy(data.tokenizer_path, tmp_path / "tokenizer.json")
    data = TokenData(data.train, data.val, data.tokenizer_path, "c" * 64, "t")
    killed = _cfg(tmp_path / "killed", max_steps=150, checkpoint_every=10, eval_every=50)
    (tmp_path / "cfg.json").write_text(killed.model_dump_json())
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not (killed.out_dir / CHECKPOINT).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)  # no cleanup handlers run: a real crash
    finally:
        child.wait()
    assert (killed.out_dir / CHECKPOINT).exists() and not (killed.out_dir / "final_model.pt").exists()
    train(killed.model_copy(update={"resume": True}), data)
    full = train(_cfg(tmp_path / "full", max_steps=150, checkpoint_every=10, eval_every=50), data)
    a, b = _weights(full), _weights(killed.out_dir)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _curve(full) == _curve(killed.out_dir)


def test_a_checkpoint_resumes_from_another_directory(tmp_path, data):
    import shutil

    full = train(_cfg(tmp_path / "a"), data)
    train(_cfg(tmp_path / "b", stop_after=5), data)
    (tmp_path / "c").mkdir()
    shutil.copy(tmp_path / "b" / CHECKPOINT, tmp_path / "c" / CHECKPOINT)
    moved = train(_cfg(tmp_path / "c", resume=True), data)
    a, b = _weights(full), _weights(moved)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bfloat16_autocast_trains_the_same_model_within_bfloat16_noise(tmp_path, data):
    f32 = train(_cfg(tmp_path / "f32", precision="float32", max_steps=24, eval_every=8), data=data)
    bf16 = train(_cfg(tmp_path / "bf16", precision="bfloat16", max_steps=24, eval_every=8), data=data)
    m32, m16 = (json.loads((o / META).read_text()) for o in (f32, bf16))
    assert m32["precision"] == "float32" and m16["precision"] == "bfloat16"
    assert abs(m32["val_loss"] - m16["val_loss"]) < 0.02 * m32["val_loss"]
    w32, w16 = _weights(f32), _weights(bf16)
    assert w16["lm_head.weight"].dtype == torch.float32  # master weights stay float32
    for name in ("transformer.h.0.mlp.c_fc.weight", "lm_head.weight"):  # same sparsity budget
        assert int((w16[name] != 0).sum()) == int((w32[name] != 0).sum())


def test_auto_precision_resolves_to_what_the_hardware_multiplies(tmp_path):
    from circuitbench.hardware import bf16_native
    from circuitbench.train.loop import resolve_precision

    cfg = _cfg(tmp_path)
    assert resolve_precision(cfg) == ("bfloat16" if bf16_native("cpu") else "float32")
    assert resolve_precision(_cfg(tmp_path, precision="float32")) == "float32"


def test_learned_positional_embeddings_train_and_are_sparsified(tmp_path, data):
    out = train(_cfg(tmp_path / "pos", pos_emb="learned", weight_density=0.25), data=data)
    w = _weights(out)["transformer.wpe.weight"]
    assert w.abs().sum() > 0
    assert int((w != 0).sum()) <= -(-w.numel() // 4)
    meta = json.loads((out / META).read_text())
    assert "transformer.wpe.weight" in meta["sparsified"]


def test_dense_to_sparse_starts_from_the_dense_model_and_anneals_to_the_targets(tmp_path, data):
    dense = train(_cfg(tmp_path / "dense", dense=True, d_model=64), data)
    cfg = _cfg(tmp_path / "d2s", d_model=64, init_from=dense, anneal_afrac=True, weight_density=1 / 8,
               stop_after=1, max_steps=40)
    train(cfg, data)
    state = torch.load(cfg.out_dir / CHECKPOINT, weights_only=True)["model"]
    w0, w1 = _weights(dense)["transformer.h.0.mlp.c_fc.weight"], state["transformer.h.0.mlp.c_fc.weight"]
    # One step from the dense model: still (almost) dense and close to it, not a fresh initialisation.
    assert float((w1 != 0).float().mean()) > 0.9
    assert float((w1 - w0).norm() / w0.norm()) < 0.2
    out = train(_cfg(tmp_path / "d2s", d_model=64, init_from=dense, anneal_afrac=True, weight_density=1 / 8,
                     max_steps=40, resume=True), data)
    adapter = circuitbench.load_model(str(out), device="cpu")
    assert adapter.config.afrac == 0.25 and adapter.model._sparsify.afrac == 0.25
    w = dict(adapter.model.named_parameters())["transformer.h.0.mlp.c_fc.weight"]
    assert float((w != 0).float().mean()) == pytest.approx(1 / 8, abs=0.01)


def test_afrac_anneals_with_the_l0_budget():
    from circuitbench.train import recipe

    assert recipe.afrac_at(0, 100, 0.25) == 1.0
    assert recipe.afrac_at(50, 100, 0.25) == pytest.approx(0.25)
    assert recipe.afrac_at(30, 100, 0.25, end=0.3) == pytest.approx(0.25)
    assert 0.25 < recipe.afrac_at(20, 100, 0.25) < 1.0
    # A run that starts sparse (anneal_end at or before the anneal start) holds the target from step 0.
    assert recipe.density_at(0, 100, 1 / 8, end=0.0) == pytest.approx(1 / 8)


def test_init_from_refuses_another_shape_or_tokenizer(tmp_path, data):
    other = train(_cfg(tmp_path / "wide", dense=True, d_model=64), data)
    with pytest.raises(CircuitbenchError, match="--init-from .*d_model 64 \\(this run: 32\\)"):
        train(_cfg(tmp_path / "x", init_from=other), data)
    (other / "tokenizer.json").write_text("{}")
    with pytest.raises(CircuitbenchError, match="--distill-from .*tokenizer"):
        train(_cfg(tmp_path / "y", d_model=64, distill_from=other), data)
    with pytest.raises(CircuitbenchError, match="--init-from .*no beeg_config.json"):
        train(_cfg(tmp_path / "z", init_from=tmp_path), data)


def test_distillation_pulls_the_model_towards_its_teacher(tmp_path, data):
    from circuitbench.train.loop import distill_kl, load_model_dir

    teacher = train(_cfg(tmp_path / "teacher", dense=True, max_steps=30), data)
    plain = train(_cfg(tmp_path / "plain", max_steps=30, seed=1), data)
    taught = train(_cfg(tmp_path / "taught", max_steps=30, seed=1, distill_from=teacher, distill_coef=5.0), data)
    x, _ = sample_batch(data.val, 8, 16, torch.Generator().manual_seed(0))
    t = load_model_dir(teacher, "teacher")
    with torch.no_grad():
        kls = [float(distill_kl(load_model_dir(m, "m")(x), t(x))) for m in (plain, taught)]
    assert kls[1] < kls[0]
    assert distill_kl(t(x), t(x)).abs().item() < 1e-5


def test_a_continued_run_records_the_training_it_started_from(tmp_path, data):
    """`--init-from`: the new model's metadata (and card) count the starting model's tokens and time too, so
    they stay true after the starting model is replaced."""
    from circuitbench.train.card import render_card

    first = train(_cfg(tmp_path / "first", max_steps=8), data)
    then = train(_cfg(tmp_path / "then", init_from=first, max_steps=4), data)
    prior, meta = (json.loads((d / META).read_text()) for d in (first, then))
    assert meta["started_from"]["tokens_seen"] == prior["tokens_seen"] == 8 * 4 * 16
    assert meta["started_from"]["wall_time_s"] == prior["wall_time_s"]
    assert len(meta["started_from"]["weights_sha256"]) == 64
    card = render_card("then", meta, [])
    assert f"{(8 + 4) * 4 * 16:,} in all: {4 * 4 * 16:,} in this run, continued from" in card


def test_the_device_is_checked_first_and_a_run_resumes_on_another_device(tmp_path, data):
    for bad, said in (("cuda", "CUDA is not available here"), ("gpu0", "not a torch device")):
        if bad == "cuda" and torch.cuda.is_available():
            continue  # on a GPU machine CUDA is a valid device; the parse error still runs
        with pytest.raises(CircuitbenchError, match=f"--device {bad}: .*{said}"):
            train(_cfg(tmp_path / bad, device=bad), data)
        assert not (tmp_path / bad).exists()  # refused before anything was written
    full = train(_cfg(tmp_path / "full", device="cpu"), data)
    train(_cfg(tmp_path / "cut", device="cpu", stop_after=7), data)
    train(_cfg(tmp_path / "cut", device="auto", resume=True), data)  # the device is no part of the identity
    a, b = _weights(full), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a) and all(v.device.type == "cpu" for v in b.values())
    assert json.loads((tmp_path / "cut" / META).read_text())["config"]["device"] == "auto"
