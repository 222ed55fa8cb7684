import time
from typing import Any

import pytest

from circuitbench.errors import TaskError
from circuitbench.tasks.checks import check_pairs, check_task
from circuitbench.tasks.load import get_task, spec_names
from circuitbench.tasks.pairs import make_pairs
from circuitbench.tasks.spec import TaskSpec


@pytest.mark.parametrize("name", spec_names())
def test_every_example_of_every_task_passes_its_check(name: str) -> None:
    spec = get_task(name)
    report = check_task(spec)
    assert report.kind in ("compile", "exec")  # every bundled task is checkable
    assert report.n_examples == 2 * (spec.train.n_pairs + spec.test.n_pairs)
    assert report.ok, "\n".join(str(f) for f in report.failures[:10])


def _exec_toy(toy: dict[str, Any], incorrect_body: str = "2", timeout_s: float = 2.0) -> TaskSpec:
    toy = {
        **toy,
        "contrast": {"detail": "the value", "sides": [{"v": "1"}, {"v": "2"}]},
        "completions": [" 1", " " + incorrect_body],
        "pools": {"name": ["a", "b", "c", "d", "e", "f"]},
        "train": {"n_pairs": 3, "templates": [{"prompt": "${name} = ${v}\nassert ${name} ==", "suffix": "\n"}]},
        "test": {"n_pairs": 2, "templates": [{"prompt": "${name} = ${v}\n\nassert ${name} ==", "suffix": "\n"}]},
        "check": {"kind": "exec", "timeout_s": timeout_s},
    }
    return TaskSpec.model_validate(toy)


def test_compile_check_reports_an_incorrect_completion_that_compiles(toy: dict[str, Any]) -> None:
    # Both quotes also close with a suffix that ends in a comment, so nothing tells them apart.
    toy["completions"] = ["\"  # '", "'  # \""]
    spec = TaskSpec.model_validate(toy)
    report = check_pairs(spec, make_pairs(spec, "test"))
    assert len(report.failures) == 2 * spec.test.n_pairs
    assert all(f.completion == "incorrect" and f.problem == "also compiles" for f in report.failures)


def test_compile_check_reports_a_correct_completion_that_does_not_compile(toy: dict[str, Any]) -> None:
    toy["train"]["templates"][0]["suffix"] = "\n)"
    spec = TaskSpec.model_validate(toy)
    report = check_pairs(spec, make_pairs(spec, "train"))
    bad = [f for f in report.failures if f.completion == "correct"]
    assert bad and all("fails to compile: SyntaxError" in f.problem for f in bad)
    assert "train pair" in str(bad[0]) and "correct completion fails to compile" in str(bad[0])


def test_exec_check_runs_snippets_and_catches_wrong_answers(toy: dict[str, Any]) -> None:
    spec = _exec_toy(toy)
    assert check_task(spec).ok
    # Side 1's answer `== 1 or True` is always true, so on side 0 the incorrect answer runs too.
    wrong = _exec_toy(toy, incorrect_body="1 or True")
    report = check_task(wrong)
    assert report.failures and {f.side for f in report.failures} == {0}
    assert all(f.completion == "incorrect" and f.problem == "also runs" for f in report.failures)


def test_exec_check_times_out_a_snippet_that_hangs(toy: dict[str, Any]) -> None:
    spec = _exec_toy(toy, incorrect_body="2 or exec('while True: pass')", timeout_s=0.2)
    t0 = time.perf_counter()
    report = check_task(spec, splits=["test"])
    assert report.ok  # a hanging incorrect completion counts as failing, as it should
    assert time.perf_counter() - t0 < 10


def test_exec_check_has_no_network(toy: dict[str, Any]) -> None:
    spec = _exec_toy(toy)
    pairs = make_pairs(spec, "test")
    net = "\nimport socket\nsocket.create_connection(('localhost', 9))\n"
    pairs = [type(p)(**{**{f: getattr(p, f) for f in p.__slots__}, "suffixes": (net, net)}) for p in pairs]
    report = check_pairs(spec, pairs)
    problems = [f.problem for f in report.failures if f.completion == "correct"]
    assert problems and all("network access is disabled" in p for p in problems)


def test_controls_are_not_checked() -> None:
    with pytest.raises(TaskError, match="wrong by design; check with_as"):
        check_task(get_task("with_as:inverted"))


def test_unchecked_kind_reports_nothing(toy: dict[str, Any]) -> None:
    toy["check"] = {"kind": "none", "reason": "illustration only"}
    spec = TaskSpec.model_validate(toy)
    report = check_task(spec)
    assert report.ok and report.kind == "none" and report.n_examples == 2 * (12 + 6)
