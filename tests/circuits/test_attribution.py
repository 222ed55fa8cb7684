"""Attribution methods against known answers: the planted toy circuit, exact patching, IG completeness."""

import dataclasses
import math

import pytest
import torch

from circuitbench.circuits.ablation import task_mean
from circuitbench.circuits.curves import MIB_FRACTIONS, Curve
from circuitbench.circuits.masks import NodeIndex
from circuitbench.circuits.methods import get_method
from circuitbench.circuits.methods.attribution import gate_gradient
from circuitbench.circuits.problem import Problem
from circuitbench.protocols import Batch
from tests.circuits.toy import PLANTED, toy_adapter, toy_task


def _problem(counterfactual=False):
    adapter = toy_adapter()
    index = NodeIndex.of(adapter)
    rows = Batch.of(toy_task(), adapter.device)
    return Problem(adapter, index, task_mean(adapter, index, rows), rows, 0, show_progress=False,
                   counterfactual=counterfactual)


def _named(p, scores, tol=1e-6):
    out = set()
    for i, s in enumerate(p.index.sites):
        part = scores[p.index.slice(i)]
        out |= {(s.name, c) for c in torch.nonzero(part > tol).flatten().tolist()}
    return out


def _m(p, gates):
    return p.scores(p.train, gates).logit_diff


@pytest.mark.parametrize("name", ["eap", "eap_ig", "activation_patching"])
def test_gradient_and_patching_methods_score_only_the_planted_circuit(name):
    p = _problem()
    scores = get_method(name).node_scores(p)
    assert scores.shape == (p.index.size,) and (scores >= 0).all()
    order = torch.argsort(scores, descending=True)
    top = _named(p, torch.zeros_like(scores).index_fill_(0, order[:3], 1.0), tol=0.5)
    assert top <= PLANTED, top - PLANTED
    planted = sum(float(scores[p.index.offsets[[s.name for s in p.index.sites].index(n)] + c]) for n, c in PLANTED)
    assert planted > 0.75 * float(scores.sum())  # distractors reach the answers only through the norms' scale


def test_activation_patching_is_the_exact_single_node_ablation_effect():
    p = _problem()
    scores = get_method("activation_patching", nodes_per_pass=3).node_scores(p)
    ones = torch.ones(p.index.size)
    for node in (0, 5, p.index.size - 1):
        gates = ones.clone()
        gates[node] = 0.0
        assert scores[node].item() == pytest.approx(abs(_m(p, ones) - _m(p, gates)), abs=1e-4)


def test_eap_tracks_activation_patching_to_first_order():
    p = _problem()
    eap = get_method("eap").node_scores(p)
    exact = get_method("activation_patching").node_scores(p)
    top = torch.argsort(exact, descending=True)[:3]
    assert set(torch.argsort(eap, descending=True)[:3].tolist()) == set(top.tolist())


def test_eap_ig_attributions_sum_to_the_metric_difference():
    p = _problem()
    steps = 64
    total = sum(gate_gradient(p, p.train, k / steps, 64) for k in range(1, steps + 1)) / steps
    gap = _m(p, torch.ones(p.index.size)) - _m(p, torch.zeros(p.index.size))
    assert float(total.sum()) == pytest.approx(gap, rel=0.05)


def test_magnitude_is_the_mean_deviation_from_the_ablation_value():
    p = _problem()
    scores = get_method("magnitude", max_examples=None).node_scores(p)
    name = "0.mlp.act_in"
    _, cache = p.adapter.run_with_cache(p.train.tokens, names=[name])
    i = [s.name for s in p.index.sites].index(name)
    mu = p.index.split_values(p.ablation_values)[name]
    expect = (cache[name] - mu).abs().mean(dim=(0, 1))
    assert torch.allclose(scores[p.index.slice(i)], expect, atol=1e-5)


def test_methods_declare_their_cost_in_passes():
    assert get_method("eap", batch=64).cost(256, 1000) == {"forward": 4, "backward": 4}
    assert get_method("eap_ig", batch=64, steps=5).cost(256, 1000) == {"forward": 20, "backward": 20}
    assert get_method("magnitude", batch=64).cost(256, 1000) == {"forward": 4, "backward": 0}
    assert get_method("activation_patching", batch=64).cost(64, 10)["forward"] == 11
    assert get_method("learned_mask", steps=400).cost(512, 10) == {"forward": 400, "backward": 400}
    # the passes over the examples a method uses, not over the whole train split
    assert get_method("eap", batch=64, max_examples=256).cost(1024, 1000) == {"forward": 4, "backward": 4}
    assert get_method("activation_patching", batch=64, max_examples=16).cost(1024, 10)["forward"] == 11


def test_curve_areas_on_both_axes():
    perfect = Curve(MIB_FRACTIONS, tuple(range(10)), (1.0,) * 10)
    assert perfect.cpr() == pytest.approx(0.999) and perfect.cmd() == 0.0
    assert perfect.cpr_log() == pytest.approx(1.0)
    late = Curve(MIB_FRACTIONS, tuple(range(10)), (0.0,) * 6 + (1.0,) * 4)  # faithful only from 10 %
    assert late.cpr() > 0.9 and late.cpr_log() < 0.5  # the linear axis hides what the log axis sees
    assert math.isnan(Curve(MIB_FRACTIONS, tuple(range(10)), (math.nan,) * 10).cpr())


def _auroc(scores, positives):
    pos = [s for i, s in enumerate(scores) if i in positives]
    neg = [s for i, s in enumerate(scores) if i not in positives]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("counterfactual", [False, True], ids=["task-mean", "counterfactual"])
@pytest.mark.parametrize("name, low", [("learned_mask", 0.95), ("eap", 0.95), ("eap_ig", 0.95),
                                       ("activation_patching", 0.95)])
def test_planted_circuit_auroc(name, low, counterfactual):
    p = _problem(counterfactual)
    kw = {"steps": 300} if name == "learned_mask" else {}
    scores = get_method(name, **kw).node_scores(p).tolist()
    names = [s.name for s in p.index.sites]
    planted = {p.index.offsets[names.index(n)] + c for n, c in PLANTED}
    assert _auroc(scores, planted) >= low


def test_random_ranking_auroc_is_near_chance_and_magnitude_is_reported():
    p = _problem()
    names = [s.name for s in p.index.sites]
    planted = {p.index.offsets[names.index(n)] + c for n, c in PLANTED}
    aucs = [_auroc(get_method("random").node_scores(dataclasses.replace(p, seed=s)).tolist(), planted)
            for s in range(20)]
    assert 0.35 <= sum(aucs) / len(aucs) <= 0.65
    mag = _auroc(get_method("magnitude").node_scores(p).tolist(), planted)
    assert 0.0 <= mag <= 1.0  # reported in BENCHMARKS.md; no bar (it ignores what reaches the answer)


def test_counterfactual_patching_and_eap_agree_and_zero_where_partners_agree():
    """Under interchange ablation a node whose value is the same in both members of every pair cannot matter:
    exact patching gives it zero, and EAP (x - x_partner = 0) too; the planted nodes carry the whole effect."""
    p = _problem(counterfactual=True)
    ap = get_method("activation_patching", max_examples=None).node_scores(p)
    eap = get_method("eap", max_examples=None).node_scores(p)
    names = [s.name for s in p.index.sites]
    planted = {p.index.offsets[names.index(n)] + c for n, c in PLANTED}
    others = torch.tensor([i not in planted for i in range(p.index.size)])
    assert ap[others].abs().max() < 1e-5 and eap[others].abs().max() < 1e-5
    top = set(torch.argsort(ap, descending=True)[: len(planted)].tolist())
    assert top == set(torch.argsort(eap, descending=True)[: len(planted)].tolist())


def test_signed_scores_are_kept_for_mibs_cpr():
    p = _problem()
    for name in ("eap", "eap_ig", "activation_patching"):
        m = get_method(name)
        scores = m.node_scores(p)
        assert torch.equal(m.signed_scores.abs(), scores)
