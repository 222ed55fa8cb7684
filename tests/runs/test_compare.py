"""circuitbench compare: several methods, the same tasks, curves, CPR / CMD, the plot."""

import math

import pytest

from circuitbench.cli import main
from circuitbench.results.report import collect
from circuitbench.results.store import read_unit


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    # 64 search examples: the same code as the default 512 (the bisection, the curves, the plot), an eighth the work
    code = main(["compare", "--methods", "eap,magnitude,random", "--tasks", "else_elif,while_return_true",
                 "--min-accuracy", "0", "--ablation", "zero", "--device", "cpu", "--out", str(out), "--quiet",
                 "--no-control", "--search-examples", "64"])
    assert code == 0
    return out


@pytest.mark.slow
def test_compare_writes_units_curves_and_the_plot(compared, capsys):
    rows = collect(compared)
    assert {r["method"] for r in rows} == {"eap", "magnitude", "random"} and len(rows) == 6
    assert all(r["cpr"] is not None and r["cmd"] is not None for r in rows)
    assert list(compared.glob("compare-*.svg")) and list(compared.glob("compare-*.png"))
    assert list(compared.glob("compare-*-kl.svg"))


@pytest.mark.slow
def test_cpr_and_cmd_recomputed_from_the_stored_curve_with_mibs_formula_equal_the_stored_values(compared):
    for path in compared.glob("*/*.seed0.parquet"):
        if path.name.endswith(".edges.parquet"):
            continue
        table, summary, _ = read_unit(path)

        listed = table.to_pylist()

        def curve(prefix, rows=listed):
            return sorted((float(r["metric"].removeprefix(prefix)), r["value"]) for r in rows
                          if r["metric"].startswith(prefix))

        signed, absolute = curve("curve_signed_f_"), curve("curve_f_")  # MIB: CPR signed ranking, CMD absolute
        assert [x for x, _ in signed] == [x for x, _ in absolute] == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                                                     0.1, 0.2, 0.5, 1.0]
        xs = [x for x, _ in signed]
        fs, ga = [f for _, f in signed], [f for _, f in absolute]
        cpr = sum((xs[i + 1] - xs[i]) * (fs[i] + fs[i + 1]) / 2 for i in range(len(xs) - 1))
        cmd = sum((xs[i + 1] - xs[i]) * (abs(1 - ga[i]) + abs(1 - ga[i + 1])) / 2 for i in range(len(xs) - 1))
        assert math.isclose(cpr, summary["cpr"], rel_tol=1e-12) and math.isclose(cmd, summary["cmd"], rel_tol=1e-12)
        grid = [r for r in table.to_pylist() if r["metric"].startswith("curve_nodes_f_")]
        assert [int(r["metric"].rsplit("_", 1)[1]) for r in grid][:3] == [1, 2, 4]
        for metric in ("loss", "accuracy", "kl"):  # the same sizes on the other metrics; all nodes is the model
            pts = curve(f"curve_{metric}_f_")
            assert [x for x, _ in pts] == xs and pts[-1][1] == 1.0, metric
            assert len(curve(f"curve_nodes_{metric}_f_")) == len(grid)
        m = {r["metric"]: r["value"] for r in table.to_pylist()}
        assert m["empty_kl"] > 0  # the empty circuit's KL from the model, which the KL curve is normalised by


@pytest.mark.slow
def test_compare_reruns_skip_finished_units(compared):
    before = {p: p.stat().st_mtime_ns for p in compared.glob("*/*.seed0.parquet")}
    assert main(["compare", "--methods", "eap,random", "--tasks", "else_elif", "--min-accuracy", "0",
                 "--ablation", "zero", "--device", "cpu", "--out", str(compared), "--quiet", "--no-control",
                 "--search-examples", "64"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


@pytest.mark.slow
def test_compare_runs_the_control_by_default_and_force_and_threads_are_honoured(tmp_path):
    import torch

    args = ["compare", "--methods", "eap", "--tasks", "while_return_true", "--ablation", "zero", "--device", "cpu",
            "--out", str(tmp_path), "--quiet", "--threads", "1", "--search-examples", "64"]
    before = torch.get_num_threads()
    try:
        assert main(args) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    (unit,) = tmp_path.glob("*/while_return_true.eap.seed0.parquet")
    _, summary, prov = read_unit(unit)
    assert prov.unit.control and summary["control_nodes"] is not None  # the board's protocol: control on
    stamp = unit.stat().st_mtime_ns
    assert main([*args, "--force"]) == 0
    assert unit.stat().st_mtime_ns != stamp


def test_compare_checks_every_method_name_before_any_compute(tmp_path, capsys):
    assert main(["compare", "--methods", "eap,nope", "--out", str(tmp_path)]) == 1
    assert "unknown method" in capsys.readouterr().err and not any(tmp_path.iterdir())
