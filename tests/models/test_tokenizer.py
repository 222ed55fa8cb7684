import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

import circuitbench
from circuitbench.errors import TokenizerError
from circuitbench.models.tokenizer import TiktokenTokenizer, load_tokenizer
from tests.models.conftest import FIXTURE_MODEL

CODE = ["def add(a, b):\n    return a + b\n", "values = [1, 2, 3]\nprint(values)\n"] * 50


def _bytes_to_unicode():
    # GPT-2's reversible byte <-> printable-unicode table, which data-gym BPE files are written in.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _write_data_gym(directory, merges):
    """A small GPT-2-format tokenizer: 256 byte tokens, the given merges, then <|endoftext|>."""
    b2u = _bytes_to_unicode()
    encoder = {u: i for i, u in enumerate(b2u.values())}  # GPT-2 order: printable bytes first
    lines = ["#version: 0.2"]
    for a, b in merges:
        ua, ub = "".join(b2u[c] for c in a.encode()), "".join(b2u[c] for c in b.encode())
        encoder[ua + ub] = len(encoder)
        lines.append(f"{ua} {ub}")
    encoder["<|endoftext|>"] = len(encoder)
    (directory / "vocab.bpe").write_text("\n".join(lines) + "\n")
    (directory / "encoder.json").write_text(json.dumps(encoder))
    return encoder


def test_tiktoken_files_encode_with_merges_and_round_trip(tmp_path):
    enc = _write_data_gym(tmp_path, [("d", "e"), ("de", "f"), (" ", "x")])
    tok = TiktokenTokenizer(tmp_path / "vocab.bpe", tmp_path / "encoder.json")
    ids = tok.encode("def x")
    assert ids == [enc["def"], enc["Ġx"]]
    assert tok.decode(ids) == "def x"
    assert tok.eot_id == len(enc) - 1 and tok.vocab_size == len(enc)
    assert tok.decode(tok.encode("print('é')\n")) == "print('é')\n"


def test_tokenizer_json_is_preferred_and_round_trips(tmp_path):
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(CODE, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf.decoder = __import__("tokenizers").decoders.ByteLevel()
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path, vocab_size=512)
    text = "def add(a, b):\n    return a + b\n"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) < len(text)


def test_model_without_tokenizer_loads_but_encoding_says_what_is_missing():
    adapter = circuitbench.load_model(str(FIXTURE_MODEL), device="cpu")
    with pytest.raises(TokenizerError, match=r"no tokenizer found.*tokenizer\.json.*vocab\.bpe` \+ `encoder\.json"):
        adapter.tokenizer.encode("x = 1")


def test_encoder_that_disagrees_with_the_merges_is_an_error(tmp_path):
    _write_data_gym(tmp_path, [("a", "b")])
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nc d\n")
    with pytest.raises(TokenizerError, match="vocab.bpe and encoder.json disagree"):
        load_tokenizer(tmp_path, vocab_size=512)


def test_half_a_tiktoken_pair_is_an_error(tmp_path):
    _write_data_gym(tmp_path, [])
    (tmp_path / "encoder.json").unlink()
    with pytest.raises(TokenizerError, match="found vocab.bpe but not encoder.json"):
        load_tokenizer(tmp_path, vocab_size=512)


def test_corrupt_tokenizer_json_is_an_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: not a valid Hugging Face tokenizer"):
        load_tokenizer(tmp_path, vocab_size=512)


def test_tokenizer_larger_than_the_model_vocab_is_an_error(tmp_path):
    _write_data_gym(tmp_path, [("a", "b")])
    with pytest.raises(TokenizerError, match="258 tokens but the model's vocab_size is 100"):
        load_tokenizer(tmp_path, vocab_size=100)


def test_literal_end_of_text_in_code_is_plain_text_for_both_tokenizer_kinds(tmp_path):
    _write_data_gym(tmp_path, [])
    tik = load_tokenizer(tmp_path, vocab_size=512)
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(CODE, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    (tmp_path / "hf").mkdir()
    hf.save(str(tmp_path / "hf" / "tokenizer.json"))
    hft = load_tokenizer(tmp_path / "hf", vocab_size=512)
    for tok in (tik, hft):
        ids = tok.encode('s = "<|endoftext|>"')
        assert tok.eot_id not in ids and len(ids) > 3


def test_a_tokenizer_that_is_not_the_models_own_is_refused_before_scoring(tmp_path, python_bpe, capsys):
    """Another model's 2048-token tokenizer would give chance accuracy with no other sign."""
    import shutil

    import circuitbench
    from circuitbench.cli import main
    from circuitbench.errors import TokenizerError
    from circuitbench.models.hub import bundled_models

    model = tmp_path / "model"
    shutil.copytree(bundled_models()["tiny-sparse"], model)
    python_bpe._tok.save(str(model / "tokenizer.json"))  # same vocabulary size, another tokenizer
    with pytest.raises(TokenizerError, match="is not the tokenizer this model was trained with"):
        circuitbench.load_model(str(model), device="cpu")
    assert main(["run", "--model", str(model), "--tasks", "if_equals", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "tokenizer_sha256" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
