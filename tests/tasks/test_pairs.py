import hashlib
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from circuitbench.errors import SpecError, TaskError
from circuitbench.tasks.load import get_task, list_specs, spec_names
from circuitbench.tasks.pairs import Pair, make_pairs, render
from circuitbench.tasks.spec import TaskSpec


def _digest(pairs: list[Pair]) -> str:
    blob = json.dumps([[p.pair_id, p.template, p.prompts, p.answers, p.suffixes] for p in pairs])
    return hashlib.sha256(blob.encode()).hexdigest()


# Recorded once; a change means pairs are no longer reproducible from the same spec and seed.
# If the generator was changed on purpose, bump GENERATOR_VERSION and record the new digests.
TOY_DIGESTS = {
    "train": "ccc2ce6de5fc697d2e8f515f9783f094340c5c53d239d8c3db508e5d73b31ff7",
    "test": "03de090ed1629c3e2c8f522040d0f18ea38644af1ad766de24e5af97bcc19d83",
}


def test_generation_matches_recorded_digests(toy: dict[str, Any]) -> None:
    spec = TaskSpec.model_validate(toy)
    for split, digest in TOY_DIGESTS.items():
        assert _digest(make_pairs(spec, split)) == digest


def test_generation_is_identical_in_a_fresh_process_with_another_hash_seed() -> None:
    code = (
        "import hashlib, json\n"
        "from circuitbench.tasks.load import list_specs\n"
        "from circuitbench.tasks.pairs import make_pairs\n"
        "h = hashlib.sha256()\n"
        "for s in list_specs():\n"
        "    for split in ('train', 'test'):\n"
        "        for p in make_pairs(s, split):\n"
        "            h.update(json.dumps([p.task, p.pair_id, p.prompts, p.answers, p.suffixes]).encode())\n"
        "print(h.hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    here = hashlib.sha256()
    for s in list_specs():
        for split in ("train", "test"):
            for p in make_pairs(s, split):
                here.update(json.dumps([p.task, p.pair_id, p.prompts, p.answers, p.suffixes]).encode())
    assert out.stdout.strip() == here.hexdigest()


@pytest.mark.parametrize("name", spec_names())
def test_every_task_gives_distinct_contrast_pairs(name: str) -> None:
    spec = get_task(name)
    train, test = make_pairs(spec, "train"), make_pairs(spec, "test")
    assert len(train) == spec.train.n_pairs >= 512 and len(test) == spec.test.n_pairs >= 128
    for split, pairs in (("train", train), ("test", test)):
        assert [p.pair_id for p in pairs] == list(range(len(pairs)))
        assert len({p.prompts for p in pairs}) == len(pairs)
        for p in pairs:
            assert p.task == name and p.split == split and p.task_hash == spec.task_hash
            assert p.prompts[0] != p.prompts[1]
            assert p.answers[0] != p.answers[1]
            assert p.correct(0) == p.incorrect(1) and p.correct(1) == p.incorrect(0)
            assert all(prompt == prompt.rstrip() for prompt in p.prompts)
            assert all(prompt.count("\n") >= 2 for prompt in p.prompts), "prompts are a few lines of code"
            assert "${" not in "".join(p.prompts + p.answers + p.suffixes)
    assert not {q for p in train for q in p.prompts} & {q for p in test for q in p.prompts}
    # templates are balanced: each is used n_pairs / n_templates times (give or take one)
    counts = [sum(p.template == t for p in train) for t in range(len(spec.train.templates))]
    assert max(counts) - min(counts) <= 1


def test_train_and_test_templates_are_disjoint_for_every_task() -> None:
    for s in list_specs():
        assert not {t.prompt for t in s.train.templates} & {t.prompt for t in s.test.templates}
        assert len(s.train.templates) >= 3 and len(s.test.templates) >= 2, s.name


@pytest.mark.parametrize(
    ("name", "side0", "side1"),
    [
        ("set_or_string", "set()", '""'),
        ("set_or_string_fixedvarname", "current = set()", 'current = ""'),
        ("while_return_true", "while True", "return True"),
    ],
)
def test_confirmed_pairs_differ_only_in_the_contrast(name: str, side0: str, side1: str) -> None:
    for p in make_pairs(get_task(name), "test"):
        head = p.prompts[0].rfind(side0)
        assert p.prompts[0][:head] + side1 + p.prompts[0][head + len(side0) :] == p.prompts[1]


def test_bracket_pairs_differ_by_one_opening_bracket() -> None:
    for p in make_pairs(get_task("bracket_counting"), "test"):
        i = next(i for i, (a, b) in enumerate(zip(*p.prompts, strict=False)) if a != b)
        assert p.prompts[1][i] == "[" and p.prompts[1][:i] + p.prompts[1][i + 1 :] == p.prompts[0]


def test_quote_pairs_differ_in_exactly_one_character() -> None:
    for p in make_pairs(get_task("single_double_quote"), "train"):
        diff = [(a, b) for a, b in zip(*p.prompts, strict=True) if a != b]
        assert diff in ([('"', "'")], [("'", '"')])
        assert p.answers == ('"', "'")


def test_inverted_control_has_the_same_prompts_and_swapped_answers() -> None:
    base = make_pairs(get_task("else_elif"), "test")
    inv = make_pairs(get_task("else_elif:inverted"), "test")
    assert [p.prompts for p in inv] == [p.prompts for p in base]
    assert [p.answers for p in inv] == [p.answers[::-1] for p in base]
    assert {p.task for p in inv} == {"else_elif:inverted"}
    assert inv[0].task_hash != base[0].task_hash


def test_splits_do_not_depend_on_each_other() -> None:
    spec = get_task("var_if")
    test_first = make_pairs(spec, "test")
    make_pairs(spec, "train")
    assert make_pairs(spec, "test") == test_first


def test_seed_changes_the_pairs(toy: dict[str, Any]) -> None:
    a = make_pairs(TaskSpec.model_validate(toy), "train")
    b = make_pairs(TaskSpec.model_validate({**toy, "pair_seed": 1}), "train")
    assert [p.prompts for p in a] != [p.prompts for p in b]


def test_too_few_distinct_pairs_is_an_error(toy: dict[str, Any]) -> None:
    toy["pools"] = {"word": ["alpha"], "var": ["x", "y"]}
    with pytest.raises(SpecError, match=r"toy: train\.templates\.\d: found only 2 distinct pairs for the 6"):
        make_pairs(TaskSpec.model_validate(toy), "train")


def test_unknown_split_is_an_error(toy: dict[str, Any]) -> None:
    with pytest.raises(TaskError, match="unknown split 'validation'"):
        make_pairs(TaskSpec.model_validate(toy), "validation")  # type: ignore[arg-type]


def test_rendered_trailing_whitespace_is_an_error(toy: dict[str, Any]) -> None:
    toy["pools"]["word"] = ["alpha ", "beta ", "gamma "]
    with pytest.raises(SpecError, match="rendered prompt ends in whitespace"):
        make_pairs(TaskSpec.model_validate(toy), "train")


def test_sides_that_render_alike_are_an_error(toy: dict[str, Any]) -> None:
    toy["contrast"]["sides"] = [{"q": "${qa}"}, {"q": "${qb}"}]
    toy["pools"]["quotes"] = [{"qa": '"', "qb": '"'}]
    with pytest.raises(SpecError, match="both sides render the same prompt"):
        make_pairs(TaskSpec.model_validate(toy), "train")


def test_distinct_slots_never_coincide(toy: dict[str, Any]) -> None:
    toy["pools"]["other"] = ["x", "y", "z", "w"]
    toy["train"]["templates"][0]["prompt"] = "${other} = ${var}\n${var} = ${q}${word}"
    toy["distinct"] = [["var", "other"]]
    for p in make_pairs(TaskSpec.model_validate(toy), "train"):
        if p.template == 0:
            first = p.prompts[0].split("\n")[0]
            left, right = first.split(" = ")
            assert left != right


def test_render_fills_nested_slots_and_rejects_loops() -> None:
    assert render("${a}!", {"a": "${b}${b}", "b": "x"}) == "xx!"
    with pytest.raises(SpecError, match="has no value"):
        render("${missing}", {})
    with pytest.raises(SpecError, match="nested more than 8 deep"):
        render("${a}", {"a": "${a}${a}"})
