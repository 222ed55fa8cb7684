"""circuitbench: find and measure the smallest circuits that solve 20 binary-choice Python tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from circuitbench.models.adapter import ModelAdapter

__all__ = ["__version__", "load_model"]


def load_model(
    path_or_id: Any,
    device: str = "auto",
    dtype: Any = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    tokenizer: Any = None,
) -> ModelAdapter:
    """Load a model directory, bundled model name or Hub id, or wrap a model object, as a `ModelAdapter`.

    Args:
        path_or_id: A local model directory, a bundled short name, a Hub id, a factory spec
            (`path/to/file.py:make_model` or `package.module:make_model`, a function taking no arguments
            that returns a model), or a model object: a TransformerLens `HookedTransformer`, an nnsight
            `LanguageModel`, a transformers `PreTrainedModel` (with `tokenizer`) or a `ModelAdapter`.
            Objects are wrapped as they are (device and dtype untouched).
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
        dtype: torch dtype or its name ("float32", "bfloat16"); None keeps float32.
        revision: Hub revision (branch, tag or commit), for Hub ids only.
        trust_remote_code: allow running a Hub repository's own model code (never implied); needed
            only for layouts the native loaders do not recognise.
        tokenizer: for a model object: a transformers fast tokenizer or a circuitbench `Tokenizer`
            (default: the object's own `tokenizer`).

    Returns:
        The model behind the adapter protocol of `circuitbench.models.adapter`.

    Raises:
        CircuitbenchError: when the model cannot be found, parsed or loaded.
    """
    from circuitbench.models.hub import load_model as _load

    return _load(path_or_id, device=device, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code,
                 tokenizer=tokenizer)
