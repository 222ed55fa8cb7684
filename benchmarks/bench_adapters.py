"""What each way of handing circuitbench a model costs, against the plain transformers model.

One gated forward and backward pass per adapter, against the model's own forward and backward, on the same
weights, in one run.

Usage: python benchmarks/bench_adapters.py [--arch llama] [--d-model 256] [--layers 4] [--batch 64]
                                           [--seq 32] [--reps 5] [--threads 2] [--json PATH]

One random transformers model (Llama layout: grouped-query attention, gated MLP; or GPT-2) is built from a
seed and handed over five ways: the transformers adapter on the model, an nnsight `LanguageModel`
around it, a TransformerLens `HookedTransformer` converted from it (unprocessed), a TransformerLens 3
`TransformerBridge` booted on it, and (the baseline) the model itself. Each adapter runs the gated pass the
pruning loop runs (every node's gate a leaf tensor, mean-ablation values, logits at one position per row,
backward to the gates); the baseline is the model's own forward (the unembedding at that one position)
with the loss backpropagated to its input embeddings. TransformerLens's forward has no way to unembed one
position, so its two adapters unembed all of them. Medians of `--reps` timed runs after one warm-up; the
ratios are comparable across machines, the seconds are not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from circuitbench.circuits.masks import NodeIndex, gate_hook
from circuitbench.models.hub import load_model

V = 2048


def build(arch: str, d_model: int, layers: int) -> Any:
    """A random transformers model, the same for the same arguments."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=V, n_positions=512, n_embd=d_model, n_layer=layers, n_head=d_model // 32)
        cfg.n_ctx = cfg.n_positions  # read by TransformerLens's config conversion
        return GPT2LMHeadModel(cfg).eval()
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=d_model, num_hidden_layers=layers,
                                        num_attention_heads=d_model // 32, num_key_value_heads=d_model // 64,
                                        intermediate_size=4 * d_model, max_position_embeddings=512)).eval()


def tokenizer() -> Any:
    """A word-level fast tokenizer over the vocabulary (the benchmark feeds token ids)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(V)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")))


def hooked_transformer(arch: str, model: Any, directory: Path) -> Any:
    """The unprocessed HookedTransformer of a saved model, converted as TransformerLens loads checkpoints."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as loading
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights

    cfg = loading.convert_hf_model_config(str(directory))
    cfg["tokenizer_name"] = None
    tl = HookedTransformer(HookedTransformerConfig(**cfg, device="cpu"), tokenizer=tokenizer())
    convert = convert_gpt2_weights if arch == "gpt2" else convert_llama_weights
    tl.load_and_process_state_dict(convert(model, tl.cfg), fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False)
    return tl.eval()


def median_s(fn: Callable[[], None], reps: int) -> float:
    """Median seconds of `reps` calls after one warm-up."""
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gated_pass(adapter: Any, tokens: torch.Tensor, at: torch.Tensor) -> Callable[[], None]:
    """One gated forward and backward pass to the gates, as the pruning loop runs it."""
    index = NodeIndex.of(adapter)
    values = torch.randn(index.value_size, generator=torch.Generator().manual_seed(1))

    def run() -> None:
        gates = torch.ones(index.size, requires_grad=True)
        adapter.forward(tokens, gate_hook(index, gates, values), at=at).logsumexp(-1).sum().backward()

    return run


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns one row per route (route, adapter, seconds, ratio)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    from nnsight import LanguageModel
    from transformer_lens.model_bridge import TransformerBridge

    model = build(args.arch, args.d_model, args.layers)
    tokens = torch.randint(0, V, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    at = torch.full((args.batch,), args.seq - 1)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "bench-model"  # never "llama" in it: TransformerLens guesses from names
        model.save_pretrained(directory)
        tl = hooked_transformer(args.arch, model, directory)
        bridge_model = build(args.arch, args.d_model, args.layers)  # booting a bridge rewires its model
        bridge = TransformerBridge.boot_transformers(str(directory), hf_model=bridge_model, tokenizer=tokenizer(),
                                                     device="cpu")
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()

    def plain() -> None:  # the unembedding only at the read position, as the transformers adapter does
        x = embeddings(tokens).detach().requires_grad_(True)
        head(model.base_model(inputs_embeds=x)[0][:, -1]).logsumexp(-1).sum().backward()

    routes = {
        "transformers model (plain, baseline)": None,
        "transformers adapter": load_model(model, tokenizer=tokenizer()),
        "nnsight LanguageModel": load_model(LanguageModel(model, tokenizer=tokenizer())),
        "TransformerLens HookedTransformer": load_model(tl),
        "TransformerLens TransformerBridge": load_model(bridge),
    }
    base = median_s(plain, args.reps)
    rows = []
    for route, adapter in routes.items():
        seconds = base if adapter is None else median_s(gated_pass(adapter, tokens, at), args.reps)
        rows.append({"route": route, "adapter": "-" if adapter is None else type(adapter).__name__,
                     "seconds": seconds, "ratio": seconds / base})
    print(f"{args.arch}, d_model {args.d_model}, {args.layers} layers, batch {args.batch} x {args.seq} tokens, "
          f"{args.threads} threads; median of {args.reps}")
    print(tabulate([[r["route"], r["adapter"], f"{r['seconds'] * 1e3:.1f}", f"{r['ratio']:.2f}"] for r in rows],
                   headers=["route", "adapter", "ms per fwd+bwd", "x plain"], tablefmt="github"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
