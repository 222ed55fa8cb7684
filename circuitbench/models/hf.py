"""transformers causal LMs as adapters, with sites exposed by forward hooks.

Families (`ARCHITECTURES`): GPT-2, GPT-NeoX/Pythia, GPT-J, Phi-1/2, Phi-3, OPT, Llama, Mistral, Qwen2,
Qwen3, Gemma, Gemma-2 and Gemma-3 (text). The model's own code runs unchanged: every official hook point is
a PyTorch forward hook or forward pre-hook on a transformers module (the layer, a norm, a projection),
installed for one forward pass and removed in `finally`. A hook may replace its tensor, so masks and
ablations act on the real computation. Fused projections are split and reassembled: GPT-2's `c_attn` and
Phi-3's `qkv_proj` are [q | k | v] (k and v narrower under grouped-query attention); GPT-NeoX's
`query_key_value` is interleaved per head ([q_h | k_h | v_h] for each head h); Phi-3's `gate_up_proj` is
[gate | up].

Where the block differs from the pre-norm residual block, the sites follow the residual stream:
- Gemma-2/3 norm each sublayer's output before adding it (post_attention_layernorm, post_feedforward_layernorm);
  the writes (`attn_out`, `mlp_out`) are those norms' outputs, and their edges are the projection's nonzero
  weights (the norm's shared scale is not an edge, as for every pre-norm read). Attention soft-capping and
  sliding windows run inside transformers' attention; the final logit soft-cap is applied here, as
  transformers' LM head does.
- GPT-J and Phi-1/2 feed one norm's output to both the attention and the MLP, in parallel: each read is the
  input its sublayer receives, so masking one read leaves the other sublayer's input alone.
- OPT runs its MLP on flattened [B*T, d] rows; its MLP hooks see [B, T, d] like every other.
A configuration the site model cannot express (OPT-350m's post-norm stream, say) is refused with the reason
(`unsupported_parts`), never approximated.

transformers is imported only inside functions: importing circuitbench never imports it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from circuitbench.errors import ConfigError
from circuitbench.models.adapter import (
    HookedForward,
    Site,
    SiteKind,
    block_hook_names,
    block_sites,
    fold_gqa_write,
)
from circuitbench.models.hf_hooks import LayerHooks
from circuitbench.models.sparse_gpt import Hook
from circuitbench.models.tokenizer import Tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

QKV: tuple[SiteKind, SiteKind, SiteKind] = ("q", "k", "v")


@dataclass(frozen=True, slots=True)
class _Arch:
    """Where the hook points live, as module paths (relative to a layer unless noted)."""

    layers: str
    """The layer list, relative to the base model."""
    final_norm: str
    """The final norm, relative to the base model."""
    attn_norm: str
    """The module whose output is the attention read (its input with `reads_are_inputs`)."""
    mlp_norm: str
    """The module whose output is the MLP read (its input with `reads_are_inputs`); its input is resid_mid."""
    qkv: tuple[str, ...]
    """One fused projection, or q, k, v projections."""
    attn_out: str
    mlp_in: tuple[str, ...]
    """The projection(s) computing the MLP neurons' pre-activations (gate and up for gated MLPs)."""
    mlp_out: str
    fused: str | None
    """"gpt2" ([q | k | v], k and v narrower under GQA) or "neox" (per-head [q_h | k_h | v_h]) for a fused
    qkv projection."""
    fused_mlp: bool = False
    """One projection computes [gate | up] (Phi-3's gate_up_proj)."""
    attn_write: str | None = None
    """The module whose output is the attention's residual write, when not `attn_out` (Gemma's post-norm)."""
    mlp_write: str | None = None
    """The module whose output is the MLP's residual write, when not `mlp_out` (Gemma's post-norm)."""
    reads_are_inputs: bool = False
    """The attention and MLP reads are the inputs of `attn_norm` and `mlp_norm` (GPT-J: one norm feeds both
    the attention and the MLP, so each read is taken where its sublayer receives it)."""
    parallel: bool | None = None
    """Attention and MLP both read the layer's input; None: the layer's `use_parallel_residual` says."""
    flat_mlp: bool = False
    """The layer runs its MLP on [B*T, d] (OPT); the hooks still see [B, T, d]."""


_GPT2 = _Arch("h", "ln_f", "ln_1", "ln_2", ("attn.c_attn",), "attn.c_proj", ("mlp.c_fc",), "mlp.c_proj", "gpt2")
_NEOX = _Arch("layers", "final_layer_norm", "input_layernorm", "post_attention_layernorm",
              ("attention.query_key_value",), "attention.dense", ("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h", "neox")
_LLAMA = _Arch("layers", "norm", "input_layernorm", "post_attention_layernorm",
               ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.o_proj",
               ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", None)
# Gemma-2/3: the sublayers' outputs are normed before they join the stream, so the writes are those norms'
# outputs; the MLP reads the output of pre_feedforward_layernorm. Soft-capping and sliding windows run inside
# transformers' attention; the final logit soft-cap is applied in `HFAdapter.forward`.
_GEMMA = _Arch("layers", "norm", "input_layernorm", "pre_feedforward_layernorm",
               ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.o_proj",
               ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", None,
               attn_write="post_attention_layernorm", mlp_write="post_feedforward_layernorm")
_PHI3 = _Arch("layers", "norm", "input_layernorm", "post_attention_layernorm", ("self_attn.qkv_proj",),
              "self_attn.o_proj", ("mlp.gate_up_proj",), "mlp.down_proj", "gpt2", fused_mlp=True)
_OPT = _Arch("decoder.layers", "decoder.final_layer_norm", "self_attn_layer_norm", "final_layer_norm",
             ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.out_proj", ("fc1",), "fc2",
             None, flat_mlp=True)
_GPTJ = _Arch("h", "ln_f", "attn", "mlp", ("attn.q_proj", "attn.k_proj", "attn.v_proj"), "attn.out_proj",
              ("mlp.fc_in",), "mlp.fc_out", None, reads_are_inputs=True, parallel=True)

ARCHITECTURES: dict[str, _Arch] = {
    "gpt2": _GPT2,
    "gpt_neox": _NEOX,
    "gptj": _GPTJ,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,  # q_norm/k_norm come after q_proj/k_proj: the q, k sites are the projections' outputs
    "gemma": _LLAMA,  # Gemma-1: Llama's block; the (1 + w) norm gain and the embedding scale are the model's own
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,  # q_norm/k_norm as in Qwen3
    "phi3": _PHI3,
    "opt": _OPT,
    "phi": dataclasses.replace(_GPTJ, layers="layers", final_norm="final_layernorm", attn_norm="self_attn",
                               qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                               attn_out="self_attn.dense", mlp_in=("mlp.fc1",), mlp_out="mlp.fc2"),  # Phi-1/2
}
"""model_type -> layout. Only layouts whose block computes exactly what the hooks assume are listed."""

_NOT_SUPPORTED = {
    "gemma3": "a multimodal Gemma-3 checkpoint (Gemma3ForConditionalGeneration); load its text model "
              "(model_type gemma3_text, Gemma3ForCausalLM, as the 1B checkpoint ships), which circuitbench supports",
}


def unsupported_parts(cfg: Any) -> str | None:
    """Why a config of a listed model type has a part the site model cannot express, or None.

    Such a model is refused rather than approximated: its sublayer writes would not add up to the stream
    that later reads see, or a hook would sit at the wrong point.
    """
    model_type = getattr(cfg, "model_type", None)
    if model_type == "opt" and not getattr(cfg, "do_layer_norm_before", True):
        return ("do_layer_norm_before is false (OPT-350m's post-norm layout): the residual stream is re-normed "
                "after each sublayer, so sublayer writes do not add up to what later sublayers read")
    if model_type == "opt" and getattr(cfg, "_remove_final_layer_norm", False):
        return "_remove_final_layer_norm is true: there is no final norm to read final_resid at"
    if model_type == "gpt2" and getattr(cfg, "add_cross_attention", False):
        return "add_cross_attention is true: cross-attention reads an encoder, which has no sites here"
    return None


def unsupported_type(model_type: Any) -> str:
    """Why a config.json model_type is refused, and the model types that are supported."""
    hint = _NOT_SUPPORTED.get(model_type) if isinstance(model_type, str) else None
    why = hint or "circuitbench has no hook layout for it"
    return f"model_type {model_type!r}: {why}; supported model types: {', '.join(ARCHITECTURES)}."


def _dense(module: nn.Module) -> Tensor:
    """The weight of a projection as [out, in]; GPT-2's Conv1D stores it transposed ([in, out])."""
    w = module.weight
    assert isinstance(w, Tensor)
    w = w.detach()
    return w.T if type(module).__name__ == "Conv1D" else w


def _out_features(module: nn.Module) -> int:
    return int(_dense(module).shape[0])


class HFAdapter(HookedForward):
    """`ModelAdapter` for a transformers causal LM of a supported layout (see `ARCHITECTURES`).

    Args:
        model: a `PreTrainedModel` with an LM head (e.g. from `AutoModelForCausalLM`). It is put in eval
            mode and its parameters are frozen.
        tokenizer: its tokenizer (the circuitbench `Tokenizer` protocol).
        name: the display name.
        provenance: where the model came from (path, weights hash, ...).

    Raises:
        ConfigError: when the model's `model_type` is not a supported layout.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Tokenizer,
        name: str,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        model_type = getattr(model.config, "model_type", None)
        if model_type not in ARCHITECTURES:
            raise ConfigError(f"{name}: config.json {unsupported_type(model_type)}")
        refused = unsupported_parts(model.config)
        if refused is not None:
            raise ConfigError(f"{name}: config.json: {refused}; circuitbench does not approximate it.")
        self.model = model.eval().requires_grad_(False)  # adapters never train the model
        self.hf_config = model.config
        self.context_length: int | None = next(
            (int(getattr(model.config, k)) for k in ("n_positions", "max_position_embeddings")
             if getattr(model.config, k, None)), None)
        self.model_type: str = model_type
        self.arch = ARCHITECTURES[model_type]
        self.tokenizer = tokenizer
        self.name = name
        self.provenance = dict(provenance or {})
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._base: nn.Module = model.base_model
        self._head: nn.Module = model.get_output_embeddings()
        layers = self._base.get_submodule(self.arch.layers)
        assert isinstance(layers, nn.ModuleList)
        self._layers: list[nn.Module] = list(layers)
        self._final_norm: nn.Module = self._base.get_submodule(self.arch.final_norm)
        self._param_names = {id(m): n for n, m in model.named_modules()}
        self.parallel = [bool(getattr(layer, "use_parallel_residual", False)) if self.arch.parallel is None
                         else self.arch.parallel for layer in self._layers]
        cfg = model.config
        self.n_heads: int = cfg.num_attention_heads
        self.n_kv_heads: int = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        first = self._layers[0]
        if self.arch.fused is None:
            q_width = _out_features(first.get_submodule(self.arch.qkv[0]))
        else:  # [q | k | v] or per head: n_heads query and 2 * n_kv_heads key and value heads
            fused_width = _out_features(first.get_submodule(self.arch.qkv[0]))
            q_width = fused_width * self.n_heads // (self.n_heads + 2 * self.n_kv_heads)
        self.d_head = q_width // self.n_heads
        self.bos_token_id: int | None = getattr(cfg, "bos_token_id", None)
        """The BOS token (config.json), for SAEs trained with prepend_bos."""
        self.logit_softcap: float | None = getattr(cfg, "final_logit_softcapping", None)
        """Gemma-2's final soft-cap: logits = cap * tanh(logits / cap), as transformers' LM head applies it."""
        self.d_model = int(_dense(first.get_submodule(self.arch.attn_out)).shape[0])
        self.d_mlp = int(_dense(first.get_submodule(self.arch.mlp_out)).shape[1])
        self.sites = self._make_sites()
        self.hook_names = self._make_hook_names()

    # --- layout -----------------------------------------------------------------------------------

    def _module(self, layer: int, path: str) -> nn.Module:
        return self._layers[layer].get_submodule(path)

    def _weight_name(self, layer: int, path: str) -> str:
        return f"{self._param_names[id(self._module(layer, path))]}.weight"

    def _make_sites(self) -> list[Site]:
        """The eight maskable sites per layer (`block_sites`).

        `Site.weight` names the parameter; `site_weight` is the source of truth for the matrix (transposed
        from Conv1D; GPT-2's and Phi-3's `rows` index the [out, in] view; NeoX's per-head interleaved rows
        have no range).
        """
        a = self.arch
        q_w, kv_w = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        fused_rows = {"q": (0, q_w), "k": (q_w, q_w + kv_w), "v": (q_w + kv_w, q_w + 2 * kv_w)}
        widths = {"d_model": self.d_model, "q": q_w, "kv": kv_w, "d_mlp": self.d_mlp}
        sites: list[Site] = []
        for i in range(len(self._layers)):
            weights: dict[str, str] = {kind: self._weight_name(i, a.qkv[0] if a.fused else a.qkv[j])
                                       for j, kind in enumerate(QKV)}
            weights.update(attn_out=self._weight_name(i, a.attn_out), mlp_neuron=self._weight_name(i, a.mlp_in[0]),
                           mlp_out=self._weight_name(i, a.mlp_out))
            rows = fused_rows if a.fused == "gpt2" else None  # NeoX rows interleave: no range
            sites += block_sites(i, widths, self.parallel[i], weights, rows)  # type: ignore[arg-type]
        return sites

    def _make_hook_names(self) -> list[str]:
        return block_hook_names(self.parallel)

    # --- weights ----------------------------------------------------------------------------------

    def site_weight(self, site: Site) -> Tensor | None:
        """The matrix [site.width, source.width] connecting `site.source` to `site`, from the actual weights.

        Folded matrices (nonzero iff some connection exists): a GQA attention write sums |o_proj| over the
        query heads sharing each kv head; a gated MLP's neurons sum |gate| + |up|.
        """
        if site.source is None:
            return None
        a, i = self.arch, site.layer
        if site.kind in ("q", "k", "v"):
            if a.fused is None:
                return _dense(self._module(i, a.qkv[("q", "k", "v").index(site.kind)]))
            w = _dense(self._module(i, a.qkv[0]))  # (3*nh*hs, d_model)
            if a.fused == "gpt2":
                assert site.rows is not None
                return w[site.rows[0] : site.rows[1]]
            j = ("q", "k", "v").index(site.kind)
            return w.view(self.n_heads, 3, self.d_head, -1)[:, j].reshape(self.n_heads * self.d_head, -1)
        if site.kind == "attn_out":
            w = _dense(self._module(i, a.attn_out))  # (d_model, nh*hs)
            return fold_gqa_write(w, self.n_heads, self.n_kv_heads, self.d_head)  # (d_model, nkv*hs)
        if site.kind == "mlp_neuron":
            ws = [_dense(self._module(i, p)) for p in a.mlp_in]  # each (d_mlp, d_model); Phi-3: (2*d_mlp, d_model)
            if a.fused_mlp:
                ws = list(ws[0].chunk(2, dim=0))  # [gate | up], split as Phi3MLP does
            return ws[0] if len(ws) == 1 else sum(w.float().abs() for w in ws)  # type: ignore[return-value]
        if site.kind == "mlp_out":
            return _dense(self._module(i, a.mlp_out))  # (d_model, d_mlp)
        raise AssertionError(f"site {site.name} of kind {site.kind} has a source but no weight rule")

    # --- forward ----------------------------------------------------------------------------------

    @contextmanager
    def hooks(self, hook: Hook) -> Iterator[None]:
        """Install `hook` at every hook point for the duration of the block; always removed on exit."""
        installed = LayerHooks(self, hook)
        try:
            installed.install()
            yield
        finally:
            installed.remove()

    def forward(self, tokens: Tensor, hook: Hook | None = None, at: Tensor | None = None) -> Tensor:
        """Logits [B, T, V] (or [B, V] at positions `at`) with `hook` applied at every hook point.

        No attention mask is passed: task tokens are right-padded and read at or before the last prompt
        token, which a causal model computes without seeing the padding.
        """
        tokens = tokens.to(self.device)
        with self.hooks(hook) if hook is not None else nullcontext():
            h = self._base(input_ids=tokens, use_cache=False)[0]  # (B, T, d_model), after the final norm
        if at is not None:
            rows = torch.arange(tokens.shape[0], device=self.device)
            h = h[rows, at.to(self.device)]  # (B, d_model): the unembedding only where it is read
        logits = self._head(h)  # (B, [T,] V)
        if self.logit_softcap is not None:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits
