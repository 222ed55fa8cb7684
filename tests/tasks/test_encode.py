import logging

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from circuitbench.errors import TaskError
from circuitbench.models.tokenizer import HFTokenizer
from circuitbench.tasks.encode import DROP_REASONS, encode_pairs, encode_task
from circuitbench.tasks.load import get_task, spec_names
from circuitbench.tasks.pairs import make_pairs
from circuitbench.train.corpus import Corpus
from circuitbench.train.tokenizer import EOT


@pytest.fixture(scope="module")
def byte_tokenizer() -> HFTokenizer:
    """Plain bytes, no merges: `])` and `]])` both start with `]`."""
    vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    return HFTokenizer.from_object(tok, "bytes")


@pytest.fixture(scope="module")
def unsplit_bpe(stdlib_corpus: Corpus) -> HFTokenizer:
    """A BPE without GPT-2's pre-split regex: merges cross word/punctuation boundaries (lm-eval's trap)."""
    texts, size = [], 0
    for text in stdlib_corpus.train_texts:
        texts.append(text)
        size += len(text)
        if size > 40_000:
            break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([EOT])
    return HFTokenizer.from_object(tok, "unsplit_bpe")


@pytest.mark.parametrize("name", spec_names())
def test_every_task_encodes_and_keeps_at_least_90_percent_on_a_python_bpe(name: str, python_bpe: HFTokenizer) -> None:
    spec = get_task(name)
    for split in ("train", "test"):
        pairs = make_pairs(spec, split)
        enc = encode_task(spec, python_bpe, split)
        assert enc.kept_fraction >= 0.9, enc.drop_report()
        assert enc.n == enc.n_total - enc.n_dropped and enc.n_total == 2 * len(pairs)
        assert enc.task == name and enc.split == split and enc.task_hash == spec.task_hash
        n, width = enc.tokens.shape
        for t in (enc.last, enc.correct, enc.incorrect, enc.pair_id, enc.side):
            assert t.shape == (n,) and t.dtype == torch.long
        assert enc.tokens.dtype == torch.long and width == int(enc.last.max()) + 1
        assert int(enc.last.max()) < spec.max_tokens
        # both members of a pair are kept together, side 0 first
        assert torch.equal(enc.pair_id[0::2], enc.pair_id[1::2])
        assert torch.equal(enc.side, torch.tensor([0, 1] * (n // 2)))
        assert bool((enc.correct != enc.incorrect).all())
        # spot-check rows against a fresh encoding: prompt ids, right padding, first completion token
        by_id = {p.pair_id: p for p in pairs}
        for row in range(0, n, max(1, n // 17)):
            pair, side = by_id[int(enc.pair_id[row])], int(enc.side[row])
            ids = python_bpe.encode(pair.prompts[side])
            last = int(enc.last[row])
            assert last == len(ids) - 1
            assert enc.tokens[row, : last + 1].tolist() == ids
            assert (enc.tokens[row, last + 1 :] == python_bpe.eot_id).all()
            full = python_bpe.encode(pair.prompts[side] + pair.correct(side))
            assert full[: len(ids)] == ids and int(enc.correct[row]) == full[len(ids)]
            wrong = python_bpe.encode(pair.prompts[side] + pair.incorrect(side))
            assert int(enc.incorrect[row]) == wrong[len(ids)]


def test_only_the_first_completion_token_is_the_candidate(python_bpe: HFTokenizer) -> None:
    enc = encode_task(get_task("enumerate_range"), python_bpe, "test")
    firsts = {python_bpe.decode([int(t)]) for t in enc.correct.unique()}
    assert firsts == {python_bpe.decode(python_bpe.encode(" enumerate")[:1]), " range"}


def test_inverted_control_swaps_candidates(python_bpe: HFTokenizer) -> None:
    base = encode_task(get_task("if_equals"), python_bpe, "test")
    inv = encode_task(get_task("if_equals:inverted"), python_bpe, "test")
    assert torch.equal(inv.tokens, base.tokens) and torch.equal(inv.last, base.last)
    assert torch.equal(inv.correct, base.incorrect) and torch.equal(inv.incorrect, base.correct)
    assert inv.task == "if_equals:inverted" and inv.task_hash != base.task_hash


def test_long_prompts_are_left_truncated(python_bpe: HFTokenizer) -> None:
    spec = get_task("else_elif")  # the contrast (else / elif) is the prompt's last token
    enc = encode_task(spec, python_bpe, "test", max_len=16)
    assert enc.tokens.shape[1] == 16 and enc.n_truncated == enc.n
    pair = make_pairs(spec, "test")[int(enc.pair_id[0])]
    ids = python_bpe.encode(pair.prompts[0])
    assert enc.tokens[0].tolist() == ids[-16:] and int(enc.last[0]) == 15


def test_a_context_that_cuts_off_the_contrast_drops_the_pairs_and_says_why(python_bpe: HFTokenizer) -> None:
    # with_open's two members differ many lines before the answer: 16 tokens (a model's short context) see no difference
    enc = encode_task(get_task("with_open"), python_bpe, "test", max_len=16)
    assert enc.n == 0 and enc.drop_reasons == {"truncated_identical": enc.n_total}
    assert "truncated_identical" in enc.drop_report()


def test_encoding_pairs_equals_encoding_the_spec(python_bpe: HFTokenizer) -> None:
    spec = get_task("lambda_func")
    a = encode_task(spec, python_bpe, "train")
    b = encode_task(make_pairs(spec, "train"), python_bpe)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.correct, b.correct)


def test_drops_are_counted_reported_and_logged(
    byte_tokenizer: HFTokenizer, unsplit_bpe: HFTokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="circuitbench.tasks.encode"):
        same = encode_task(get_task("bracket_counting"), byte_tokenizer, "test")
    assert same.n == 0 and same.n_dropped == same.n_total == 256
    assert same.drop_reasons == {"same_first_token": 256}
    assert same.tokens.shape == (0, 0) and same.kept_fraction == 0.0
    assert "bracket_counting [test] on bytes: dropped 256 of 256 examples (256 same_first_token)" in caplog.text

    merged = encode_task(get_task("with_as"), unsplit_bpe, "test")
    assert merged.n_dropped > 0 and set(merged.drop_reasons) == {"boundary_merge"}
    assert sum(merged.drop_reasons.values()) == merged.n_dropped
    assert "boundary_merge" in merged.drop_report() and set(DROP_REASONS) >= set(merged.drop_reasons)

    kept = encode_task(get_task("while_return_true"), byte_tokenizer, "test")
    assert kept.n_dropped == 0 and "kept all 256 examples" in kept.drop_report()


def test_some_tasks_drop_on_other_tokenizers(byte_tokenizer: HFTokenizer, unsplit_bpe: HFTokenizer) -> None:
    for tok in (byte_tokenizer, unsplit_bpe):
        fractions = {n: encode_task(get_task(n), tok, "test").kept_fraction for n in spec_names()}
        assert min(fractions.values()) < 0.9 < max(fractions.values()), fractions


def test_malformed_input_is_an_error(python_bpe: HFTokenizer) -> None:
    with pytest.raises(TaskError, match="no pairs"):
        encode_pairs([], python_bpe)
    mixed = make_pairs(get_task("var_if"), "test")[:2] + make_pairs(get_task("var_swap"), "test")[:2]
    with pytest.raises(TaskError, match="one task and split at a time"):
        encode_pairs(mixed, python_bpe)
    with pytest.raises(TaskError, match="max_len must be at least 1"):
        encode_task(get_task("var_if"), python_bpe, "test", max_len=0)
