"""The small training corpus the loop and checkpoint tests share."""

import hashlib
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from circuitbench.train.data import TokenData
from circuitbench.train.tokenizer import save_tokenizer, train_tokenizer

VOCAB = 320


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TokenData:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text() for name in ("argparse.py", "textwrap.py", "fnmatch.py")]
    tok = train_tokenizer(texts[:2], vocab_size=VOCAB)
    path = save_tokenizer(tok, tmp_path_factory.mktemp("tok") / "tokenizer.json")
    ids = [np.asarray(tok.encode(t).ids + [VOCAB - 1], dtype=np.uint16) for t in texts]
    return TokenData(np.concatenate(ids[:2]), ids[2], path, "c" * 64,
                     hashlib.sha256(path.read_bytes()).hexdigest())
