import math

import pytest
import torch

from circuitbench.circuits.edges import count_edges
from circuitbench.circuits.masks import NodeIndex, keep_top
from circuitbench.circuits.metrics import count_nodes, faithfulness, score, task_loss


def test_task_loss_is_the_two_way_cross_entropy_of_the_correct_answer():
    two = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(task_loss(two), torch.tensor([math.log(1 + math.exp(-2)), math.log(2)]))


def test_score_counts_ties_as_wrong():
    s = score(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    assert s.accuracy == pytest.approx(1 / 3) and s.logit_diff == pytest.approx(-1 / 3)


def test_faithfulness_is_mibs_ratio_and_nan_when_undefined():
    assert faithfulness(1.5, 2.0, 0.0) == 0.75 and math.isnan(faithfulness(1.0, 1.0, 1.0))


def test_node_and_edge_counts_of_the_empty_and_full_circuits(small_adapter):
    index = NodeIndex.of(small_adapter)
    empty = torch.zeros(index.size)
    assert count_nodes(index, empty)["nodes"] == 0 and count_edges(small_adapter, index, empty)["edges"] == 0
    full = count_edges(small_adapter, index, torch.ones(index.size))
    assert full["edges"] == full["edges_weighted"] + full["edges_residual"] > 0
    some = count_nodes(index, keep_top(torch.arange(index.size).float(), 10))
    assert some["nodes"] == 10 == sum(v for k, v in some.items() if k.startswith("nodes_"))
