from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from circuitbench.errors import SpecError
from circuitbench.tasks.load import _display, load_spec, specs_dir
from circuitbench.tasks.spec import GENERATOR_VERSION, TaskSpec, schema_json


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    last = keys[-1]
    if isinstance(d, list):
        d[int(last)] = value
    else:
        d[last] = value


MISTAKES: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("missing field", lambda s: s.pop("description"), ["toy.yaml: description: Field required"]),
    (
        "misspelt field",
        lambda s: s.update(descripton=s.pop("description")),
        ["toy.yaml: descripton: unknown field; allowed:", "did you mean 'description'?"],
    ),
    (
        "unknown nested field",
        lambda s: _set(s, "train.templates.0.sufix", "\n"),
        ["train.templates.0.sufix: unknown field; allowed: prompt, suffix, values", "did you mean 'suffix'"],
    ),
    ("wrong type", lambda s: _set(s, "train.n_pairs", "many"), ["train.n_pairs: Input should be a valid integer"]),
    (
        "out of range",
        lambda s: _set(s, "test.n_pairs", 0),
        ["test.n_pairs: Input should be greater than or equal to 1"],
    ),
    (
        "bad literal",
        lambda s: _set(s, "provenance", "paper"),
        ["provenance: Input should be 'confirmed' or 'reconstructed' (got 'paper')"],
    ),
    ("bad name", lambda s: _set(s, "name", "Toy Task"), ["name: String should match pattern"]),
    (
        "one completion",
        lambda s: _set(s, "completions", ['"']),
        ["completions.1: Field required"],
    ),
    (
        "unquoted number in pool",
        lambda s: _set(s, "pools.word", [1, 2]),
        ["pools.word: item 0: expected a string or a mapping, got int 1 (quote numbers"],
    ),
    (
        "number in a mapping pool",
        lambda s: _set(s, "pools.pair", [{"a": 1}]),
        ["pools.pair: item 0, slot 'a': expected a string, got int 1 (quote numbers"],
    ),
    (
        "mixed pool",
        lambda s: _set(s, "pools.word", ["a", {"b": "c"}]),
        ["pools.word: item 1: expected a string like item 0"],
    ),
    (
        "uneven mapping pool",
        lambda s: _set(s, "pools.pair", [{"a": "1", "b": "2"}, {"a": "3"}]),
        ["toy.yaml: pools.pair.1: keys ['a'] differ from the first entry's ['a', 'b']"],
    ),
    (
        "unknown slot",
        lambda s: _set(s, "train.templates.0.prompt", "${nope} = ${q}${word}"),
        ["train.templates.0.prompt: unknown slot(s) ${nope}; defined: q, var, word"],
    ),
    (
        "unknown slot in a completion",
        lambda s: _set(s, "completions", ['"', "'${missing}"]),
        ["completions.1: unknown slot(s) ${missing} (in train.templates.0)"],
    ),
    (
        "sides set different slots",
        lambda s: _set(s, "contrast.sides", [{"q": '"'}, {"p": "'"}]),
        ["contrast.sides: both sides must set the same slots, got ['q'] and ['p']"],
    ),
    (
        "identical sides",
        lambda s: _set(s, "contrast.sides", [{"q": '"'}, {"q": '"'}]),
        ["contrast.sides: the two sides are identical"],
    ),
    (
        "contrast slot also in a pool",
        lambda s: _set(s, "pools.q", ["x"]),
        ["contrast.sides: slot(s) ['q'] are also filled by a pool"],
    ),
    (
        "template without the contrast",
        lambda s: _set(s, "train.templates.1.prompt", "${var} = 1"),
        ["train.templates.1.prompt: uses no contrast slot ['q']"],
    ),
    (
        "prompt ends in whitespace",
        lambda s: _set(s, "test.templates.0.prompt", "${var} = ${q}${word} "),
        ["test.templates.0.prompt: ends in whitespace"],
    ),
    (
        "shared train/test template",
        lambda s: _set(s, "test.templates.0.prompt", "${var} = ${q}${word}"),
        ["test.templates.0.prompt: also a train template; splits need disjoint ones"],
    ),
    (
        "split pools overlap",
        lambda s: (_set(s, "train.pools", {"word": ["a", "b"]}), _set(s, "test.pools", {"word": ["b", "c"]})),
        ["test.pools.word: values also in train.pools.word: ['b']"],
    ),
    (
        "completion uses the contrast",
        lambda s: _set(s, "completions", ["${q}", "'"]),
        ["completions.0: uses a contrast slot"],
    ),
    (
        "none without reason",
        lambda s: _set(s, "check", {"kind": "none"}),
        ["check.reason: required when check.kind is 'none'"],
    ),
    (
        "reconstructed without saying so",
        lambda s: _set(s, "provenance", "reconstructed"),
        ["description: a reconstructed task must say in its description that it is one"],
    ),
    (
        "slots in a cycle",
        lambda s: (_set(s, "pools.a", ["${b}"]), _set(s, "pools.b", ["${a}"])),
        ["train.pools: slots refer to each other: a -> b -> a"],
    ),
    (
        "slot filled by two pools",
        lambda s: _set(s, "pools.pair", [{"word": "x", "other": "y"}]),
        ["pools.pair: slot 'word' is also filled by pool 'word'"],
    ),
    (
        "unknown distinct slot",
        lambda s: _set(s, "distinct", [["var", "nope"]]),
        ["distinct.0: ['nope'] are not pool slots"],
    ),
    (
        "bad check kind",
        lambda s: _set(s, "check.kind", "ast"),
        ["check.kind: Input should be 'compile', 'exec' or 'none'"],
    ),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_malformed_spec_error_names_file_field_and_expectation(
    mistake: tuple[str, Callable[[dict[str, Any]], None], list[str]],
    toy: dict[str, Any],
    write_spec: Callable[..., Path],
) -> None:
    _, mutate, expected = mistake
    mutate(toy)
    path = write_spec(toy)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    for fragment in expected:
        assert fragment in message, message
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), line


def test_the_toy_spec_is_valid(toy: dict[str, Any], write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(toy))
    assert spec.name == "toy" and spec.check.kind == "compile"


def test_several_mistakes_are_reported_together(toy: dict[str, Any], write_spec: Callable[..., Path]) -> None:
    toy["train"]["templates"][0]["prompt"] = "${nope} = ${q}"
    toy["check"] = {"kind": "none"}
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(toy))
    assert "unknown slot(s) ${nope}" in str(err.value) and "check.reason: required" in str(err.value)


def test_file_name_must_match_spec_name(toy: dict[str, Any], write_spec: Callable[..., Path]) -> None:
    path = write_spec(toy, name="other")
    with pytest.raises(SpecError, match=r"other\.yaml: name: 'toy' must equal the file name 'other'"):
        load_spec(path)


def test_yaml_syntax_error_gives_line_and_column(write_spec: Callable[..., Path]) -> None:
    path = write_spec("name: toy\npools:\n  word: [a, b\n")
    with pytest.raises(SpecError, match=r"toy\.yaml:\d+:\d+: not valid YAML"):
        load_spec(path)


def test_top_level_must_be_a_mapping(write_spec: Callable[..., Path]) -> None:
    with pytest.raises(SpecError, match=r"toy\.yaml: expected a mapping of spec fields, got list"):
        load_spec(write_spec("- a\n- b\n"))


def test_bundled_files_are_shown_as_task_specs_paths() -> None:
    assert _display(specs_dir() / "while_return_true.yaml") == "task_specs/while_return_true.yaml"


def test_committed_json_schema_is_current() -> None:
    committed = (specs_dir() / "schema.json").read_text(encoding="utf-8")
    assert committed == schema_json(), (
        "task_specs/schema.json is stale; regenerate it with `circuitbench tasks schema > task_specs/schema.json`"
    )


def test_schema_carries_field_docstrings() -> None:
    schema = TaskSpec.model_json_schema()
    assert "first token is scored" in schema["properties"]["completions"]["description"]
    assert schema["additionalProperties"] is False


def test_task_hash_ignores_prose_but_not_examples(toy: dict[str, Any]) -> None:
    base = TaskSpec.model_validate(toy).task_hash
    assert len(base) == 16 and TaskSpec.model_validate(toy).task_hash == base
    prose = {**toy, "description": "Reworded.", "probes": "other words"}
    assert TaskSpec.model_validate(prose).task_hash == base
    changed = {**toy, "pair_seed": 1}
    assert TaskSpec.model_validate(changed).task_hash != base
    pools = {**toy, "pools": {**toy["pools"], "word": ["alpha", "beta"]}}
    assert TaskSpec.model_validate(pools).task_hash != base
    assert GENERATOR_VERSION  # part of the hashed payload


def test_invert_swaps_completions_and_names_the_control(toy: dict[str, Any]) -> None:
    spec = TaskSpec.model_validate(toy)
    inv = spec.invert()
    assert inv.name == "toy:inverted" and inv.inverted and inv.base_name == "toy"
    assert inv.completions == spec.completions[::-1]
    assert inv.task_hash != spec.task_hash
    assert inv.invert() == spec


def test_specs_are_frozen(toy: dict[str, Any]) -> None:
    spec = TaskSpec.model_validate(toy)
    with pytest.raises(Exception, match="frozen"):
        spec.pair_seed = 3  # type: ignore[misc]
