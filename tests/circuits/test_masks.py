import torch

from circuitbench.circuits.masks import NodeIndex, gate_hook, keep_top


def test_node_index_lays_sites_out_in_forward_order(small_adapter):
    index = NodeIndex.of(small_adapter)
    assert index.size == sum(s.width for s in small_adapter.sites)
    assert index.offsets[0] == 0 and len(index.offsets) == len(index.sites) + 1
    flat = torch.arange(index.size)
    parts = index.split(flat)
    assert torch.equal(torch.cat([parts[s.name] for s in index.sites]), flat)
    assert len(index.kinds()) == index.size


def test_keep_top_keeps_exactly_k_and_breaks_ties_by_index():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.1, 0.5])
    assert keep_top(scores, 2).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert keep_top(scores, 0).sum() == 0 and keep_top(scores, 5).sum() == 5


def test_gate_hook_keeps_exact_values_and_ablates_to_mu(small_adapter):
    index = NodeIndex.of(small_adapter)
    site = index.sites[0]
    gates = torch.ones(index.size)
    gates[index.slice(0).start] = 0.0
    mu = torch.full((index.value_size,), 7.0)
    hook = gate_hook(index, gates, mu)
    x = torch.randn(2, 3, site.width)
    y = hook(site.name, x)
    assert torch.equal(y[..., 1:], x[..., 1:]) and torch.all(y[..., 0] == 7.0)
    assert torch.equal(hook("not.a.site", x), x)
