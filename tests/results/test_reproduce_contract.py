"""The reproducibility contract itself: exact on one machine kind, the stated tolerances across CPU kinds."""

from pathlib import Path

from circuitbench.hardware import cpu_kind
from circuitbench.results.reproduce import EDGE_ATOL, NODE_ATOL, RTOL, differences, same_machine_kind
from circuitbench.results.store import read_unit

UNIT = Path(__file__).resolve().parents[2] / "baselines/results/tiny-sparse/if_equals.learned_mask.seed0.parquet"

STORED = {"status": "solved", "control_met_target": True, "nodes": 63, "edges": 222, "control_nodes": 120,
          "control_edges": None, "full_accuracy": 0.95, "full_loss": 0.10, "sufficiency_loss": 0.1324203759,
          "faithfulness": 0.8, "cmd": 0.04217304}


def test_on_one_machine_kind_every_number_must_be_equal():
    assert differences(STORED, dict(STORED), exact=True, same_circuit=True) == []
    moved = {**STORED, "sufficiency_loss": 0.1324204057}
    (problem,) = differences(STORED, moved, exact=True, same_circuit=True)
    assert problem.startswith("sufficiency_loss") and "must be equal" in problem


def test_across_cpu_kinds_the_measured_differences_hold_and_larger_ones_do_not():
    # the three differences measured between an AMX and an AVX-512 machine on the committed units
    measured = {**STORED, "sufficiency_loss": 0.1324204057, "cmd": 0.04217310}
    assert differences(STORED, measured, exact=False, same_circuit=True) == []
    assert differences(STORED, {**STORED, "nodes": 61, "edges": 205}, exact=False, same_circuit=False) == []
    off = {**STORED, "sufficiency_loss": STORED["sufficiency_loss"] * (1 + 10 * RTOL)}
    assert [p.split(":")[0] for p in differences(STORED, off, exact=False, same_circuit=True)] == ["sufficiency_loss"]
    # another circuit: its own losses are not compared, its size is, and so is its status
    assert differences(STORED, off, exact=False, same_circuit=False) == []
    far = {**STORED, "nodes": 63 + NODE_ATOL + 1, "status": "target_missed"}
    assert [p.split(":")[0] for p in differences(STORED, far, exact=False, same_circuit=False)] == ["status", "nodes"]
    big = {**STORED, "edges": 222 + 22}  # 10% of 222 is 22.2
    assert differences(STORED, big, exact=False, same_circuit=False) == []
    assert differences(STORED, {**STORED, "edges": 222 + 23}, exact=False, same_circuit=False)
    small = {**STORED, "edges": 40}
    assert differences(small, {**small, "edges": 40 + EDGE_ATOL}, exact=False, same_circuit=False) == []
    # the full model's numbers never depend on the circuit
    assert differences(STORED, {**STORED, "full_loss": 0.11}, exact=False, same_circuit=False)


def test_a_unit_without_a_recorded_cpu_kind_is_never_held_to_bits():
    _, _, prov = read_unit(UNIT)
    old = prov.model_copy(update={"cpu_kind": None})  # as units committed before the CPU kind was recorded
    assert not same_machine_kind(old, old)
    here = prov.model_copy(update={"cpu_kind": cpu_kind()})
    assert same_machine_kind(here, here)
    assert not same_machine_kind(here, here.model_copy(update={"threads": here.threads + 1}))
    assert not same_machine_kind(here, here.model_copy(update={"cpu_kind": "some-other-kind"}))


def test_circuit_eval_of_a_committed_unit_names_which_side_of_the_contract_it_is_on(capsys):
    from circuitbench.cli import main

    _, _, prov = read_unit(UNIT)
    assert main(["circuit", "eval", str(UNIT)]) == 0
    out = capsys.readouterr().out
    if prov.cpu_kind == cpu_kind():
        assert "reproduces its stored numbers exactly" in out
    else:  # made on another CPU kind (or before kinds were recorded): exact, or within the float tolerance
        assert "reproduces its stored numbers exactly" in out or (
            f"within rel {RTOL:g}" in out and f"measured now on {cpu_kind()}" in out), out


def test_the_eval_verdict_names_both_machines_unless_the_numbers_are_exact():
    from circuitbench.results.reproduce import verdict

    _, _, prov = read_unit(UNIT)
    here = {"cpu_kind": cpu_kind(), "threads": 2, "device": "cpu", "torch_version": "x"}
    assert verdict(prov, here, [(0.5, 0.5), (1.0, None)]) == "The saved circuit reproduces its stored numbers exactly."
    within = verdict(prov, here, [(0.1324204057, 0.1324203759)])
    assert f"within rel {RTOL:g}" in within and f"measured now on {cpu_kind()}" in within
    beyond = verdict(prov, here, [(0.14, 0.1324203759)])
    assert beyond.startswith("Some numbers differ") and f"{prov.threads} threads" in beyond
