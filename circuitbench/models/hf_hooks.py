"""How a transformers model's forward pass reaches circuitbench's hook points: PyTorch hooks, one per site.

`LayerHooks` installs them on one model for one forward pass and removes them after. Each hook point is
read where the residual stream says (docs/design.md, "Other architectures and libraries on the same
sites"): a read is the input or output of its sublayer's norm, a write is the output of the module whose
output joins the stream. OPT runs its MLP on [B*T, d]; its hooks see [B, T, d] all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from circuitbench.models.adapter import ResidMidShift
from circuitbench.protocols import Hook

ForwardPre = Callable[..., Any]
"""A forward pre-hook: (module, args[, kwargs]) -> replaced args (and kwargs)."""
ForwardPost = Callable[[nn.Module, Any, Tensor], Tensor]
"""A forward hook: (module, args, output) -> replaced output."""


class LayerHooks:
    """Installs `hook` at every hook point of an `HFAdapter`'s layers; `remove()` takes them all off."""

    def __init__(self, adapter: Any, hook: Hook) -> None:
        self.adapter, self.arch, self.hook = adapter, adapter.arch, hook
        self.handles: list[Any] = []
        self.resid_mid = ResidMidShift()  # the layer adds the original resid_mid: carry a change to the MLP write
        self.lead: dict[int, torch.Size] = {}  # each layer input's leading shape (OPT's flat MLP hooks see it)

    def install(self) -> None:
        """Hook every layer, then the final norm's input (`final_resid`)."""
        for i, layer in enumerate(self.adapter._layers):
            self._attention(i, layer)
            self._mlp(i, layer)
        self.pre(self.adapter._final_norm, lambda m, args: (self.hook("final_resid", args[0]), *args[1:]))

    def remove(self) -> None:
        """Remove every hook this installed."""
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def pre(self, module: nn.Module, fn: ForwardPre, **kw: bool) -> None:
        """Register a forward pre-hook, to be removed by `remove()`."""
        self.handles.append(module.register_forward_pre_hook(fn, **kw))

    def post(self, module: nn.Module, fn: ForwardPost) -> None:
        """Register a forward hook, to be removed by `remove()`."""
        self.handles.append(module.register_forward_hook(fn))

    # --- one layer ------------------------------------------------------------------------------

    def _attention(self, i: int, layer: nn.Module) -> None:
        a = self.arch
        self.pre(layer, self.on_layer_input(i), with_kwargs=True)
        if a.reads_are_inputs:
            self.pre(layer.get_submodule(a.attn_norm), self.first_input(i, f"{i}.attn.act_in"), with_kwargs=True)
        else:
            self.post(layer.get_submodule(a.attn_norm), self.on_output(i, f"{i}.attn.act_in"))
        if a.fused is None:
            for path, kind in zip(a.qkv, ("q", "k", "v"), strict=True):
                self.post(layer.get_submodule(path), self.on_output(i, f"{i}.attn.{kind}"))
        else:
            self.post(layer.get_submodule(a.qkv[0]), self.fused_qkv(i))
        self.pre(layer.get_submodule(a.attn_out), self.on_input(i, f"{i}.attn.y"))
        self.post(layer.get_submodule(a.attn_write or a.attn_out), self.on_output(i, f"{i}.attn.resid_delta"))

    def _mlp(self, i: int, layer: nn.Module) -> None:
        a = self.arch
        mlp_norm = layer.get_submodule(a.mlp_norm)
        if a.reads_are_inputs:
            self.pre(mlp_norm, self.first_input(i, f"{i}.mlp.act_in"), with_kwargs=True)
        else:
            if not self.adapter.parallel[i]:
                self.pre(mlp_norm, self.on_resid_mid(i))
            self.post(mlp_norm, self.on_output(i, f"{i}.mlp.act_in"))
        self.pre(layer.get_submodule(a.mlp_out), self.on_input(i, f"{i}.mlp.post_act"))
        self.post(layer.get_submodule(a.mlp_write or a.mlp_out), self.on_mlp_write(i))

    # --- the hook functions -----------------------------------------------------------------------

    def hooked(self, i: int, name: str, x: Tensor) -> Tensor:
        """`hook(name, x)` with x seen as [B, T, d]; an unchanged activation stays the same object."""
        v = x.view(*self.lead[i], x.shape[-1]) if self.arch.flat_mlp and x.ndim == 2 else x
        y = self.hook(name, v)
        if v is x:
            return y
        return x if y is v else y.reshape(x.shape)

    def first_input(self, i: int, name: str) -> ForwardPre:
        """Replace a module's first input, passed positionally or as `hidden_states=`."""

        def fn(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            if args:
                return (self.hooked(i, name, args[0]), *args[1:]), kwargs
            return args, dict(kwargs, hidden_states=self.hooked(i, name, kwargs["hidden_states"]))

        return fn

    def on_layer_input(self, i: int) -> ForwardPre:
        """`resid_in`, recording the layer input's leading shape."""
        inner = self.first_input(i, f"{i}.resid_in")

        def fn(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            self.lead[i] = (args[0] if args else kwargs["hidden_states"]).shape[:-1]
            return inner(m, args, kwargs)

        return fn

    def on_output(self, i: int, name: str) -> ForwardPost:
        """Replace a module's output."""
        return lambda m, args, out: self.hooked(i, name, out)

    def on_input(self, i: int, name: str) -> ForwardPre:
        """Replace a module's first positional input."""
        return lambda m, args: (self.hooked(i, name, args[0]), *args[1:])

    def on_resid_mid(self, i: int) -> ForwardPre:
        """`resid_mid` at the MLP norm's input; a change is carried to the MLP write (`ResidMidShift`)."""

        def fn(m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (self.resid_mid.replaced(i, args[0], self.hooked(i, f"{i}.resid_mid", args[0])), *args[1:])

        return fn

    def on_mlp_write(self, i: int) -> ForwardPost:
        """The MLP write, plus any change made at `resid_mid`."""
        return lambda m, args, out: self.resid_mid.carried(i, self.hooked(i, f"{i}.mlp.resid_delta", out))

    def fused_qkv(self, layer: int) -> ForwardPost:
        """Split a fused qkv output into q, k, v [B, T, nh*hs], hook each, and reassemble the fused layout."""
        nh, hs, nkv, fused = self.adapter.n_heads, self.adapter.d_head, self.adapter.n_kv_heads, self.arch.fused
        names = [f"{layer}.attn.{kind}" for kind in ("q", "k", "v")]
        widths = [nh * hs, nkv * hs, nkv * hs]

        def fn(m: nn.Module, args: Any, out: Tensor) -> Tensor:
            if fused == "gpt2":
                parts = out.split(widths, dim=-1)  # (B, T, nh*hs), 2 x (B, T, nkv*hs)
            else:
                per_head = out.view(*out.shape[:-1], nh, 3, hs)  # (B, T, nh, 3, hs)
                parts = tuple(per_head[..., j, :].reshape(*out.shape[:-1], nh * hs) for j in range(3))
            new = [self.hook(n, p) for n, p in zip(names, parts, strict=True)]
            if all(x is p for x, p in zip(new, parts, strict=True)):
                return out
            if fused == "gpt2":
                return torch.cat(new, dim=-1)  # (B, T, 3*nh*hs)
            heads = [x.reshape(*out.shape[:-1], nh, hs) for x in new]  # 3 x (B, T, nh, hs)
            return torch.stack(heads, dim=-2).reshape(out.shape)  # (B, T, nh*3*hs)

        return fn
