from pathlib import Path

import pytest

from circuitbench.errors import TokenizerError
from circuitbench.models.tokenizer import HFTokenizer
from circuitbench.train.corpus import Corpus
from circuitbench.train.tokenizer import EOT, save_tokenizer, train_tokenizer

SNIPPET = (
    'def f(values):\n    seen = set()\n    for v in values:\n        seen.add(v)\n    return "ok"\n'
)


def test_training_is_deterministic(stdlib_corpus: Corpus) -> None:
    a = train_tokenizer(stdlib_corpus.train_texts, vocab_size=512, max_bytes=300_000)
    b = train_tokenizer(stdlib_corpus.train_texts, vocab_size=512, max_bytes=300_000)
    assert a.to_str() == b.to_str()


def test_eot_is_the_last_id_and_vocab_is_exact(python_bpe: HFTokenizer) -> None:
    assert python_bpe.vocab_size == 2048
    assert python_bpe.eot_id == 2047
    assert python_bpe.decode([2047]) == EOT


def test_round_trip_and_no_prefix_space(python_bpe: HFTokenizer) -> None:
    for text in [SNIPPET, "x = 'caf\u00e9' # \u2603\n\t\r\n", "", "  leading"]:
        assert python_bpe.decode(python_bpe.encode(text)) == text
    assert not python_bpe.decode(python_bpe.encode("seen")[:1]).startswith(" ")


def test_pretokenizer_keeps_words_and_punctuation_apart(python_bpe: HFTokenizer) -> None:
    text = "        seen.add(x)"
    ends, pos = set(), 0
    for i in python_bpe.encode(text):
        pos += len(python_bpe.decode([i]))
        ends.add(pos)
    assert len("        seen") in ends  # a token ends exactly where the word does


def test_saved_file_loads_through_hf_tokenizer(python_bpe: HFTokenizer, tmp_path: Path) -> None:
    path = save_tokenizer(python_bpe._tok, tmp_path)
    assert path == tmp_path / "tokenizer.json"
    loaded = HFTokenizer(path, name="bpe")
    assert loaded.vocab_size == 2048 and loaded.eot_id == 2047
    assert loaded.encode(SNIPPET) == python_bpe.encode(SNIPPET)


def test_max_bytes_caps_the_input(stdlib_corpus: Corpus) -> None:
    small = train_tokenizer(stdlib_corpus.train_texts, vocab_size=300, max_bytes=20_000)
    assert small.get_vocab_size() == 300
    with pytest.raises(TokenizerError, match="too small to learn"):
        train_tokenizer(stdlib_corpus.train_texts, vocab_size=2048, max_bytes=2_000)


def test_vocab_smaller_than_bytes_is_an_error() -> None:
    with pytest.raises(TokenizerError, match="vocab_size 100"):
        train_tokenizer(["x = 1\n"], vocab_size=100)
