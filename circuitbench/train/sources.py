"""The models a training run reads besides its own: a starting point, a teacher, a dense model to bridge to.

Each is a native model directory, checked to read the corpus's tokenizer before any step is taken.
"""

from __future__ import annotations

from pathlib import Path

from circuitbench.errors import CircuitbenchError
from circuitbench.models.sparse_gpt import SparseGPT
from circuitbench.train.data import TokenData

__all__ = ["check_tokenizer", "load_model_dir"]


def load_model_dir(directory: Path, flag: str) -> SparseGPT:
    """A native model directory as a SparseGPT in eval mode, on the CPU (`load_native`'s checks, naming the flag).

    Raises:
        CircuitbenchError: naming the flag when the directory is not a readable native model.
    """
    from circuitbench.models.native import load_native

    try:
        return load_native(Path(directory), device="cpu").model.eval()
    except CircuitbenchError as err:
        raise CircuitbenchError(f"{flag} {directory}: {err}") from err


def check_tokenizer(flag: str, directory: Path | None, data: TokenData) -> None:
    """Refuse a model (starting point, teacher, model to measure) whose tokenizer is not the corpus's.

    Raises:
        CircuitbenchError: naming the flag and the model, when its tokenizer.json is missing or another one.
    """
    if directory is None:
        return
    from circuitbench.models.native import file_sha256

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise CircuitbenchError(f"{flag} {directory}: no tokenizer.json; the model must share the corpus's tokenizer.")
    digest = file_sha256(path)
    if digest != data.tokenizer_hash:
        raise CircuitbenchError(
            f"{flag} {directory}: its tokenizer (sha256 {digest[:12]}) is not this corpus's "
            f"({data.tokenizer_hash[:12]}); use a model trained on the same --corpus and --vocab-size."
        )
