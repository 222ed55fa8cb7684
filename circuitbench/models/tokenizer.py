"""Tokenizers behind one small protocol: tiktoken BPE files, Hugging Face `tokenizer.json`, or none."""

from __future__ import annotations

import json
from pathlib import Path

from circuitbench.errors import TokenizerError
from circuitbench.protocols import Tokenizer

__all__ = ["HFTokenizer", "MissingTokenizer", "TiktokenTokenizer", "Tokenizer", "load_tokenizer", "load_tokenizer_path"]

# tinypython_2k, the paper's tokenizer, is a GPT-2-style BPE; its files do not carry the pre-split
# pattern, so we use GPT-2's (r50k), which is what a data-gym vocab.bpe + encoder.json pair implies.
_GPT2_PAT = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
_EOT = "<|endoftext|>"


class TiktokenTokenizer:
    """A GPT-2-format BPE (`vocab.bpe` + `encoder.json`), as tinypython_2k is distributed."""

    def __init__(self, vocab_bpe: Path, encoder_json: Path, name: str = "tinypython_2k") -> None:
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        try:
            ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
        except AssertionError as err:  # tiktoken's own consistency check
            raise TokenizerError(
                f"{vocab_bpe.parent}: vocab.bpe and encoder.json disagree (the merges do not produce "
                "the encoder's token ids); they must come from the same tokenizer."
            ) from err
        except Exception as err:  # tiktoken raises bare exceptions on malformed files
            raise TokenizerError(
                f"{vocab_bpe.parent}: could not read tokenizer files vocab.bpe + encoder.json "
                f"({type(err).__name__}: {err}); replace them with the model's original files."
            ) from err
        encoder = json.loads(encoder_json.read_text())
        special = {k: v for k, v in encoder.items() if k == _EOT}
        if not special:
            special = {_EOT: len(ranks)}
        ranks = {k: v for k, v in ranks.items() if v not in special.values()}
        self._enc = tiktoken.Encoding(
            name=name, pat_str=_GPT2_PAT, mergeable_ranks=ranks, special_tokens=special
        )
        self.name = name
        self.vocab_size = self._enc.n_vocab
        self.eot_id = special[_EOT]

    def encode(self, text: str) -> list[int]:
        """Encode text; special-token strings in it are encoded as plain text."""
        return self._enc.encode(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        """Decode ids to text."""
        return self._enc.decode(list(ids))


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer from a `tokenizer.json` file."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        from tokenizers import Tokenizer as _HFTok

        try:
            self._tok = _HFTok.from_file(str(path))
        except Exception as err:  # tokenizers raises bare exceptions on malformed JSON
            raise TokenizerError(
                f"{path}: not a valid Hugging Face tokenizer.json ({err}); "
                "replace it with the file the model was trained with."
            ) from err
        self.name = name or path.parent.name
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.eot_id = self._tok.token_to_id(_EOT)

    @classmethod
    def from_object(cls, tok: object, name: str) -> HFTokenizer:
        """Wrap an in-memory `tokenizers.Tokenizer` (for freshly trained tokenizers)."""
        self = cls.__new__(cls)
        self._tok = tok  # type: ignore[assignment]
        self.name = name
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.eot_id = self._tok.token_to_id(_EOT)
        return self

    def encode(self, text: str) -> list[int]:
        """Encode text with no special tokens added; special-token strings in it are plain text."""
        # Code can contain "<|endoftext|>" literally; like the tiktoken wrapper, never read it as EOT.
        self._tok.encode_special_tokens = True
        ids: list[int] = self._tok.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, ids: list[int]) -> str:
        """Decode ids to text, keeping special tokens."""
        text: str = self._tok.decode(list(ids), skip_special_tokens=False)
        return text


class MissingTokenizer:
    """Stands in where a model directory has no tokenizer: loading works, encoding says what's missing."""

    def __init__(self, directory: Path, vocab_size: int) -> None:
        self.name = "missing"
        self.vocab_size = vocab_size
        self.eot_id: int | None = None
        self._dir = directory

    def _fail(self) -> TokenizerError:
        return TokenizerError(
            f"{self._dir}: no tokenizer found. Put `tokenizer.json` (Hugging Face tokenizers) or "
            "`vocab.bpe` + `encoder.json` (tiktoken, as tinypython_2k ships) beside the checkpoint."
        )

    def encode(self, text: str) -> list[int]:
        """Always fails: there is no tokenizer."""
        raise self._fail()

    def decode(self, ids: list[int]) -> str:
        """Always fails: there is no tokenizer."""
        raise self._fail()


def load_tokenizer(directory: Path, vocab_size: int, name: str | None = None) -> Tokenizer:
    """Find the tokenizer files in a model directory.

    Prefers `tokenizer.json`, then `vocab.bpe` + `encoder.json`; with neither, returns a
    `MissingTokenizer` whose encode/decode raise a `TokenizerError` naming the files to add.

    Raises:
        TokenizerError: when a tokenizer file exists but cannot be read, or its vocabulary is larger
            than the model's.
    """
    directory = Path(directory)
    tok: Tokenizer
    if (directory / "tokenizer.json").is_file():
        tok = HFTokenizer(directory / "tokenizer.json", name=name)
    elif (directory / "vocab.bpe").is_file() and (directory / "encoder.json").is_file():
        tok = TiktokenTokenizer(directory / "vocab.bpe", directory / "encoder.json", name or "tinypython_2k")
    elif (directory / "vocab.bpe").is_file() or (directory / "encoder.json").is_file():
        have = "vocab.bpe" if (directory / "vocab.bpe").is_file() else "encoder.json"
        need = "encoder.json" if have == "vocab.bpe" else "vocab.bpe"
        raise TokenizerError(f"{directory}: found {have} but not {need}; a tiktoken BPE needs both.")
    else:
        return MissingTokenizer(directory, vocab_size)
    if tok.vocab_size > vocab_size:
        raise TokenizerError(
            f"{directory}: the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is "
            f"{vocab_size}; this tokenizer does not belong to this model."
        )
    return tok


def load_tokenizer_path(path: Path) -> Tokenizer:
    """A tokenizer from a `tokenizer.json` file or a directory holding tokenizer files.

    Raises:
        TokenizerError: when no tokenizer is found there.
    """
    path = Path(path)
    if path.is_file():
        return HFTokenizer(path, name=path.stem if path.stem != "tokenizer" else path.parent.name)
    if path.is_dir():
        tok = load_tokenizer(path, vocab_size=2**31 - 1, name=path.name)
        if tok.eot_id is None and tok.name == "missing":
            raise TokenizerError(f"{path}: no tokenizer.json, or vocab.bpe + encoder.json, in this directory.")
        return tok
    raise TokenizerError(f"{path}: no such tokenizer file or directory.")
