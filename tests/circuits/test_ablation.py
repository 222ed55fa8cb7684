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
