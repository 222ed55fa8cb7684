import math

import pytest
import torch

from circuitbench.models.config import GPTConfig
from circuitbench.models.sparse_gpt import SparseGPT
from circuitbench.train import recipe


def test_density_is_dense_until_one_percent_then_linear_to_target_at_half():
    assert recipe.density_at(0, 1000, 1 / 16) == 1.0
    assert recipe.density_at(10, 1000, 1 / 16) == 1.0
    assert recipe.density_at(500, 1000, 1 / 16) == pytest.approx(1 / 16)
    assert recipe.density_at(900, 1000, 1 / 16) == pytest.approx(1 / 16)
    mid = recipe.density_at(255, 1000, 1 / 16)
    assert mid == pytest.approx(1 + 0.5 * (1 / 16 - 1))
    ds = [recipe.density_at(s, 1000, 1 / 16) for s in range(1001)]
    assert all(a >= b for a, b in zip(ds, ds[1:], strict=False))


def test_lr_warms_up_then_decays_linearly_to_zero():
    assert recipe.lr_at(0, 1000, 1.0) == pytest.approx(0.1)
    assert recipe.lr_at(9, 1000, 1.0) == pytest.approx(1.0)
    assert recipe.lr_at(1000, 1000, 1.0) == 0.0
    assert recipe.lr_at(505, 1000, 1.0) == pytest.approx(0.5)


def test_lr_scale_is_sqrt_of_final_over_current_l0():
    assert recipe.lr_scale(1 / 16, 1.0) == pytest.approx(0.25)
    assert recipe.lr_scale(1 / 16, 1 / 16) == 1.0


def test_topk_mask_keeps_exactly_k_largest_magnitudes():
    w = torch.tensor([[0.1, -5.0, 0.2, 3.0, 0.0, 0.0, 0.0, 0.0]])
    mask = recipe.topk_mask(w, 2, min_per_row=0)
    assert mask.tolist() == [[False, True, False, True, False, False, False, False]]


def test_topk_mask_keeps_min_per_row_inside_the_budget():
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    w[0] *= 1e-6  # row 0 would lose everything to a global threshold
    mask = recipe.topk_mask(w, 64)
    assert int(mask.sum()) == 64
    assert (mask.sum(1) >= 4).all()
    row0 = w[0].abs().topk(4).indices
    assert mask[0, row0].all()


def test_topk_mask_budget_below_row_minimum_is_raised_to_it():
    mask = recipe.topk_mask(torch.randn(10, 20), 5)
    assert int(mask.sum()) == 40


def test_bias_is_projected_without_row_minimum():
    b = torch.arange(16.0)
    mask = recipe.topk_mask(b, 4)
    assert mask.tolist() == [False] * 12 + [True] * 4


def _tiny() -> SparseGPT:
    cfg = GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, d_model=32, rms_norm=True,
                    tied_unembed=False, enable_bigram_table=True, learnable_bigram_table=True,
                    sink=True)
    torch.manual_seed(0)
    return SparseGPT(cfg)


def test_sparsifiable_covers_matrices_and_biases_not_bigram_norms_sink_or_wpe():
    model = _tiny()
    model.transformer.wpe.weight.requires_grad_(False)  # zeroed and frozen, as the recipe trains it
    names = {n for n, _ in recipe.sparsifiable(model)}
    assert "transformer.h.0.attn.c_attn.weight" in names
    assert "transformer.h.0.attn.c_attn.bias" in names
    assert "transformer.wte.weight" in names and "lm_head.weight" in names
    assert "bigram_table" not in names
    assert not any("ln_" in n or "sink" in n or "wpe" in n for n in names)


def test_project_leaves_every_tensor_at_most_density_nonzero():
    model = _tiny()
    kept = recipe.project_(recipe.sparsifiable(model), 1 / 16)
    for name, p in recipe.sparsifiable(model):
        nz = int((p != 0).sum())
        assert nz <= kept[name]
        if p.dim() == 2 and p.shape[0] * 4 <= math.ceil(p.numel() / 16):
            assert nz <= math.ceil(p.numel() / 16)
            assert ((p != 0).sum(1) >= 4).all()


def test_normalize_grads_sets_global_rms_to_one():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(5))
    a.grad, b.grad = torch.full((3,), 2.0), torch.full((5,), 6.0)
    recipe.normalize_grads_([a, b])
    sq = a.grad.pow(2).sum() + b.grad.pow(2).sum()
    assert float((sq / 8).sqrt()) == pytest.approx(1.0)
    assert float(b.grad[0] / a.grad[0]) == pytest.approx(3.0)


def test_learned_positional_embeddings_are_sparsified_like_any_weight_matrix():
    names = {n for n, _ in recipe.sparsifiable(_tiny())}  # wpe trainable: --pos-emb learned
    assert "transformer.wpe.weight" in names


def test_a_long_plateau_and_a_short_decay():
    """--lr-decay 1 is the linear schedule above, step for step; 0.1 holds the peak, then decays over the last tenth."""
    total, warm = 1000, 10
    for step in range(total + 1):  # decay 1: exactly the paper's linear decay after warmup
        want = (step + 1) / warm if step < warm else max(0.0, (total - step) / (total - warm))
        assert recipe.lr_at(step, total, 1.0, 0.01, 1.0) == pytest.approx(want, abs=1e-12), step
    lrs = [recipe.lr_at(s, total, 1.0, 0.01, 0.1) for s in range(total + 1)]
    start = total - round(0.1 * (total - warm))  # 901: the decay's first step
    assert lrs[warm:start] == [1.0] * (start - warm) and lrs[-1] == 0.0
    assert all(a >= b for a, b in zip(lrs[start - 1:], lrs[start:], strict=False))  # then monotone down
    assert lrs[start + 50] == pytest.approx(0.5, abs=0.01)  # halfway through the 99 decay steps


def test_schedule_flags_outside_their_range_are_refused_by_name():
    from pathlib import Path

    from circuitbench.errors import CircuitbenchError
    from circuitbench.train.config import TrainConfig, check

    for kw, flag in ((dict(lr_decay=0.0), "--lr-decay 0.0"), (dict(lr_decay=1.5), "--lr-decay 1.5"),
                     (dict(warmup=1.0), "--warmup 1.0"), (dict(warmup=-0.1), "--warmup -0.1")):
        with pytest.raises(CircuitbenchError, match=flag):
            check(TrainConfig(out_dir=Path("unused"), **kw))
