"""A readable description of a loaded model: shapes, parameter counts, weight and activation sparsity."""

from __future__ import annotations

from typing import Any

from circuitbench.errors import CircuitbenchError
from circuitbench.models.adapter import ModelAdapter


def describe(adapter: ModelAdapter) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Summarise a native sparse GPT.

    Returns:
        A dict of model-level facts, and one row per parameter tensor with its shape, total and
        nonzero entries and L0 fraction (nonzero / total).

    Raises:
        CircuitbenchError: for adapters that carry no native GPT configuration.
    """
    model = getattr(adapter, "model", None)
    cfg = getattr(adapter, "config", None)
    if model is None or cfg is None:
        raise CircuitbenchError(f"{adapter.name}: inspect supports native circuit-sparsity models only")
    rows = []
    seen: set[int] = set()
    total = nonzero = 0
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if id(p) in seen:
            continue
        seen.add(id(p))
        n, nz = p.numel(), int((p != 0).sum())
        total += n
        nonzero += nz
        rows.append({"tensor": name, "shape": "x".join(map(str, p.shape)), "params": n,
                     "nonzero": nz, "L0 frac": nz / n if n else 0.0})
    summary = {
        "name": adapter.name,
        "layers": cfg.n_layer,
        "d_model": cfg.d_model,
        "heads x d_head": f"{cfg.n_head} x {cfg.head_dim}",
        "d_mlp": cfg.mlp_dim,
        "vocab": cfg.vocab_size,
        "context": cfg.block_size,
        "norm": "RMSNorm" if cfg.rms_norm else f"LayerNorm ({'with' if cfg.ln_bias else 'no'} bias)",
        "mlp activation": cfg.activation_type,
        "activation sparsity": (f"AbsTopK afrac={cfg.afrac} at {', '.join(cfg.loctypes)}"
                                if cfg.afrac is not None else "none"),
        "attention sink": cfg.sink,
        "bigram table": cfg.enable_bigram_table,
        "unembedding": "tied" if cfg.tied_unembed else "untied",
        "tokenizer": adapter.tokenizer.name,
        "total params": f"{total:,}",
        "nonzero params": f"{nonzero:,} ({nonzero / total:.2%})",
        "node sites": f"{len(adapter.sites)} sites, {sum(s.width for s in adapter.sites):,} nodes",
    }
    return summary, rows
