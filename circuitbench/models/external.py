"""Models built in Python, handed to circuitbench: `load_model(obj)` and `--model FILE.py:FUNCTION`.

A researcher's model often exists only as an object: a TransformerLens `HookedTransformer` with processed
weights, an nnsight `LanguageModel`, a transformers model fresh from fine-tuning. `wrap_model` turns each
into a `ModelAdapter`:

- `HookedTransformer` -> `TLAdapter` (`circuitbench.models.tlens`), its own hook points as sites.
- TransformerLens 3's `TransformerBridge` -> `BridgeAdapter`, on its components' hook points (booting a
  bridge replaces the transformers model's modules, so the transformers layout no longer applies).
- nnsight `LanguageModel` (or `TransformersModel`) -> the transformers adapter on the module nnsight wraps
  (`model._module`, dispatched first if it was built on the meta device). nnsight intervenes through
  PyTorch hooks on that same module tree; circuitbench installs its own for each pass, so nnsight's
  tracing context, which compiles the body of a `with` block, is not needed and not entered.
- transformers `PreTrainedModel` -> the transformers adapter (a tokenizer must be given).
- an object that already meets the `ModelAdapter` protocol -> itself.

On the command line and in run configs a model is a string, so that every process of a run (and Ray's
workers) can load it again: `path/to/file.py:make_model` or `package.module:make_model` names a function
taking no arguments that returns one of the above. Its weights hash is computed over its state dict.

None of transformer_lens, nnsight or transformers is imported here: the object arrives built.
"""

from __future__ import annotations

from typing import Any

from circuitbench.errors import ConfigError, ModelNotFoundError
from circuitbench.protocols import ModelAdapter, Tokenizer


def is_factory_spec(spec: str) -> bool:
    """Whether a --model string names a Python function (`FILE.py:FUNCTION` or `module:FUNCTION`)."""
    from circuitbench.plugins import is_python_name

    return is_python_name(spec)


def _mro_names(obj: object) -> set[str]:
    return {f"{c.__module__.split('.')[0]}.{c.__name__}" for c in type(obj).__mro__}


def wrap_model(obj: Any, tokenizer: Any = None, name: str | None = None,
               provenance: dict[str, Any] | None = None) -> ModelAdapter:
    """The `ModelAdapter` for a model object (see the module docstring for what is accepted).

    Args:
        obj: the model.
        tokenizer: a transformers fast tokenizer or a circuitbench `Tokenizer`; default: the model's own
            (`model.tokenizer` for TransformerLens and nnsight models).
        name: display name (and the name its results are filed under).
        provenance: extra facts to record (where it came from).

    Raises:
        ConfigError: for an object of another kind, or a model without a usable tokenizer.
    """
    from circuitbench.models.tlens import BridgeAdapter, TLAdapter, state_dict_sha256, tokenizer_of

    def facts(fmt: str, module: Any) -> dict[str, Any]:
        """Provenance: the format, the model type, and the weights hash unless the caller has it already."""
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        prov = {"format": fmt, **({"model_type": model_type} if model_type else {}), **(provenance or {})}
        if "weights_sha256" not in prov:
            prov["weights_sha256"] = state_dict_sha256(module)
        return prov

    def own_tokenizer(label: str) -> Tokenizer:
        return tokenizer_of(tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None), label)

    names = _mro_names(obj)
    if "transformer_lens.HookedTransformer" in names or "transformer_lens.TransformerBridge" in names:
        cls = TLAdapter if "transformer_lens.HookedTransformer" in names else BridgeAdapter
        label = name or str(getattr(obj.cfg, "model_name", None) or type(obj).__name__)
        return cls(obj, own_tokenizer(label), label, facts(cls.format, obj))
    if isinstance(obj, ModelAdapter) and not isinstance(obj, type):
        return obj
    from circuitbench.models.hf import HFAdapter

    if "nnsight.Envoy" in names and hasattr(obj, "_module"):
        if not getattr(obj, "dispatched", True):
            obj.dispatch()  # built on the meta device: load the real weights
        module = obj._module
        label = name or str(getattr(module.config, "name_or_path", "") or "nnsight-model")
        return HFAdapter(module, own_tokenizer(label), label, facts("nnsight", module))
    if "transformers.PreTrainedModel" in names:
        label = name or str(getattr(obj.config, "name_or_path", "") or obj.config.model_type)
        return HFAdapter(obj, own_tokenizer(label), label, facts("transformers", obj))
    raise ConfigError(
        f"load_model: a {type(obj).__module__}.{type(obj).__name__} is not a model circuitbench can wrap; pass a "
        "TransformerLens HookedTransformer or TransformerBridge, an nnsight LanguageModel, a transformers "
        "PreTrainedModel (with tokenizer=), a ModelAdapter, or a model directory / Hub id / bundled name as a string"
    )


def call_factory(spec: str) -> Any:
    """The object returned by the function a `FILE.py:FUNCTION` or `module:FUNCTION` spec names.

    Raises:
        ModelNotFoundError: when the file, module or function does not exist.
        ConfigError: when calling it fails.
    """
    from circuitbench.plugins import load_object

    fn = load_object(spec, "--model", "a function")
    function = spec.rsplit(":", 1)[1]
    if not callable(fn):
        raise ModelNotFoundError(f"--model {spec}: {function} is not a function")
    try:
        return fn()
    except Exception as err:
        raise ConfigError(f"--model {spec}: {function}() failed ({type(err).__name__}: {err})") from err


def load_factory(spec: str, device: str = "auto", dtype: Any = None) -> ModelAdapter:
    """The adapter for the model a `FILE.py:FUNCTION` spec builds, on `device` in `dtype`."""
    from circuitbench.models.native import resolve_device, resolve_dtype
    from circuitbench.models.tlens import state_dict_sha256

    obj = call_factory(spec)
    tokenizer: Tokenizer | None = None
    if isinstance(obj, tuple) and len(obj) == 2:  # (model, tokenizer)
        obj, tokenizer = obj
    provenance: dict[str, Any] = {"factory": spec}
    if not isinstance(obj, ModelAdapter):
        if not getattr(obj, "dispatched", True):  # an nnsight model built on the meta device
            obj.dispatch()
        module = getattr(obj, "_module", obj)  # nnsight: move the module it wraps
        if hasattr(module, "to") and hasattr(module, "state_dict"):
            # hashed as built, so that a run in bfloat16 names the same weights as one in float32
            provenance["weights_sha256"] = state_dict_sha256(module)
            module.to(resolve_device(device))  # one argument at a time: HookedTransformer.to takes one
            module.to(resolve_dtype(dtype))
    return wrap_model(obj, tokenizer, name=spec, provenance=provenance)
