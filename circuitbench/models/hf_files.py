"""The files that let transformers load a circuitbench model folder (`circuitbench.models.hf_automodel`).

A model folder in the released format (`beeg_config.json`, `final_model.pt`, `tokenizer.json`) gets four small
files, for every model `circuitbench train` writes and for the bundled ones:

- `config.json`: model_type `circuitbench_gpt`, the GPT's settings under `gpt`, and an `auto_map` naming the
  two modules below (transformers finds remote code through it, as for `openai/circuit-sparsity`);
- `configuration_circuitbench.py` and `modeling_circuitbench.py`: one import each from
  `circuitbench.models.hf_automodel`, so the model's code is circuitbench's own (installed), never a copy that
  could drift from it;
- `tokenizer_config.json`: `PreTrainedTokenizerFast` over `tokenizer.json`, `<|endoftext|>` as end of text.

Writing them needs no transformers; loading through them does.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_TYPE = "circuitbench_gpt"
FILES = ("config.json", "configuration_circuitbench.py", "modeling_circuitbench.py", "tokenizer_config.json")
"""What `write_hf_files` adds to a model folder."""
EOT = "<|endoftext|>"

_CONFIGURATION = '''"""transformers configuration of a circuitbench model folder (pip install circuitbench)."""

from circuitbench.models.hf_automodel import CircuitbenchConfig

__all__ = ["CircuitbenchConfig"]
'''
_MODELING = '''"""transformers model of a circuitbench model folder: circuitbench's own (pip install circuitbench)."""

from circuitbench.models.hf_automodel import CircuitbenchConfig, CircuitbenchForCausalLM

__all__ = ["CircuitbenchConfig", "CircuitbenchForCausalLM"]
'''


def write_hf_files(directory: Path) -> list[Path]:
    """Add transformers' files to a released-format model folder (see the module docstring); returns them."""
    from tokenizers import Tokenizer

    directory = Path(directory)
    gpt = json.loads((directory / "beeg_config.json").read_text())
    eot = Tokenizer.from_file(str(directory / "tokenizer.json")).token_to_id(EOT)
    config = {"model_type": MODEL_TYPE, "architectures": ["CircuitbenchForCausalLM"],
              "auto_map": {"AutoConfig": "configuration_circuitbench.CircuitbenchConfig",
                           "AutoModelForCausalLM": "modeling_circuitbench.CircuitbenchForCausalLM"},
              "vocab_size": gpt["vocab_size"], "max_position_embeddings": gpt["block_size"],
              "hidden_size": gpt["d_model"], "num_hidden_layers": gpt["n_layer"],
              "num_attention_heads": gpt["n_head"], "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot,
              "tie_word_embeddings": bool(gpt.get("tied_unembed", False)), "gpt": gpt}
    tokenizer = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT, "pad_token": EOT,
                 "model_max_length": gpt["block_size"]}
    out = [directory / name for name in FILES]
    out[0].write_text(json.dumps(config, indent=2) + "\n")
    out[1].write_text(_CONFIGURATION)
    out[2].write_text(_MODELING)
    out[3].write_text(json.dumps(tokenizer, indent=2) + "\n")
    return out
