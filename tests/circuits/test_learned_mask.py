import torch

from circuitbench.circuits.ablation import task_mean
from circuitbench.circuits.masks import NodeIndex, keep_top
from circuitbench.circuits.methods import get_method
from circuitbench.circuits.problem import Problem
from circuitbench.circuits.search import smallest_k
from circuitbench.protocols import Batch
from tests.circuits.toy import PLANTED, toy_adapter, toy_task


def _problem(seed=0):
    adapter = toy_adapter()
    index = NodeIndex.of(adapter)
    rows = Batch.of(toy_task(), adapter.device)
    return Problem(adapter, index, task_mean(adapter, index, rows), rows, seed, show_progress=False)


def _kept(index, gates):
    parts = [gates[index.slice(i)] for i in range(len(index.sites))]
    return {(s.name, c) for s, part in zip(index.sites, parts, strict=True)
            for c in torch.nonzero(part > 0.5).flatten().tolist()}


def test_toy_model_solves_its_task_and_empty_circuit_does_not():
    p = _problem()
    assert p.scores(p.train, None).accuracy == 1.0
    assert p.scores(p.train, None).loss < 1e-3
    assert p.scores(p.train, torch.zeros(p.index.size)).accuracy <= 0.5


def test_learned_mask_recovers_the_planted_circuit():
    p = _problem()
    scores = get_method("learned_mask", steps=300).node_scores(p)
    found = smallest_k(lambda k: p.scores(p.train, keep_top(scores, k)).loss, p.index.size, 0.15)
    assert found.met_target
    kept = _kept(p.index, keep_top(scores, found.k))
    assert kept <= PLANTED, kept - PLANTED
    # under mean ablation one of the two mirror neurons suffices; the read and the write are required
    assert {("0.mlp.act_in", 0), ("0.mlp.resid_delta", 1)} <= kept
    assert p.scores(p.train, keep_top(scores, found.k)).loss <= 0.15


def test_random_ranking_needs_a_much_larger_circuit():
    p = _problem()
    scores = get_method("random").node_scores(p)
    found = smallest_k(lambda k: p.scores(p.train, keep_top(scores, k)).loss, p.index.size, 0.15)
    assert found.k > len(PLANTED)


def test_all_ones_gates_reproduce_the_plain_forward_exactly():
    p = _problem()
    plain = p.two_logits(p.train, None)
    assert torch.equal(p.two_logits(p.train, torch.ones(p.index.size)), plain)


def test_patience_stops_once_the_active_set_settles_and_finds_the_same_circuit():
    p = _problem()
    full = get_method("learned_mask", steps=300)
    early = get_method("learned_mask", steps=300, patience=40)
    s_full, s_early = full.node_scores(p), early.node_scores(p)
    assert full.diagnostics()["steps_run"] == 300
    assert early.diagnostics()["steps_run"] < 300
    k_full = smallest_k(lambda k: p.scores(p.train, keep_top(s_full, k)).loss, p.index.size, 0.15)
    k_early = smallest_k(lambda k: p.scores(p.train, keep_top(s_early, k)).loss, p.index.size, 0.15)
    assert k_early.met_target and _kept(p.index, keep_top(s_early, k_early.k)) <= PLANTED
    assert k_early.k <= k_full.k + 1


def _task_problem(task="with_as"):
    import circuitbench
    from circuitbench.tasks.encode import encode_task
    from circuitbench.tasks.load import get_task
    adapter = circuitbench.load_model("tiny-sparse", device="cpu")
    index = NodeIndex.of(adapter)
    rows = Batch.of(encode_task(get_task(task), adapter.tokenizer, "train"), adapter.device)
    values = torch.randn(index.value_size, generator=torch.Generator().manual_seed(0)) * 0.1
    return Problem(adapter, index, values, rows, 0, show_progress=False)


def test_length_groups_give_the_same_thresholds_as_one_padded_batch():
    """Sub-batches by prompt length are a sum of the same loss: the trained thresholds agree to rounding."""
    p = _task_problem()
    lengths = p.train.last.unique()
    assert len(lengths) > 4  # prompts of many lengths, so the groups really differ in padding
    one = get_method("learned_mask", steps=6, precision="float32", length_groups=1).node_scores(p)
    four = get_method("learned_mask", steps=6, precision="float32", length_groups=4).node_scores(p)
    assert (one - four).abs().max() < 1e-5
    assert (one - 0.1).abs().max() > 1e-3  # the thresholds moved


def test_bfloat16_pruning_finds_the_same_circuit_size_as_float32_on_the_toy_model():
    p = _problem()
    sizes = {}
    for precision in ("float32", "bfloat16"):
        scores = get_method("learned_mask", steps=300, precision=precision).node_scores(p)
        found = smallest_k(lambda k, s=scores: p.scores(p.train, keep_top(s, k)).loss, p.index.size, 0.15)
        assert found.met_target
        sizes[precision] = found.k
        assert _kept(p.index, keep_top(scores, found.k)) <= PLANTED
    assert sizes["bfloat16"] == sizes["float32"]


def test_the_fast_default_path_recovers_the_planted_circuit_as_the_slow_path_does():
    """Quality guard: today's defaults against the previous exact path (float32, 64 pairs, one padded batch)."""
    p = _problem()
    found = {}
    for name, kwargs in {"slow": dict(precision="float32", batch_pairs=64, length_groups=1), "fast": {}}.items():
        method = get_method("learned_mask", steps=300, **kwargs)
        scores = method.node_scores(p)
        found[name] = smallest_k(lambda k, s=scores: p.scores(p.train, keep_top(s, k)).loss, p.index.size, 0.15,
                                 method.native_k)
        assert found[name].met_target
        assert _kept(p.index, keep_top(scores, found[name].k)) <= PLANTED
    assert found["fast"].k <= 1.25 * found["slow"].k


def test_training_the_task_and_its_control_side_by_side_equals_two_separate_runs():
    import dataclasses

    p = _task_problem()
    control = dataclasses.replace(p, train=p.train.swapped())
    method = get_method("learned_mask", steps=6, precision="float32")
    task_alone, control_alone = method.node_scores(p), method.node_scores(control)
    joint = method.joint_scores([p, control])
    assert (joint[0] - task_alone).abs().max() < 1e-5 and (joint[1] - control_alone).abs().max() < 1e-5
    assert (task_alone - control_alone).abs().max() > 1e-3  # the two masks really differ
    assert method.native_ks == [int((joint[0] > 0).sum()), int((joint[1] > 0).sum())]


def test_length_groups_can_keep_pairs_whole():
    """Counterfactual ablation needs both members of a pair in one sub-batch: `keep_pairs` sorts pairs, not rows."""
    from circuitbench.circuits.methods.learned_mask import length_groups

    last = torch.tensor([3, 9, 8, 2, 5, 5, 1, 7])
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    groups = length_groups(last, rows, 2, "cpu", keep_pairs=True)
    for idx, width in groups:
        assert len(idx) % 2 == 0 and all(int(a) ^ 1 == int(b) for a, b in idx.view(-1, 2).tolist())
        assert width == int(last[idx].max()) + 1
    assert sorted(torch.cat([g for g, _ in groups]).tolist()) == rows.tolist()
    loose = length_groups(last, rows, 2, "cpu")
    assert any(len(idx) % 2 or any(a ^ 1 != b for a, b in idx.view(-1, 2).tolist()) for idx, _ in loose)


def test_a_warm_start_from_eap_starts_its_top_nodes_on_and_still_recovers_the_planted_circuit():
    from circuitbench.circuits.methods.attribution import gate_gradient

    p = _problem()
    one_step = get_method("learned_mask", steps=1, lr=1e-9, init="eap", warm_keep=4)
    tau = one_step.node_scores(p)
    eap = gate_gradient(p, p.train, 1.0, 64).abs().cpu()
    assert set(torch.nonzero(tau > 0).flatten().tolist()) == set(eap.topk(4).indices.tolist())
    scores = get_method("learned_mask", steps=300, init="eap", warm_keep=4).node_scores(p)
    found = smallest_k(lambda k: p.scores(p.train, keep_top(scores, k)).loss, p.index.size, 0.15)
    assert found.met_target and _kept(p.index, keep_top(scores, found.k)) <= PLANTED
