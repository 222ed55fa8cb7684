"""transformers' `AutoModelForCausalLM` for circuitbench's model folders, as `openai/circuit-sparsity` loads.

A model folder in the released format carries the small files `circuitbench.models.hf_files.write_hf_files`
adds (`config.json` with an `auto_map`, two one-line modules importing this one, `tokenizer_config.json`).
Then `AutoModelForCausalLM.from_pretrained(FOLDER, trust_remote_code=True)` gives the native model's logits,
`AutoTokenizer.from_pretrained(FOLDER)` its tokenizer, and `lm_eval --model hf --model_args
pretrained=FOLDER,trust_remote_code=True` runs on it. The weights stay in `final_model.pt` (stored once):
`from_pretrained` reads them with circuitbench's own strict loader. No KV cache: generation recomputes the
sequence each step (these are small models), and attention masks are for right padding (what lm-eval's
log-likelihoods use); a row's logits never depend on pads after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from circuitbench.models.config import GPTConfig
from circuitbench.models.hf_files import MODEL_TYPE
from circuitbench.models.sparse_gpt import SparseGPT


class CircuitbenchConfig(PretrainedConfig):
    """The GPT's settings (`GPTConfig`, as in `beeg_config.json`) under `gpt`, plus transformers' bookkeeping."""

    model_type = MODEL_TYPE

    def __init__(self, gpt: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.gpt = dict(gpt or {})
        if self.gpt:
            kwargs.setdefault("vocab_size", self.gpt.get("vocab_size"))
            kwargs.setdefault("max_position_embeddings", self.gpt.get("block_size"))
            kwargs.setdefault("hidden_size", self.gpt.get("d_model"))
            kwargs.setdefault("num_hidden_layers", self.gpt.get("n_layer"))
            kwargs.setdefault("num_attention_heads", self.gpt.get("n_head"))
        super().__init__(**kwargs)


class CircuitbenchForCausalLM(PreTrainedModel, GenerationMixin):
    """The native `SparseGPT` as a transformers causal LM (held as `circuit_model`, as circuit-sparsity's is)."""

    config_class = CircuitbenchConfig
    base_model_prefix = "circuit_model"
    main_input_name = "input_ids"

    def __init__(self, config: CircuitbenchConfig, circuit_model: SparseGPT | None = None) -> None:
        super().__init__(config)
        self.circuit_model = circuit_model if circuit_model is not None else SparseGPT(GPTConfig(**config.gpt))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> CausalLMOutput:
        """Logits [B, T, vocab]; with `labels`, the mean next-token cross-entropy (-100 ignored), as transformers."""
        logits = self.circuit_model(input_ids)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                     ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
        """The whole sequence every step (no cache)."""
        return {"input_ids": input_ids[:, -self.circuit_model.config.block_size:]}

    @classmethod
    def from_pretrained(  # type: ignore[override]  # the folder's weights are read by circuitbench's own loader
        cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any
    ) -> CircuitbenchForCausalLM:
        """The folder's model, read by circuitbench's strict loader (a Hub id is downloaded first)."""
        from circuitbench.models.native import load_native

        directory = Path(pretrained_model_name_or_path)
        if not directory.is_dir():
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(str(pretrained_model_name_or_path), revision=kwargs.get("revision")))
        config = kwargs.get("config")
        if not isinstance(config, CircuitbenchConfig):
            config = CircuitbenchConfig.from_pretrained(directory)
        adapter = load_native(directory, device="cpu")
        model = cls(config, circuit_model=adapter.model)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if isinstance(dtype, torch.dtype):
            model.circuit_model.to(dtype)
        return model.eval()
