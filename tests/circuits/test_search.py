import math

from circuitbench.circuits.search import smallest_k


def test_bisection_finds_the_smallest_k_meeting_the_target():
    calls = []

    def loss(k):
        calls.append(k)
        return 1.0 / (1 + k)  # non-increasing in k

    r = smallest_k(loss, 1000, 0.01)
    assert r.met_target and r.k == 99 and loss(99) <= 0.01 < loss(98)
    assert r.evaluations <= 2 + math.ceil(math.log2(1000))  # each k evaluated once


def test_a_target_no_k_meets_returns_all_nodes_and_says_so():
    r = smallest_k(lambda k: 1.0, 50, 0.5)
    assert not r.met_target and r.k == 50


def test_a_non_monotone_loss_still_returns_a_k_that_meets_the_target():
    losses = {k: (0.1 if k in (3, 10) or k >= 20 else 0.9) for k in range(33)}
    r = smallest_k(lambda k: losses[k], 32, 0.2)
    assert r.met_target and losses[r.k] <= 0.2


def test_the_control_case_the_full_model_misses_but_the_methods_own_circuit_meets():
    """Inverted labels: k = n (the full model) is the worst circuit; the mask's own size is searched below."""
    losses = {k: (2.0 if k > 40 else (0.1 if k >= 12 else 0.9)) for k in range(101)}
    assert not smallest_k(lambda k: losses[k], 100, 0.2).met_target  # without the native size: missed
    r = smallest_k(lambda k: losses[k], 100, 0.2, native=30)
    assert r.met_target and r.k == 12


def test_a_native_size_that_misses_falls_back_to_all_nodes_and_reports_the_native_size_when_both_miss():
    losses = {k: (0.1 if k >= 60 else 0.9) for k in range(101)}
    r = smallest_k(lambda k: losses[k], 100, 0.2, native=30)
    assert r.met_target and r.k == 60
    r = smallest_k(lambda k: 1.0, 100, 0.2, native=30)
    assert not r.met_target and r.k == 30
