"""Units: identity, key, differences; the method registry validates hyperparameters."""

import pytest

from circuitbench.circuits.methods import get_method, hyperparameter_names, method_names
from circuitbench.errors import CircuitbenchError
from circuitbench.results.unit import ModelRef, Unit, UnitResult, summary_fields


def _unit(**over):
    base = dict(model=ModelRef(name="m", weights_sha256="abc"), task="else_elif", task_hash="h1",
                method="learned_mask", method_kwargs={"steps": 5})
    return Unit(**{**base, **over})


def test_equal_settings_give_equal_keys_and_any_setting_changes_it():
    a = _unit()
    assert a.key() == _unit().key() and len(a.key()) == 16
    for over in (dict(min_accuracy=0.85), dict(control=False), dict(dtype="bfloat16"), dict(search_examples=64),
                 dict(model=ModelRef(name="m", weights_sha256="other")), dict(method_kwargs={"steps": 6}),
                 dict(task_hash="h2"), dict(seed=1), dict(calibrate=True), dict(ablation="zero")):
        assert _unit(**over).key() != a.key(), over


def test_differences_name_every_changed_setting():
    d = _unit(min_accuracy=0.85, model=ModelRef(name="m", weights_sha256="x")).differences(_unit())
    assert d == ["min_accuracy (then 0.9, now 0.85)", "model.weights_sha256 (then 'abc', now 'x')"]


def test_units_are_frozen_and_refuse_unknown_fields():
    with pytest.raises(Exception, match="frozen"):
        _unit().seed = 3  # type: ignore[misc]
    with pytest.raises(Exception, match="extra"):
        _unit(split="test")


def test_summary_fields_are_the_result_numbers_in_declaration_order():
    fields = summary_fields()
    assert fields[:3] == ["status", "full_accuracy", "full_loss"]
    assert "unit" not in fields and "measurements" not in fields and "circuit" not in fields
    r = UnitResult(unit=_unit(), status="unsolved", full_accuracy=0.5)
    row = r.summary()
    assert list(row)[:5] == ["model", "task", "method", "level", "seed"] and row["full_accuracy"] == 0.5
    assert row["level"] == "nodes"


def test_method_registry_validates_hyperparameters():
    assert {"learned_mask", "random"} <= set(method_names())
    assert "steps" in hyperparameter_names("learned-mask")
    assert get_method("learned-mask", steps=7).steps == 7
    with pytest.raises(CircuitbenchError, match=r"--method random does not take steps .* no hyperparameters"):
        get_method("random", steps=5)
    with pytest.raises(CircuitbenchError, match="steps: Input should be a valid integer"):
        get_method("learned_mask", steps="many")
    with pytest.raises(CircuitbenchError, match="Did you mean 'learned_mask'"):
        get_method("learned_msk")


def test_cli_reports_a_hyperparameter_the_method_does_not_take(capsys):
    from circuitbench.cli import main

    assert main(["run", "--method", "random", "--steps", "5", "--tasks", "while_return_true"]) == 1
    assert "--method random does not take steps" in capsys.readouterr().err
