"""Edge-level circuits: the edge gates against their definition, edge methods against the planted circuit."""

import pytest
import torch

import circuitbench
from circuitbench.circuits.ablation import task_mean
from circuitbench.circuits.edge_level import EdgeIndex, edge_logits
from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.methods import get_method
from circuitbench.circuits.methods.attribution import gate_gradient
from circuitbench.circuits.problem import EdgeProblem
from circuitbench.errors import CircuitbenchError
from circuitbench.protocols import Batch
from tests.circuits.toy import toy_adapter, toy_task

PLANTED_EDGES = {("0.mlp.act_in", 0, "0.mlp.post_act", 0), ("0.mlp.act_in", 0, "0.mlp.post_act", 1),
                 ("0.mlp.post_act", 0, "0.mlp.resid_delta", 1), ("0.mlp.post_act", 1, "0.mlp.resid_delta", 1)}


@pytest.fixture(scope="module")
def sparse():
    return circuitbench.load_model("tiny-sparse", device="cpu")


def _toy_problem(counterfactual=False):
    adapter = toy_adapter()
    edges = EdgeIndex.of(adapter)
    rows = Batch.of(toy_task(), adapter.device)
    return EdgeProblem(adapter, NodeIndex.of(adapter), task_mean(adapter, edges.values, rows), rows, 0,
                       show_progress=False, counterfactual=counterfactual, edges=edges)


def _named(edges: EdgeIndex) -> list[tuple[str, int, str, int]]:
    names = [s.name for s in edges.nodes.sites]
    return [(names[a], b, names[c], d) for a, b, c, d in edges.layout().tolist()]


def _batch(adapter, n=6, t=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, adapter.tokenizer.vocab_size, (n, t), generator=gen)
    last = torch.randint(t // 2, t, (n,), generator=gen)
    zeros = torch.zeros(n, dtype=torch.long)
    return Batch(tokens, last, zeros, zeros + 1)


def test_the_graph_is_every_edge_node_counting_knows_of(sparse):
    edges = EdgeIndex.of(sparse)
    kinds = edges.kinds()
    weights = sum(int((sparse.site_weight(s) != 0).sum()) for s in sparse.sites if s.source is not None)
    assert kinds.count("weighted") == weights
    # 2 layers: 4 writes, each reaching every later read (attn 0 -> 3 reads, mlp 0 -> 2, attn 1 -> 1), 128 channels
    assert kinds.count("residual") == (3 + 2 + 1) * 128
    sizes = edges.sizes(torch.ones(edges.size))
    assert sizes["edges"] == edges.size and sizes["nodes"] <= NodeIndex.of(sparse).size


def test_all_edges_kept_is_the_model_exactly(sparse):
    edges = EdgeIndex.of(sparse)
    rows = _batch(sparse)
    values = torch.randn(edges.values.value_size)
    plain = Batch(rows.tokens, rows.last, rows.correct, rows.incorrect)
    from circuitbench.protocols import forward_at

    assert torch.equal(edge_logits(sparse, edges, torch.ones(edges.size), values, rows),
                       forward_at(sparse, plain.tokens, None, plain.last))


def test_a_pruned_weighted_edge_gives_its_destination_the_ablated_contribution(sparse):
    edges = EdgeIndex.of(sparse)
    values = torch.randn(edges.values.value_size)
    rows = _batch(sparse, seed=1)
    named = _named(edges)
    e = next(i for i, n in enumerate(named) if n[0] == "1.mlp.act_in" and n[2] == "1.mlp.post_act")
    _, j, _, i = named[e]
    gates = torch.ones(edges.size)
    gates[e] = 0.0
    got = edge_logits(sparse, edges, gates, values, rows)
    # the definition: the neuron's pre-activation gets W[i, j] * mu_j in place of W[i, j] * x_j
    mu = edges.values.split_values(values)["1.mlp.act_in"][j]
    fc = sparse.model.transformer.h[1].mlp.c_fc
    with torch.no_grad():
        w = fc.weight[i, j].item()
        fc.weight[i, j] = 0.0
        fc.bias[i] += w * mu
        try:
            from circuitbench.protocols import forward_at

            want = forward_at(sparse, rows.tokens, None, rows.last)
        finally:
            fc.weight[i, j] = w
            fc.bias[i] -= w * mu
    assert w != 0
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_pruning_every_residual_edge_of_a_write_channel_ablates_it_for_later_reads_only(sparse):
    """The reads see mu; the logits (not an edge) still see the write's own value."""
    edges = EdgeIndex.of(sparse)
    values = torch.randn(edges.values.value_size)
    rows = _batch(sparse, seed=2)
    write, c = "0.attn.resid_delta", 5
    gates = torch.tensor([0.0 if (n[0], n[1]) == (write, c) and kind == "residual" else 1.0
                          for n, kind in zip(_named(edges), edges.kinds(), strict=True)])
    assert (gates == 0).sum() == 3  # to 0.mlp.act_in, 1.attn.act_in, 1.mlp.act_in
    got = edge_logits(sparse, edges, gates, values, rows)
    mu = edges.values.split_values(values)[write][c]
    seen = {}

    def hook(name, x):  # node-ablate the channel, then give the final residual its clean value back
        if name == write:
            seen["x"] = x[..., c].clone()
            x = x.clone()
            x[..., c] = mu
        if name == "final_resid":
            x = x.clone()
            x[..., c] += seen["x"] - mu
        return x

    full = sparse.forward(rows.tokens, hook)
    want = full[torch.arange(len(rows)), rows.last]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_counterfactual_edges_give_the_reads_the_partners_value_and_the_logits_their_own(sparse):
    from circuitbench.circuits.ablation import partner_values

    edges = EdgeIndex.of(sparse)
    rows = _batch(sparse, n=8, seed=3)
    values = partner_values(sparse, edges.values, rows, torch.randn(edges.values.value_size))
    write, c = "0.mlp.resid_delta", 7
    gates = torch.tensor([0.0 if (n[0], n[1]) == (write, c) and kind == "residual" else 1.0
                          for n, kind in zip(_named(edges), edges.kinds(), strict=True)])
    got = edge_logits(sparse, edges, gates, values, rows)
    partner = values.values[write][..., c]  # [B, T]: the pair partner's value, aligned at the answer
    seen = {}

    def hook(name, x):
        if name == write:
            seen["x"] = x[..., c].clone()
            x = x.clone()
            x[..., c] = partner
        if name == "final_resid":
            x = x.clone()
            x[..., c] += seen["x"] - partner
        return x

    full = sparse.forward(rows.tokens, hook)
    torch.testing.assert_close(got, full[torch.arange(len(rows)), rows.last], atol=1e-4, rtol=1e-4)
    assert torch.equal(edge_logits(sparse, edges, torch.ones(edges.size), values, rows),
                       edge_logits(sparse, edges, torch.ones(edges.size), torch.zeros(edges.values.value_size), rows))


def _auroc(scores, positives):
    pos = [s for i, s in enumerate(scores) if i in positives]
    neg = [s for i, s in enumerate(scores) if i not in positives]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


@pytest.mark.parametrize("counterfactual", [False, True], ids=["task-mean", "counterfactual"])
@pytest.mark.parametrize(("name", "kw"), [("eap_ig", {}), ("learned_mask", {"steps": 300}), ("eap", {}),
                                          ("activation_patching", {})])
def test_edge_methods_rank_the_planted_edges_first(name, kw, counterfactual):
    p = _toy_problem(counterfactual)
    planted = {i for i, n in enumerate(_named(p.graph)) if n in PLANTED_EDGES}
    assert len(planted) == 4 and p.size > len(planted)
    scores = get_method(name, **kw).node_scores(p)
    assert scores.shape == (p.size,)
    assert _auroc(scores.tolist(), planted) >= 0.95


def test_random_edges_are_near_chance_on_the_planted_circuit():
    p = _toy_problem()
    planted = {i for i, n in enumerate(_named(p.graph)) if n in PLANTED_EDGES}
    import dataclasses

    vals = [_auroc(get_method("random").node_scores(dataclasses.replace(p, seed=s)).tolist(), planted)
            for s in range(20)]
    assert 0.3 < sum(vals) / len(vals) < 0.7


def test_edge_integrated_gradients_sum_to_the_metric_difference():
    p = _toy_problem()
    steps = 64
    total = sum(gate_gradient(p, p.train, k / steps, 64) for k in range(1, steps + 1)) / steps
    gap = p.scores(p.train, torch.ones(p.size)).logit_diff - p.scores(p.train, torch.zeros(p.size)).logit_diff
    assert float(total.sum()) == pytest.approx(gap, rel=0.05)


def test_edge_activation_patching_is_the_exact_single_edge_effect():
    p = _toy_problem()
    scores = get_method("activation_patching").node_scores(p)
    ones = torch.ones(p.size)
    for e in range(p.size):
        gates = ones.clone()
        gates[e] = 0.0
        effect = p.scores(p.train, ones).logit_diff - p.scores(p.train, gates).logit_diff
        assert scores[e].item() == pytest.approx(abs(effect), abs=1e-4)


def test_activation_patching_refuses_a_graph_too_large_with_the_cost(sparse):
    edges = EdgeIndex.of(sparse)
    rows = _batch(sparse)
    p = EdgeProblem(sparse, NodeIndex.of(sparse), torch.zeros(edges.values.value_size), rows, 0, False, edges=edges)
    with pytest.raises(CircuitbenchError, match="forward passes, over max_passes"):
        get_method("activation_patching").node_scores(p)


def test_magnitude_says_it_scores_nodes_only():
    with pytest.raises(CircuitbenchError, match="scores nodes only"):
        get_method("magnitude").node_scores(_toy_problem())
