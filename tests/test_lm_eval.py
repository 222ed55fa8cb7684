"""lm-evaluation-harness integration: exported tasks and the `circuitbench` model score as circuitbench does.

Real models only: the bundled reference model, tiny random GPT-2s saved with save_pretrained, and
tokenizers built here. lm-eval runs fully offline on the exported local files.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import lm_eval
import pytest
import torch
import yaml
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import circuitbench
from circuitbench.circuits.metrics import answer_logits
from circuitbench.cli import main as cli_main
from circuitbench.errors import CircuitbenchError, UnsupportedRequestError
from circuitbench.integrations.lm_eval import CircuitbenchLM
from circuitbench.integrations.lm_eval_tasks import (
    ALL_DROP_REASONS,
    GROUP,
    export_docs,
    export_lm_eval,
    resolve_tokenizer,
)
from circuitbench.models.adapter import ModelAdapter
from circuitbench.models.tokenizer import HFTokenizer
from circuitbench.tasks.encode import EncodedTask, encode_pairs
from circuitbench.tasks.load import list_specs
from circuitbench.tasks.pairs import Pair, make_pairs
from circuitbench.train.corpus import Corpus
from circuitbench.train.tokenizer import EOT

N_PAIRS = 32
"""Pairs per task in the fast equality tests (lm-eval's `limit` is 2 * N_PAIRS docs)."""


# --- circuitbench's own measurement, computed live -----------------------------------------------


def circuitbench_rows(adapter: ModelAdapter, enc: EncodedTask) -> dict[tuple[int, int], float]:
    """(pair_id, side) -> logit[correct] - logit[incorrect] at the last prompt token, as `circuitbench run`."""
    diffs = []
    for i in range(0, enc.n, 64):
        part = slice(i, i + 64)
        last = enc.last[part]
        with torch.no_grad():
            logits = adapter.forward(enc.tokens[part, : int(last.max()) + 1], at=last)  # (b, V)
        two = answer_logits(logits, Rows(last, enc.correct[part], enc.incorrect[part]))  # (b, 2)
        diffs.append(two[:, 0] - two[:, 1])
    diff = torch.cat(diffs)
    return {(int(p), int(s)): float(d) for p, s, d in zip(enc.pair_id, enc.side, diff, strict=True)}


class Rows(NamedTuple):
    last: torch.Tensor
    correct: torch.Tensor
    incorrect: torch.Tensor


def lm_eval_rows(results: dict[str, Any], task: str) -> dict[tuple[int, int], tuple[float, float]]:
    """(pair_id, side) -> (acc, logit_diff) of every logged lm-eval sample of a task."""
    return {
        (s["doc"]["pair_id"], s["doc"]["side"]): (s["acc"], s["logit_diff"]) for s in results["samples"][task]
    }


def evaluate(model: Any, model_args: str | None, include: Path, tasks: list[str], limit: int | None) -> dict:
    return lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=tasks, limit=limit, batch_size=64,
        task_manager=TaskManager(include_path=str(include), include_defaults=False),
        bootstrap_iters=0, log_samples=True, verbosity="WARNING",
    )


def assert_same_scores(adapter: ModelAdapter, results: dict, n_pairs: int | None) -> list[str]:
    """Per task: lm-eval's accuracy equals circuitbench's exactly, example by example; returns the tasks."""
    checked = []
    for spec in list_specs():
        task = f"circuitbench_{spec.name}"
        if task not in results["results"]:
            continue
        enc = encode_pairs(make_pairs(spec, "test")[:n_pairs], adapter.tokenizer, spec.max_tokens)
        ours = circuitbench_rows(adapter, enc)
        theirs = lm_eval_rows(results, task)
        assert set(theirs) == set(ours), task
        for key, diff in ours.items():
            acc, lm_diff = theirs[key]
            assert acc == float(diff > 0), (task, key, diff, lm_diff)
            assert lm_diff == pytest.approx(diff, abs=1e-4), (task, key)
        accuracy = sum(d > 0 for d in ours.values()) / len(ours)
        assert results["results"][task]["acc,none"] == accuracy, task
        checked.append(spec.name)
    return checked


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sparse() -> ModelAdapter:
    return circuitbench.load_model("tiny-sparse", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def tiny_sparse_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lm_eval_tiny_sparse")
    exported = export_lm_eval(out, list_specs(), resolve_tokenizer("tiny-sparse"), "test")
    assert [t.task for t in exported] == [s.name for s in list_specs()]
    return out


def save_gpt2(directory: Path, tok: Tokenizer, seed: int = 0) -> Path:
    """A tiny random GPT-2 with logits of order 1 (so no example is a near-tie), and its tokenizer."""
    torch.manual_seed(seed)
    eot = tok.token_to_id(EOT)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                     initializer_range=0.4, bos_token_id=eot, eos_token_id=eot)
    GPT2LMHeadModel(cfg).eval().save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def unsplit_bpe(stdlib_corpus: Corpus) -> Tokenizer:
    """A BPE without GPT-2's pre-split regex: it merges across the prompt/answer boundary on some tasks."""
    texts, size = [], 0
    for text in stdlib_corpus.train_texts:
        texts.append(text)
        size += len(text)
        if size > 40_000:
            break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([EOT])
    return tok


@pytest.fixture(scope="module")
def paren_colon_bpe() -> Tokenizer:
    """Bytes plus one merge, `)` + `:` -> `):`, with GPT-2's pre-split (punctuation runs stay together)."""
    vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocab["):"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(")", ":")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    return tok


# --- exactness on the reference model ------------------------------------------------------------


@pytest.mark.slow
def test_circuitbench_model_gives_circuitbench_accuracy_on_every_task(
    tiny_sparse: ModelAdapter, tiny_sparse_export: Path
) -> None:
    results = evaluate("circuitbench", "model=tiny-sparse,device=cpu,dtype=float32", tiny_sparse_export,
                       [GROUP], limit=2 * N_PAIRS)
    checked = assert_same_scores(tiny_sparse, results, N_PAIRS)
    assert len(checked) == 20
    group = results["results"][GROUP]
    per_task = [results["results"][f"circuitbench_{t}"]["acc,none"] for t in checked]
    assert group["acc,none"] == pytest.approx(sum(per_task) / len(per_task))


def test_the_exported_folder_still_works_after_it_is_moved(tiny_sparse: ModelAdapter, tmp_path: Path) -> None:
    import shutil

    first = tmp_path / "first"
    export_lm_eval(first, [s for s in list_specs() if s.name == "var_if"], resolve_tokenizer("tiny-sparse"), "test")
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))  # nothing is left where it was exported
    assert not first.exists()
    results = evaluate("circuitbench", "model=tiny-sparse,device=cpu,dtype=float32", moved, [GROUP], limit=8)
    assert assert_same_scores(tiny_sparse, results, 4) == ["var_if"]


@pytest.mark.slow  # every test example of 20 tasks, twice: about 1-2 minutes on 2 CPU cores
def test_circuitbench_model_gives_circuitbench_accuracy_on_the_full_test_split(
    tiny_sparse: ModelAdapter, tiny_sparse_export: Path
) -> None:
    results = evaluate("circuitbench", "model=tiny-sparse,device=cpu,dtype=float32", tiny_sparse_export,
                       [GROUP], limit=None)
    assert len(assert_same_scores(tiny_sparse, results, None)) == 20


def test_stock_hf_model_matches_circuitbench_on_tasks_that_pass_the_boundary_checks(
    tmp_path: Path, unsplit_bpe: Tokenizer
) -> None:
    model_dir = save_gpt2(tmp_path / "gpt2", unsplit_bpe)
    adapter = circuitbench.load_model(str(model_dir), device="cpu", dtype="float32")
    export = tmp_path / "export"
    exported = export_lm_eval(export, list_specs(), resolve_tokenizer(str(model_dir)), "test")
    clean = [t.lm_eval_name for t in exported if t.docs and not t.n_dropped]
    merged = [t for t in exported if t.drop_reasons.get("boundary_merge")]
    assert merged, "this tokenizer should merge across the boundary on some task"
    assert len(clean) >= 5
    results = evaluate("hf", f"pretrained={model_dir},dtype=float32,device=cpu", export, clean, limit=2 * N_PAIRS)
    checked = assert_same_scores(adapter, results, N_PAIRS)
    assert sorted(f"circuitbench_{t}" for t in checked) == sorted(clean)


def test_lm_eval_hf_runs_on_a_circuitbench_model_folder_and_scores_as_circuitbench(
    tiny_sparse: ModelAdapter, tiny_sparse_export: Path
) -> None:
    """`lm_eval --model hf` on the bundled folder (transformers' AutoModelForCausalLM, trust_remote_code)."""
    from circuitbench.models.hub import bundled_models

    folder = bundled_models()["tiny-sparse"]
    results = evaluate("hf", f"pretrained={folder},trust_remote_code=True,dtype=float32,device=cpu",
                       tiny_sparse_export, ["circuitbench_if_equals", "circuitbench_var_if"], limit=16)
    assert sorted(assert_same_scores(tiny_sparse, results, 8)) == ["if_equals", "var_if"]


# --- the boundary trap ---------------------------------------------------------------------------


def crafted_pairs() -> list[Pair]:
    """Pair 0's side 0 ends in `)` and its answer starts with `:`; pair 1 ends in letters."""
    common = dict(task="crafted", split="test", template=0, suffixes=("", ""), task_hash="0" * 16)
    return [
        Pair(pair_id=0, prompts=("def area(r)", "total = area(r)"), answers=(":", "\n"), **common),  # type: ignore[arg-type]
        Pair(pair_id=1, prompts=("while ready", "return ready"), answers=(":", "\n"), **common),  # type: ignore[arg-type]
    ]


def test_joint_encoding_swallows_the_answer_and_lm_eval_hf_scores_it_0(
    tmp_path: Path, paren_colon_bpe: Tokenizer
) -> None:
    tok = HFTokenizer.from_object(paren_colon_bpe, "paren_colon")
    prompt, answer = "def area(r)", ":"
    prompt_ids, joint = tok.encode(prompt), tok.encode(prompt + answer)
    # joint encoding + splitting at the prompt's token count: the answer has no tokens of its own
    assert joint[: len(prompt_ids)] != prompt_ids and joint[len(prompt_ids):] == []
    assert tok.decode([joint[-1]]) == "):"

    model_dir = save_gpt2(tmp_path / "gpt2", paren_colon_bpe)
    hf_lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=1)
    assert hf_lm._encode_pair(prompt, answer)[1] == []

    def request(ctx: str, cont: str) -> Instance:
        return Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=0)

    swallowed, other = hf_lm.loglikelihood([request(prompt, answer), request(prompt, "\n")])
    assert swallowed == (0.0, True)  # probability 1: the swallowed answer always wins
    assert other[0] < 0

    # the circuitbench model encodes the two separately and scores the real `:` token
    ours = CircuitbenchLM(model=str(model_dir), device="cpu", dtype="float32")
    (ll, _), = ours.loglikelihood([request(prompt, answer)])
    with torch.no_grad():
        logits = ours.adapter.forward(torch.tensor([prompt_ids]))[0, -1]  # (V,)
    expected = torch.log_softmax(logits.double(), dim=-1)[tok.encode(answer)[0]]
    assert ll < 0 and ll == pytest.approx(float(expected), abs=1e-5)


def test_checks_and_export_drop_the_merging_pair_and_say_why(paren_colon_bpe: Tokenizer) -> None:
    tok = HFTokenizer.from_object(paren_colon_bpe, "paren_colon")
    pairs = crafted_pairs()
    enc = encode_pairs(pairs, tok, 255)
    assert enc.drop_reasons == {"boundary_merge": 2} and "boundary_merge" in enc.drop_report()
    exported = export_docs(pairs, tok, 255)
    assert exported.drop_reasons == {"boundary_merge": 2} and exported.n_total == 4
    assert [(d["pair_id"], d["side"]) for d in exported.docs] == [(1, 0), (1, 1)]
    assert "2 boundary_merge" in exported.report_row()["why"]
    for doc in exported.docs:  # what remains is safe for joint and for separate encoding
        ids = tok.encode(doc["prompt"])
        for choice, token in zip(doc["choices"], doc["choice_tokens"], strict=True):
            assert tok.encode(choice) == [token] and tok.encode(doc["prompt"] + choice) == ids + [token]


def test_export_guards_trailing_whitespace_and_cuts_long_prompts_to_the_scored_tokens(
    paren_colon_bpe: Tokenizer,
) -> None:
    tok = HFTokenizer.from_object(paren_colon_bpe, "paren_colon")
    common = dict(task="crafted", split="test", template=0, suffixes=("", ""), task_hash="0" * 16)
    spaced = Pair(pair_id=0, prompts=("x = 1\n", "y = 2\n"), answers=("if", "for"), **common)  # type: ignore[arg-type]
    long = Pair(pair_id=1, prompts=("# padding\n" * 5 + "while ready", "# padding\n" * 5 + "return ready"),
                answers=(":", "\n"), **common)  # type: ignore[arg-type]
    exported = export_docs([spaced, long], tok, max_len=12)
    assert exported.drop_reasons == {"prompt_trailing_whitespace": 2}
    enc = encode_pairs([long], tok, 12)
    assert enc.n_truncated == 2
    for row, doc in enumerate(exported.docs):
        assert tok.encode(doc["prompt"]) == enc.tokens[row, : int(enc.last[row]) + 1].tolist()
        assert len(doc["prompt"]) < len(long.prompts[doc["side"]])
    assert set(ALL_DROP_REASONS) >= {"boundary_merge", "prompt_trailing_whitespace", "choice_boundary_merge"}


# --- the export's files --------------------------------------------------------------------------


def load_utils(export: Path) -> Any:
    spec = importlib.util.spec_from_file_location("cb_lm_eval_utils", export / "utils.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_writes_multiple_choice_configs_with_alternating_targets(tiny_sparse_export: Path) -> None:
    group = yaml.safe_load((tiny_sparse_export / f"{GROUP}.yaml").read_text())
    assert group["group"] == GROUP and group["task"] == [f"circuitbench_{s.name}" for s in list_specs()]
    text = (tiny_sparse_export / "circuitbench_with_as.yaml").read_text()
    assert text.rstrip().endswith("process_results: !function utils.process_results")
    cfg = yaml.safe_load(text.replace("!function ", ""))
    assert cfg["output_type"] == "multiple_choice" and cfg["target_delimiter"] == ""
    assert (cfg["doc_to_text"], cfg["doc_to_choice"], cfg["doc_to_target"]) == ("prompt", "choices", "target")
    assert {m["metric"] for m in cfg["metric_list"]} == {"acc", "logit_diff"}
    rel = cfg["dataset_kwargs"]["data_file"]
    assert not Path(rel).is_absolute() and cfg["dataset_kwargs"]["split"] == "test"  # the folder can be moved
    data = tiny_sparse_export / rel
    assert data.is_file() and len(cfg["metadata"]["tokenizer_sha256"]) == 64
    assert text.count("!function utils.") == 2  # the docs loader and the metrics
    docs = [json.loads(line) for line in data.read_text().splitlines()]

    tok = resolve_tokenizer("tiny-sparse")
    spec = next(s for s in list_specs() if s.name == "with_as")
    enc = encode_pairs(make_pairs(spec, "test"), tok, spec.max_tokens)
    assert len(docs) == enc.n == 256
    for row, doc in enumerate(docs):
        gold = doc["target"]
        assert gold == doc["side"] == row % 2  # the correct choice alternates within every pair
        assert doc["choice_tokens"][gold] == int(enc.correct[row])
        assert doc["choice_tokens"][1 - gold] == int(enc.incorrect[row])
        assert doc["choices"] == [tok.decode([t]) for t in doc["choice_tokens"]]

    utils = load_utils(tiny_sparse_export)
    # a tie is wrong, whichever side; a model that always prefers the first choice scores chance
    assert utils.process_results(docs[0], [(-1.5, False), (-1.5, False)]) == {"acc": 0.0, "logit_diff": 0.0}
    first = [utils.process_results(d, [(-1.0, True), (-2.0, False)]) for d in docs]
    assert sum(r["acc"] for r in first) / len(first) == 0.5
    assert [r["logit_diff"] for r in first[:2]] == [1.0, -1.0]


def test_cli_export_prints_the_report_and_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tasks"
    assert cli_main(["export", "lm-eval", "--out", str(out), "--tasks", "else_elif,with_as",
                     "--tokenizer", "tiny-sparse"]) == 0
    printed = capsys.readouterr().out
    assert "circuitbench_else_elif" in printed and "circuitbench_with_as" in printed
    assert sorted(p.name for p in out.glob("*.yaml")) == [
        "circuitbench.yaml", "circuitbench_else_elif.yaml", "circuitbench_with_as.yaml"]
    assert cli_main(["export", "lm-eval", "--out", str(out), "--tasks", "else_elif", "--tokenizer", "tiny-sparse"]) == 0
    assert sorted(p.name for p in out.glob("*.yaml")) == ["circuitbench.yaml", "circuitbench_else_elif.yaml"]
    assert cli_main(["export", "lm-eval", "--out", str(out), "--tasks", "else_elf", "--tokenizer", "tiny-sparse"]) == 1
    assert "else_elif" in capsys.readouterr().err
    assert cli_main(["export", "lm-eval", "--out", str(out), "--tokenizer", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err


# --- the model wrapper ---------------------------------------------------------------------------


def test_wrapper_scores_multi_token_and_empty_context_continuations(tiny_sparse: ModelAdapter) -> None:
    lm = CircuitbenchLM(adapter=tiny_sparse, batch_size=2)
    tok = tiny_sparse.tokenizer
    ctx, cont = "def main():\n    for item in", " enumerate(items):"
    ctx_ids, cont_ids = tok.encode(ctx), tok.encode(cont)
    assert len(cont_ids) > 1
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=a, idx=0)
            for a in [(ctx, cont), ("", "import os"), (ctx, " range")]]
    got = lm.loglikelihood(reqs)
    with torch.no_grad():
        logits = tiny_sparse.forward(torch.tensor([ctx_ids + cont_ids[:-1]]))[0].double()  # (T, V)
    logp = torch.log_softmax(logits, dim=-1)[len(ctx_ids) - 1:]
    expected = float(logp.gather(1, torch.tensor(cont_ids)[:, None]).sum())
    assert got[0][0] == pytest.approx(expected, abs=1e-6)
    assert got[0][1] == bool((logp.argmax(-1) == torch.tensor(cont_ids)).all())
    eot_ids = [tok.eot_id, *tok.encode("import os")]
    with torch.no_grad():
        logp0 = torch.log_softmax(tiny_sparse.forward(torch.tensor([eot_ids[:-1]]))[0].double(), dim=-1)
    assert got[1][0] == pytest.approx(float(logp0[torch.arange(len(eot_ids) - 1), eot_ids[1:]].sum()), abs=1e-6)
    assert all(ll < 0 for ll, _ in got)


def test_wrapper_refuses_what_it_cannot_do(tiny_sparse: ModelAdapter) -> None:
    lm = CircuitbenchLM(adapter=tiny_sparse)
    req = Instance(request_type="generate_until", doc={}, arguments=("x", {}), idx=0)
    with pytest.raises(UnsupportedRequestError, match="does not generate"):
        lm.generate_until([req])
    with pytest.raises(UnsupportedRequestError, match="loglikelihoods"):
        lm.loglikelihood_rolling([req])
    with pytest.raises(CircuitbenchError, match="model=NAME"):
        CircuitbenchLM()
    with pytest.raises(CircuitbenchError, match="batch_size"):
        CircuitbenchLM(adapter=tiny_sparse, batch_size="many")
    assert lm_eval.api.registry.get_model("circuitbench") is CircuitbenchLM
    assert lm_eval.api.registry.get_model("hf") is HFLM


def test_core_package_never_imports_lm_eval() -> None:
    code = (
        "import sys, circuitbench, circuitbench.cli, circuitbench.tasks.export, "
        "circuitbench.integrations.lm_eval_tasks; circuitbench.cli.build_parser(); "
        "assert 'lm_eval' not in sys.modules, sorted(m for m in sys.modules if m.startswith('lm_eval'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
