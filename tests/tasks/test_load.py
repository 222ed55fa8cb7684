import importlib.resources
import shutil
from pathlib import Path

import pytest

from circuitbench.errors import TaskError
from circuitbench.tasks.load import TASK_NAMES, get_task, list_specs, load_spec, spec_names, specs_dir
from circuitbench.tasks.spec import TaskSpec


def test_all_twenty_paper_tasks_are_bundled_in_paper_order() -> None:
    assert len(TASK_NAMES) == 20
    assert spec_names() == list(TASK_NAMES)
    specs = list_specs()
    assert [s.name for s in specs] == list(TASK_NAMES)
    assert all(isinstance(s, TaskSpec) for s in specs)


def test_specs_resolve_through_importlib_resources() -> None:
    root = importlib.resources.files("circuitbench.task_specs")
    assert root.joinpath("set_or_string.yaml").is_file()
    assert Path(str(root)) == specs_dir()


def test_provenance_matches_the_paper() -> None:
    confirmed = {s.name for s in list_specs() if s.provenance == "confirmed"}
    assert confirmed == {
        "single_double_quote",
        "bracket_counting",
        "set_or_string",
        "set_or_string_fixedvarname",
        "while_return_true",
        "else_elif",
    }
    for s in list_specs():
        if s.provenance == "reconstructed":
            assert "reconstructed from the task name" in s.description.lower()


def test_default_sizes_and_prompt_limit() -> None:
    for s in list_specs():
        assert s.train.n_pairs >= 512 and s.test.n_pairs >= 128, s.name
        assert s.max_tokens == 255


def test_unknown_task_lists_options_and_closest() -> None:
    with pytest.raises(TaskError) as err:
        get_task("set_or_strng")
    msg = str(err.value)
    assert "unknown task 'set_or_strng'" in msg
    assert "Did you mean 'set_or_string'?" in msg
    assert "while_return_true" in msg
    with pytest.raises(TaskError, match="Did you mean 'var_swap'"):
        load_spec("var_swp")


def test_inverted_control_is_addressable() -> None:
    inv = get_task("var_swap:inverted")
    base = get_task("var_swap")
    assert inv.name == "var_swap:inverted" and inv.inverted
    assert inv.completions == base.completions[::-1]
    assert load_spec("var_swap:inverted") == inv
    with pytest.raises(TaskError, match="Did you mean 'var_swap:inverted'"):
        get_task("var_swop:inverted")


def test_load_by_path_and_missing_path(tmp_path: Path) -> None:
    copy = tmp_path / "with_as.yaml"
    shutil.copy(specs_dir() / "with_as.yaml", copy)
    assert load_spec(copy) == get_task("with_as")
    assert load_spec(str(copy)).task_hash == get_task("with_as").task_hash
    with pytest.raises(TaskError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_reloading_an_edited_file_sees_the_change(tmp_path: Path) -> None:
    path = tmp_path / "with_as.yaml"
    shutil.copy(specs_dir() / "with_as.yaml", path)
    first = load_spec(path)
    path.write_text(path.read_text().replace("seed: 0", "seed: 7") + "\n")
    assert load_spec(path).pair_seed == 7 and first.pair_seed == 0
