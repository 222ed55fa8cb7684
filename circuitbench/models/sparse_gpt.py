"""The weight-sparse GPT of Gao et al. (2025), nanoGPT-style, with the released checkpoint's key names.

Written from the paper and the released format; the module names (`transformer.h.0.attn.c_attn`, ...)
match the checkpoint's state-dict keys so loading is a key-for-key copy. Every named activation of the
official hook recorder passes through `hook(name, x)`, which may record it or replace it: one mechanism
serves caching, masking and ablation, with no module hooks to install or remove.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from circuitbench.models.config import GPTConfig
from circuitbench.protocols import Hook


def abs_topk(x: Tensor, k: int) -> Tensor:
    """Keep the k entries of largest magnitude along the last dim, zero the rest (App. A: AbsTopK).

    Computed as x times a 0/1 mask scattered from the top-k indices, rather than as
    `zeros.scatter(idx, x.gather(idx))`: the same entries kept (the same top-k call picks them, ties
    included), the same values and the same gradient (1 on the kept entries, 0 elsewhere), with a
    one-byte mask instead of a zero tensor and a gather, and a backward that is one multiply instead of
    a gather and a scatter-add.
    """
    if k >= x.shape[-1]:
        return x
    idx = x.detach().abs().topk(k, dim=-1, sorted=False).indices
    keep = torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter_(-1, idx, True)
    return x * keep


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (eps 1e-5, as the official model)."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the last dimension."""
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def _norm(cfg: GPTConfig, width: int) -> nn.Module:
    # nn.RMSNorm with eps=None uses finfo(dtype).eps, exactly as the official model constructs it.
    return nn.RMSNorm(width) if cfg.rms_norm else LayerNorm(width, bias=cfg.ln_bias)


class AttnSink(nn.Module):
    """Holds the per-head sink logit; named `attn_imp` so its key matches the checkpoint."""

    def __init__(self, n_head: int) -> None:
        super().__init__()
        self.sink_logit = nn.Parameter(torch.zeros(n_head))


class _Sparsifier:
    """Applies AbsTopK at the configured locations; a no-op elsewhere."""

    def __init__(self, cfg: GPTConfig) -> None:
        self.afrac = cfg.afrac
        self.locs = frozenset(cfg.loctypes)

    def __call__(self, x: Tensor, loc: str) -> Tensor:
        if self.afrac is None or loc not in self.locs:
            return x
        return abs_topk(x, int(self.afrac * x.shape[-1]))


def _no_hook(name: str, x: Tensor) -> Tensor:
    return x


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with d_head independent of d_model, and an optional sink."""

    def __init__(self, cfg: GPTConfig, sparsify: _Sparsifier) -> None:
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.head_dim
        inner = self.n_head * self.d_head
        self.c_attn = nn.Linear(cfg.d_model_in, 3 * inner, bias=cfg.bias)
        self.c_proj = nn.Linear(inner, cfg.d_model, bias=cfg.bias)
        self.attn_imp = AttnSink(cfg.n_head) if cfg.sink else None
        self.sparsify = sparsify

    def forward(self, x: Tensor, prefix: str, hook: Hook, at: Tensor | None = None) -> Tensor:
        """Attention write [B, T, d_model] for a normed input; hook points are named under `prefix`.

        With `at` ([B]), only the queries at position at[b] of each row: keys and values are computed at
        every position, q and everything after it only there, and the write is [B, 1, d_model].
        """
        B, T, _ = x.shape
        x = hook(f"{prefix}.act_in", self.sparsify(x, "attn_in"))
        q, k, v = self.c_attn(x).split(self.n_head * self.d_head, dim=2)  # 3 x (B, T, nh*hs)
        if at is not None:
            q = q[torch.arange(B, device=q.device), at][:, None]  # (B, 1, nh*hs)
        Tq = q.shape[1]
        q = hook(f"{prefix}.q", self.sparsify(q, "attn_q"))
        k = hook(f"{prefix}.k", self.sparsify(k, "attn_k"))
        v = hook(f"{prefix}.v", self.sparsify(v, "attn_v"))
        q = q.view(B, Tq, self.n_head, self.d_head).transpose(1, 2)  # (B, nh, Tq, hs)
        k = k.view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        if at is not None:
            y = self._attention_at(q, k, v, at)  # (B, nh, 1, hs)
        elif self.attn_imp is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        else:
            y = self._sink_attention(q, k, v)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, Tq, self.n_head * self.d_head)  # (B, Tq, nh*hs)
        y = hook(f"{prefix}.y", y)
        return self.sparsify(self.c_proj(y), "attn_out")  # (B, T, d_model)

    def _sink_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # The sink is a dummy key slot 0 with value zero, always visible, whose attention logit is the
        # learned sink_logit instead of q.k: it only adds exp(sink_logit) to each softmax denominator.
        #
        # Computed with the fused causal kernel (no T x T mask tensor): one extra head dimension
        # carries the sink logit, q' = [q, 1], k'_real = [k, 0], k'_sink = [0, s * sqrt(D)] with the
        # scale fixed to 1/sqrt(D), so q'.k' * scale is q.k / sqrt(D) for real keys and exactly s for
        # the sink. A dummy query in front makes the causal mask square: real query t (row t + 1)
        # then sees the sink and real keys 0..t, as it should; the dummy row is dropped.
        assert self.attn_imp is not None
        B, H, T, D = q.shape
        out_dtype = q.dtype
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # The fused CPU kernel with an odd head size is faster in float32 than in bfloat16
            # (benchmarks/bench_train.py), and float32 is the more accurate of the two anyway.
            with torch.autocast("cpu", enabled=False):
                return self._sink_attention(q.float(), k.float(), v.float()).to(out_dtype)
        scale = 1.0 / math.sqrt(D)
        s = self.attn_imp.sink_logit.to(q.dtype)  # (nh,)
        one = q.new_ones(B, H, T, 1)
        qa = torch.cat([q.new_zeros(B, H, 1, D + 1), torch.cat([q, one], dim=-1)], dim=2)  # (B,nh,T+1,D+1)
        sink_k = torch.cat([q.new_zeros(H, D), (s * math.sqrt(D))[:, None]], dim=-1)  # (nh, D+1)
        ka = torch.cat([sink_k[:, None, :].expand(B, H, 1, D + 1), torch.cat([k, one.new_zeros(B, H, T, 1)], dim=-1)],
                       dim=2)  # (B, nh, T+1, D+1)
        va = torch.cat([v.new_zeros(B, H, 1, D), v], dim=2)  # (B, nh, T+1, D)
        # v is padded to D + 1 as well: the fused CPU kernel wants one head size for q, k and v.
        y = F.scaled_dot_product_attention(qa, ka, F.pad(va, (0, 1)), is_causal=True, scale=scale)
        return y[:, :, 1:, :D]  # (B, nh, T, hs)

    def _attention_at(self, q: Tensor, k: Tensor, v: Tensor, at: Tensor) -> Tensor:
        """One query per row (q: [B, nh, 1, hs], at position at[b]) against keys 0..at[b], and the sink."""
        B, H, _, D = q.shape
        T = k.shape[2]
        visible = torch.arange(T, device=q.device)[None, :] <= at[:, None]  # (B, T)
        if self.attn_imp is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=visible[:, None, None, :])
        out_dtype = q.dtype
        q, k, v = q.float(), k.float(), v.float()  # as `_sink_attention` on CPU: float32 softmax
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)  # (B, nh, 1, T)
        scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
        sink = self.attn_imp.sink_logit.float()[None, :, None, None].expand(B, H, 1, 1)
        weights = torch.softmax(torch.cat([sink, scores], dim=-1), dim=-1)[..., 1:]  # the sink's value is zero
        return (weights @ v).to(out_dtype)  # (B, nh, 1, hs)

    def _sink_attention_masked(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The sink by an explicit additive mask (the reference form; `_sink_attention` equals it)."""
        assert self.attn_imp is not None
        B, H, T, D = q.shape
        zeros = q.new_zeros(B, H, 1, D)
        k = torch.cat([zeros, k], dim=2)  # (B, nh, T+1, hs)
        v = torch.cat([zeros, v], dim=2)  # (B, nh, T+1, hs)
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        mask = q.new_zeros(H, T, T + 1)  # (nh, T, T+1)
        mask[:, :, 1:].masked_fill_(~causal, float("-inf"))
        mask[:, :, 0] = self.attn_imp.sink_logit.to(q.dtype)[:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)


class MLP(nn.Module):
    """Two-layer MLP with gelu or relu."""

    def __init__(self, cfg: GPTConfig, sparsify: _Sparsifier) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model_in, cfg.mlp_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.mlp_dim, cfg.d_model, bias=cfg.bias)
        self.act = nn.GELU() if cfg.activation_type == "gelu" else nn.ReLU()
        self.sparsify = sparsify

    def forward(self, x: Tensor, prefix: str, hook: Hook) -> Tensor:
        """MLP write [B, T, d_model] for a normed input; hook points are named under `prefix`."""
        x = hook(f"{prefix}.act_in", self.sparsify(x, "mlp_in"))
        h = hook(f"{prefix}.post_act", self.sparsify(self.act(self.c_fc(x)), "mlp_neuron"))
        return self.sparsify(self.c_proj(h), "mlp_out")  # (B, T, d_model)


class Block(nn.Module):
    """Pre-norm transformer block; with d_pos_emb, normed positions are concatenated to each input."""

    def __init__(self, cfg: GPTConfig, sparsify: _Sparsifier) -> None:
        super().__init__()
        self.ln_1 = _norm(cfg, cfg.d_model)
        self.attn = CausalSelfAttention(cfg, sparsify)
        self.ln_2 = _norm(cfg, cfg.d_model)
        self.mlp = MLP(cfg, sparsify)
        if cfg.d_pos_emb is not None:
            self.ln_p1 = _norm(cfg, cfg.d_pos_emb)
            self.ln_p2 = _norm(cfg, cfg.d_pos_emb)
        self.cat_pos = cfg.d_pos_emb is not None
        self.resid_relu = cfg.residual_activation_type == "relu"
        self.sparsify = sparsify

    def _input(self, norm: nn.Module, pnorm: str, x: Tensor, pos: Tensor | None) -> Tensor:
        x = norm(x)
        if not self.cat_pos:
            return x
        assert pos is not None
        p = getattr(self, pnorm)(pos).expand(x.shape[0], -1, -1)  # (B, T, d_pos_emb)
        return torch.cat([x, p], dim=-1)  # (B, T, d_model_in)

    def forward(self, x: Tensor, layer: int, hook: Hook, pos: Tensor | None, at: Tensor | None = None) -> Tensor:
        """The residual stream after this block; [B, 1, d_model] at positions `at` when given.

        See `SparseGPT.forward`'s `answer_only`.
        """
        x = hook(f"{layer}.resid_in", x)
        delta = self.attn(self._input(self.ln_1, "ln_p1", x, pos), f"{layer}.attn", hook, at)
        if at is not None:
            rows = torch.arange(x.shape[0], device=x.device)
            x = x[rows, at][:, None]  # (B, 1, d_model)
            if pos is not None:
                pos = pos[0, at][:, None]  # (B, 1, d_pos_emb)
        x = x + hook(f"{layer}.attn.resid_delta", delta)
        if self.resid_relu:
            x = torch.relu(x)
        x = hook(f"{layer}.resid_mid", self.sparsify(x, "resid_post_attn"))
        delta = self.mlp(self._input(self.ln_2, "ln_p2", x, pos), f"{layer}.mlp", hook)
        x = x + hook(f"{layer}.mlp.resid_delta", delta)
        if self.resid_relu:
            x = torch.relu(x)
        return self.sparsify(x, "resid_post_mlp")


class _Transformer(nn.Module):
    """The checkpoint's `transformer.*` modules (token and position embeddings, blocks, final norm)."""

    def __init__(self, cfg: GPTConfig, sparsify: _Sparsifier) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_pos_emb or cfg.d_model)
        self.h = nn.ModuleList([Block(cfg, sparsify) for _ in range(cfg.n_layer)])
        self.ln_f = _norm(cfg, cfg.d_model)


class SparseGPT(nn.Module):
    """The circuit-sparsity GPT: state-dict keys equal the released checkpoint's."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        sparsify = _Sparsifier(cfg)
        self._sparsify = sparsify  # shared by every block: set_afrac changes them all
        self.transformer = _Transformer(cfg, sparsify)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tied_unembed:
            self.transformer.wte.weight = self.lm_head.weight
        self.register_buffer("final_logits_bias", torch.zeros(cfg.vocab_size))
        self.bigram_table: Tensor | None
        if cfg.enable_bigram_table:
            table = torch.zeros(cfg.vocab_size, cfg.vocab_size)
            if cfg.learnable_bigram_table:
                self.bigram_table = nn.Parameter(table)
            else:
                self.register_buffer("bigram_table", table)
        else:
            self.bigram_table = None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def set_afrac(self, afrac: float | None) -> None:
        """Change the AbsTopK fraction at every sparsified site (None: no activation sparsity).

        Training anneals it (`circuitbench train --anneal-afrac`); the config keeps the final value.
        """
        self._sparsify.afrac = None if afrac is None or afrac >= 1.0 else afrac

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor, hook: Hook | None = None, at: Tensor | None = None,
                answer_only: bool = False) -> Tensor:
        """Logits for token ids.

        Args:
            idx: LongTensor [B, T], T <= block_size.
            hook: called as hook(name, x) at every official hook point; its return value replaces x.
            at: optional LongTensor [B]: compute logits only at position at[b] of row b. The unembedding
                is most of a small model's cost, and scoring needs one position per row.
            answer_only: with `at`, also compute the last block only where it reaches those logits: its
                attention keys and values at every position, everything from its queries on at position
                at[b] only. The logits are the same (up to float rounding: one query's attention is
                computed unfused); hooks in the last block from `q` on see [B, 1, width]. Pruning uses
                it; activation statistics over positions must not.

        Returns:
            Logits [B, T, vocab_size], or [B, vocab_size] when `at` is given.
        """
        hook = hook or _no_hook
        B, T = idx.shape
        wpe = self.transformer.wpe.weight[:T].unsqueeze(0)  # (1, T, d_model or d_pos_emb)
        x = self.transformer.wte(idx)  # (B, T, d_model)
        pos = None
        if self.config.d_pos_emb is None:
            x = x + wpe  # zeroed in the released models, but part of the format
        else:
            pos = wpe
        n_layer = len(self.transformer.h)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, layer, hook, pos, at if answer_only and at is not None and layer == n_layer - 1 else None)
        x = hook("final_resid", x)
        if at is not None:
            rows = torch.arange(B, device=idx.device)
            x = x[:, 0] if answer_only else x[rows, at]  # (B, d_model)
            idx = idx[rows, at]  # (B,)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, [T,] V)
        # + bias + bigram row, in place on the promoted copy: the same additions in the same order and dtype
        # as out of place (bit for bit), without two more (B, T, V) temporaries
        bias = cast(Tensor, self.final_logits_bias)  # a registered buffer
        logits = logits.to(torch.result_type(logits, bias)).add_(bias)
        if self.bigram_table is not None:
            logits = logits.add_(F.embedding(idx, self.bigram_table).to(logits.dtype))
        return logits
