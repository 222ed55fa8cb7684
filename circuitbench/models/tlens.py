"""TransformerLens `HookedTransformer` models as adapters, with the model's own hook points as sites.

The circuit-discovery tools (EAP-IG, ACDC, auto-circuit, MIB) are built on TransformerLens; a model a
researcher has as a `HookedTransformer` (processed or not) runs here unchanged. Its hook points map onto
circuitbench's sites:

    {i}.resid_in       blocks.i.hook_resid_pre
    {i}.attn.act_in    blocks.i.ln1's output (the attention read: after the norm's weight and bias)
    {i}.attn.q/k/v     blocks.i.attn.hook_q / hook_k / hook_v, [B, T, heads, d_head] seen flat
    {i}.attn.y         blocks.i.attn.hook_z, seen flat
    {i}.attn.resid_delta  blocks.i.hook_attn_out
    {i}.resid_mid      blocks.i.hook_resid_mid (sequential blocks)
    {i}.mlp.act_in     blocks.i.ln2's output
    {i}.mlp.post_act   blocks.i.mlp.hook_post
    {i}.mlp.resid_delta   blocks.i.hook_mlp_out
    final_resid        ln_final's input

TransformerLens calls `ln1` three times per block, once for each of the query, key and value inputs (the
same tensor unless `use_split_qkv_input` is on); the hook at `attn.act_in` runs once and its result feeds
all three, so a mask or an attribution sees one read, as in every other adapter.

Hooks are PyTorch forward hooks on the `HookPoint` modules (which is what TransformerLens's own
`add_hook` installs), removed in `finally`. Weights come from the `W_Q`, `W_K`, `W_V`, `W_O`, `W_in`,
`W_gate` and `W_out` parameters. transformer_lens is never imported here: the model arrives built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from circuitbench.errors import ConfigError
from circuitbench.models.adapter import (
    HookedForward,
    ResidMidShift,
    Site,
    block_hook_names,
    block_sites,
    flat_heads,
    fold_gqa_write,
)
from circuitbench.models.sparse_gpt import Hook
from circuitbench.models.tokenizer import Tokenizer

_ADVICE = {
    "attn_only": "an attention-only model has no MLP sites; circuitbench's site model has both sublayers",
    "use_split_qkv_input": "split q/k/v inputs are per-head copies of the stream; call "
                           "model.set_use_split_qkv_input(False)",
    "use_attn_in": "per-head attention inputs; call model.set_use_attn_in(False)",
    "ungroup_grouped_query_attention": "ungrouped GQA hooks repeat k and v per query head; set it to False",
}


def _refusal(cfg: Any) -> str | None:
    for flag, why in _ADVICE.items():
        if getattr(cfg, flag, False):
            return f"cfg.{flag} is on: {why}"
    if (getattr(cfg, "num_experts", None) or 0) > 1:
        return "cfg.num_experts > 1: mixture-of-experts MLPs have no single neuron site"
    arch = str(getattr(cfg, "original_architecture", "") or "")
    if arch.startswith(("Olmo2", "Olmo3")):
        return (f"original_architecture {arch}: ln1 and ln2 norm the sublayer outputs (post-norm), so they "
                "are not the reads")
    if getattr(cfg, "normalization_type", None) is None:
        return "cfg.normalization_type is None: without ln1/ln2 there is no read to hook"
    return None


class TLAdapter(HookedForward):
    """`ModelAdapter` for a TransformerLens `HookedTransformer` (see the module docstring for the sites).

    Args:
        model: the HookedTransformer; put in eval mode, its parameters frozen.
        tokenizer: a circuitbench `Tokenizer`; default: the model's own `model.tokenizer` (a fast tokenizer).
        name: display name; default: `cfg.model_name`.
        provenance: where the model came from.

    Raises:
        ConfigError: for a configuration whose hooks do not fit the site model (named, with the fix).
    """

    supports_answer_only = False
    format = "transformer_lens"

    @staticmethod
    def _refusal(model: Any) -> str | None:
        return _refusal(model.cfg)

    def __init__(self, model: Any, tokenizer: Tokenizer | None = None, name: str | None = None,
                 provenance: dict[str, Any] | None = None) -> None:
        cfg = model.cfg
        self.name = name or str(getattr(cfg, "model_name", None) or "hooked-transformer")
        refused = self._refusal(model)
        if refused is not None:
            raise ConfigError(f"{self.name}: {type(model).__name__} {refused}.")
        self.model = model.eval().requires_grad_(False)
        self.cfg = cfg
        if tokenizer is None:
            tokenizer = tokenizer_of(getattr(model, "tokenizer", None), self.name)
        self.tokenizer = tokenizer
        self.bos_token_id: int | None = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
        """The BOS token of the model's tokenizer, for SAEs trained with prepend_bos."""
        self.provenance: dict[str, Any] = {"format": self.format,
                                           "original_architecture": getattr(cfg, "original_architecture", None),
                                           **(provenance or {})}
        if "weights_sha256" not in self.provenance:  # the caller may have hashed it already
            self.provenance["weights_sha256"] = state_dict_sha256(model)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.context_length: int | None = int(cfg.n_ctx) if getattr(cfg, "n_ctx", None) else None
        self.blocks: list[Any] = list(model.blocks)  # TransformerLens ships no type information
        self.n_heads: int = cfg.n_heads
        self.n_kv_heads: int = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        self.d_head: int = cfg.d_head
        self.d_model: int = cfg.d_model
        self.parallel = [bool(getattr(cfg, "parallel_attn_mlp", False))] * len(self.blocks)
        self.gated = getattr(self.blocks[0].mlp, "W_gate", None) is not None
        d_mlp = int(self.blocks[0].mlp.W_out.shape[0])
        widths = {"d_model": self.d_model, "q": self.n_heads * self.d_head, "kv": self.n_kv_heads * self.d_head,
                  "d_mlp": d_mlp}
        self.sites: list[Site] = []
        for i in range(len(self.blocks)):
            weights = {"q": "W_Q", "k": self._kv_name("K"), "v": self._kv_name("V"), "attn_out": "W_O",
                       "mlp_neuron": "W_in", "mlp_out": "W_out"}
            sub = {"q": "attn", "k": "attn", "v": "attn", "attn_out": "attn"}
            weights = {k: f"blocks.{i}.{sub.get(k, 'mlp')}.{v}" for k, v in weights.items()}
            self.sites += block_sites(i, widths, self.parallel[i], weights)
        self.hook_names = block_hook_names(self.parallel)

    def _kv_name(self, which: str) -> str:
        attn = self.blocks[0].attn
        return f"_W_{which}" if hasattr(attn, f"_W_{which}") else f"W_{which}"  # GQA keeps n_kv_heads in _W_K

    # --- weights ----------------------------------------------------------------------------------

    def site_weight(self, site: Site) -> Tensor | None:
        """The matrix [site.width, source.width] from the model's weights (TransformerLens layouts transposed)."""
        if site.source is None:
            return None
        block = self.blocks[site.layer]
        attn, mlp = block.attn, block.mlp
        if site.kind in ("q", "k", "v"):
            name = "W_Q" if site.kind == "q" else self._kv_name(site.kind.upper())
            w = getattr(attn, name).detach()  # (heads, d_model, d_head)
            return w.permute(0, 2, 1).reshape(-1, w.shape[1])  # (heads*d_head, d_model)
        if site.kind == "attn_out":
            w_o = attn.W_O.detach()  # (n_heads, d_head, d_model)
            w = w_o.reshape(-1, w_o.shape[-1]).T  # (d_model, n_heads*d_head)
            return fold_gqa_write(w, self.n_heads, self.n_kv_heads, self.d_head)
        if site.kind == "mlp_neuron":
            w_in = mlp.W_in.detach().T  # (d_mlp, d_model)
            return w_in.float().abs() + mlp.W_gate.detach().T.float().abs() if self.gated else w_in
        if site.kind == "mlp_out":
            return mlp.W_out.detach().T  # (d_model, d_mlp)
        raise AssertionError(f"site {site.name} of kind {site.kind} has a source but no weight rule")

    # --- forward ----------------------------------------------------------------------------------

    @contextmanager
    def hooks(self, hook: Hook) -> Iterator[None]:
        """Install `hook` at every hook point for the duration of the block; always removed on exit."""
        handles: list[Any] = []

        def post(module: nn.Module, fn: Callable[[nn.Module, Any, Tensor], Tensor]) -> None:
            handles.append(module.register_forward_hook(fn))

        def plain(name: str) -> Callable[[nn.Module, Any, Tensor], Tensor]:
            return lambda m, args, out: hook(name, out)

        def per_head(name: str) -> Callable[[nn.Module, Any, Tensor], Tensor]:
            return lambda m, args, out: flat_heads(hook, name, out)  # (B, T, heads, d_head) seen flat

        def once_per_input(name: str) -> Callable[[nn.Module, Any, Tensor], Tensor]:
            seen: dict[str, tuple[Tensor, Tensor]] = {}  # ln1 runs for q, k and v inputs: hook the first

            def fn(m: nn.Module, args: Any, out: Tensor) -> Tensor:
                if "last" in seen and seen["last"][0] is args[0]:
                    return seen["last"][1]
                new = hook(name, out)
                seen["last"] = (args[0], new)
                return new

            return fn

        try:
            for i, block in enumerate(self.blocks):
                attn, mlp = block.attn, block.mlp
                post(block.hook_resid_pre, plain(f"{i}.resid_in"))
                post(block.ln1, once_per_input(f"{i}.attn.act_in"))
                for kind in ("q", "k", "v"):
                    post(getattr(attn, f"hook_{kind}"), per_head(f"{i}.attn.{kind}"))
                post(attn.hook_z, per_head(f"{i}.attn.y"))
                post(block.hook_attn_out, plain(f"{i}.attn.resid_delta"))
                if not self.parallel[i]:
                    post(block.hook_resid_mid, plain(f"{i}.resid_mid"))
                post(block.ln2, plain(f"{i}.mlp.act_in"))
                post(mlp.hook_post, plain(f"{i}.mlp.post_act"))
                post(block.hook_mlp_out, plain(f"{i}.mlp.resid_delta"))
            ln_final: nn.Module = self.model.ln_final
            handles.append(ln_final.register_forward_pre_hook(lambda m, args: (hook("final_resid", args[0]),
                                                                               *args[1:])))
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(self, tokens: Tensor, hook: Hook | None = None, at: Tensor | None = None) -> Tensor:
        """Logits [B, T, V] (or [B, V] at positions `at`) with `hook` applied at every hook point."""
        tokens = tokens.to(self.device)
        with self.hooks(hook) if hook is not None else nullcontext():
            logits = self.model(tokens, return_type="logits")  # (B, T, V)
        if at is not None:
            logits = logits[torch.arange(tokens.shape[0], device=self.device), at.to(self.device)]
        return logits


_BRIDGE_POINTS = ("hook_in", "ln1.hook_out", "attn.q.hook_out", "attn.k.hook_out", "attn.v.hook_out",
                  "attn.o.hook_in", "attn.hook_out", "ln2.hook_in", "ln2.hook_out", "mlp.out.hook_in", "mlp.hook_out")


class BridgeAdapter(TLAdapter):
    """`ModelAdapter` for a TransformerLens 3 `TransformerBridge`, through the bridge components' hook points.

    Booting a bridge replaces the transformers model's modules by components, each with `hook_in` and
    `hook_out`; the sites sit on those: `{i}.resid_in` blocks.i.hook_in, `attn.act_in` ln1.hook_out,
    `attn.q/k/v` attn.q/k/v.hook_out, `attn.y` attn.o.hook_in, `attn.resid_delta` attn.hook_out,
    `mlp.act_in` ln2.hook_out, `mlp.post_act` mlp.out.hook_in, `mlp.resid_delta` mlp.hook_out, and
    `final_resid` ln_final.hook_in. The bridge's `hook_resid_mid` is ln2's *input* alone (the block adds
    the stream it held before), so a replaced resid_mid also shifts the MLP write by the difference, as in
    the transformers adapter. Weights: the bridge's W_Q ... W_out. Sequential pre-norm blocks only.
    """

    format = "transformer_lens_bridge"

    @staticmethod
    def _refusal(model: Any) -> str | None:
        cfg = model.cfg
        if getattr(cfg, "parallel_attn_mlp", False):
            return "cfg.parallel_attn_mlp is on: circuitbench maps only sequential bridge blocks"
        if (getattr(cfg, "num_experts", None) or 0) > 1:
            return "cfg.num_experts > 1: mixture-of-experts MLPs have no single neuron site"
        block = model.blocks[0]
        missing = []
        for path in (*_BRIDGE_POINTS, "attn.W_Q", "attn.W_O", "mlp.W_in", "mlp.W_out"):
            try:
                block.get_submodule(path) if "hook" in path else _attr_path(block, path)
            except AttributeError:
                missing.append(path)
        if missing:
            return (f"blocks.0 lacks {', '.join(missing)}: its components are not the pre-norm layout "
                    "circuitbench maps (ln1, attn.q/k/v/o, ln2, mlp.in/out)")
        return None

    @contextmanager
    def hooks(self, hook: Hook) -> Iterator[None]:
        """Install `hook` at every hook point for the duration of the block; always removed on exit."""
        handles: list[Any] = []
        shift = ResidMidShift()  # the bridge's hook_resid_mid is ln2's input alone

        def post(block: nn.Module, path: str, fn: Callable[[nn.Module, Any, Tensor], Tensor]) -> None:
            handles.append(block.get_submodule(path).register_forward_hook(fn))

        def flat(name: str) -> Callable[[nn.Module, Any, Tensor], Tensor]:
            return lambda m, args, out: flat_heads(hook, name, out)

        def resid_mid(i: int) -> Callable[[nn.Module, Any, Tensor], Tensor]:
            return lambda m, args, out: shift.replaced(i, out, hook(f"{i}.resid_mid", out))

        def mlp_write(i: int) -> Callable[[nn.Module, Any, Tensor], Tensor]:
            return lambda m, args, out: shift.carried(i, hook(f"{i}.mlp.resid_delta", out))

        names = {"hook_in": "resid_in", "ln1.hook_out": "attn.act_in", "attn.q.hook_out": "attn.q",
                 "attn.k.hook_out": "attn.k", "attn.v.hook_out": "attn.v", "attn.o.hook_in": "attn.y",
                 "attn.hook_out": "attn.resid_delta", "ln2.hook_out": "mlp.act_in",
                 "mlp.out.hook_in": "mlp.post_act"}
        try:
            for i, block in enumerate(self.blocks):
                for path, site in names.items():
                    post(block, path, flat(f"{i}.{site}"))
                post(block, "ln2.hook_in", resid_mid(i))
                post(block, "mlp.hook_out", mlp_write(i))
            final: nn.Module = self.model.ln_final.hook_in
            handles.append(final.register_forward_hook(lambda m, args, out: hook("final_resid", out)))
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(self, tokens: Tensor, hook: Hook | None = None, at: Tensor | None = None) -> Tensor:
        """Logits [B, T, V] (or [B, V] at positions `at`) with `hook` applied at every hook point."""
        tokens = tokens.to(self.device)
        with self.hooks(hook) if hook is not None else nullcontext():
            logits = self.model(tokens)  # (B, T, V)
        if at is not None:
            logits = logits[torch.arange(tokens.shape[0], device=self.device), at.to(self.device)]
        return logits


def _attr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def tokenizer_of(tok: Any, name: str) -> Tokenizer:
    """A circuitbench tokenizer for a transformers fast tokenizer (or a circuitbench one, returned as is).

    Raises:
        ConfigError: when there is none, or it is a slow (Python) tokenizer.
    """
    from circuitbench.models.tokenizer import HFTokenizer
    from circuitbench.protocols import Tokenizer as TokenizerProtocol

    if isinstance(tok, TokenizerProtocol):
        return tok
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        kind = "no tokenizer" if tok is None else f"a {type(tok).__name__} (not a fast tokenizer)"
        raise ConfigError(f"{name}: the model has {kind}; pass tokenizer= (a transformers fast tokenizer or a "
                          "circuitbench Tokenizer)")
    return HFTokenizer.from_object(backend, name)


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, dtypes, shapes, bytes), for in-memory models."""
    from circuitbench.models.native import tensors_sha256

    return tensors_sha256(model.state_dict())
