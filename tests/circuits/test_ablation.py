import torch

from circuitbench.circuits.ablation import mean_activations, task_mean
from circuitbench.circuits.masks import NodeIndex
from circuitbench.protocols import Batch
from circuitbench.tasks.encode import encode_task
from circuitbench.tasks.load import get_task


def test_task_mean_averages_every_prompt_position_and_nothing_after_it(small_adapter):
    index = NodeIndex.of(small_adapter)
    rows = Batch.of(encode_task(get_task("else_elif"), small_adapter.tokenizer, "train"))
    rows = rows.take(torch.arange(8))
    means = task_mean(small_adapter, index, rows, batch=3)
    site = index.sites[0]
    acts = []
    for i in range(len(rows)):
        one = rows.take(torch.tensor([i]))
        _, cache = small_adapter.run_with_cache(one.tokens, names=[site.name])
        acts.append(cache[site.name][0, : int(one.last[0]) + 1])
    expect = torch.cat(acts).mean(0)
    assert torch.allclose(index.split_values(means)[site.name], expect, atol=1e-5)


def test_mean_activations_needs_a_valid_position(small_adapter):
    import pytest

    index = NodeIndex.of(small_adapter)
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="no valid positions"):
        mean_activations(small_adapter, index, [(tokens, torch.zeros(1, 4, dtype=torch.bool))])


def _pairs_of_unequal_length(adapter, n_pairs=6):
    """Whole pairs of a real task, at least one of them with members of different token lengths."""
    from circuitbench.circuits.ablation import partner_rows

    rows = Batch.of(encode_task(get_task("lambda_func"), adapter.tokenizer, "train"))
    unequal = torch.nonzero(rows.last != rows.last[partner_rows(len(rows), "cpu")]).flatten()
    assert len(unequal), "the task should have pairs whose members tokenize to different lengths"
    first = int(unequal[0]) // 2
    return rows.pairs(torch.arange(first, first + n_pairs))


def test_counterfactual_values_are_the_partner_activations_aligned_at_the_answer(small_adapter):
    from circuitbench.circuits.ablation import aligned_examples, partner_values

    index = NodeIndex.of(small_adapter)
    rows = _pairs_of_unequal_length(small_adapter)
    fallback = torch.randn(index.value_size, generator=torch.Generator().manual_seed(0))
    pv = partner_values(small_adapter, index, rows, fallback)
    names = [s.name for s in index.sites]
    fb = index.split_values(fallback)
    checked_fallback = 0
    for r in range(len(rows)):
        p = r ^ 1
        one = rows.take(torch.tensor([p]))
        _, cache = small_adapter.run_with_cache(one.tokens, names=names)
        shift = int(rows.last[r] - rows.last[p])
        for name in names:
            for t in range(int(rows.last[r]) + 1):
                got = pv.values[name][r, t]
                if t - shift >= 0:
                    assert torch.allclose(got, cache[name][0, t - shift], atol=1e-5), (r, name, t)
                else:
                    assert torch.equal(got, fb[name])
                    checked_fallback += 1
    assert checked_fallback > 0  # the unequal pair's unaligned positions took the fallback
    assert aligned_examples(rows) < len(rows)


def test_counterfactual_gating_is_the_same_with_the_answer_only_forward(small_adapter):
    """The last block sees one position per row in the pruning forward; it must take the answer position's values."""
    from circuitbench.circuits.masks import gate_hook, stacked_gate_hook
    from circuitbench.circuits.metrics import answer_logits
    from circuitbench.circuits.problem import Problem

    index = NodeIndex.of(small_adapter)
    rows = _pairs_of_unequal_length(small_adapter)
    p = Problem(small_adapter, index, task_mean(small_adapter, index, rows), rows, 0, show_progress=False,
                counterfactual=True)
    gates = (torch.rand(index.size, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    fast = p.two_logits(rows, gates)
    full = small_adapter.forward(rows.tokens, gate_hook(index, gates, p.values_for(rows)), at=rows.last)
    assert torch.allclose(fast, answer_logits(full, rows), atol=1e-4)
    plain = Problem(small_adapter, index, p.ablation_values, rows, 0, show_progress=False)
    assert not torch.allclose(fast, plain.two_logits(rows, gates), atol=1e-3)  # it is not the mean ablation
    # the stacked hook (two blocks, as the joint learned mask and activation patching use it) agrees per block
    both = torch.stack([gates, 1 - gates])
    rep = rows.tokens.repeat(2, 1)
    stacked = small_adapter.forward(rep, stacked_gate_hook(index, both, p.values_for(rows)), at=rows.last.repeat(2),
                                    answer_only=True)
    two = answer_logits(stacked, Batch(rep, rows.last.repeat(2), rows.correct.repeat(2), rows.incorrect.repeat(2)))
    assert torch.allclose(two[: len(rows)], fast, atol=1e-4)
    assert torch.allclose(two[len(rows):], p.two_logits(rows, 1 - gates), atol=1e-4)


def test_the_ablation_registry_has_counterfactual(small_adapter):
    from circuitbench.circuits.ablation import ABLATIONS, ablation_source

    index = NodeIndex.of(small_adapter)
    src = ablation_source("counterfactual", small_adapter, index)
    assert set(ABLATIONS) == {"mean", "task-mean", "zero", "counterfactual"} and src.kind == "counterfactual"
    rows = Batch.of(encode_task(get_task("else_elif"), small_adapter.tokenizer, "train"))
    assert torch.allclose(src.values(rows), task_mean(small_adapter, index, rows))
