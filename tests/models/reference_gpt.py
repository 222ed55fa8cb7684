"""An independent, deliberately naive oracle of the official circuit-sparsity forward pass.

It shares no code with circuitbench.models: it reads the state dict and the raw config dict directly,
loops over heads, masks with finfo.min as the official non-flash path does, and builds the sink as an
explicit extra key column. It is itself checked against the official implementation's recorded
outputs (the shared fixture) before it is trusted on configurations that fixture does not cover.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _topk_abs(x, frac):
    k = int(frac * x.shape[-1])
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep.scatter_(-1, x.abs().topk(k, dim=-1).indices, True)
    return torch.where(keep, x, torch.zeros_like(x))


def reference_forward(cfg: dict, sd: dict, idx: torch.Tensor):
    """Return (logits, acts) for a raw config dict and state dict, following the official semantics."""
    cfg = dict(cfg)
    if "n_mlp" in cfg:
        cfg["d_mlp"] = cfg.pop("n_mlp")
    n_layer, n_head, d_model = cfg["n_layer"], cfg["n_head"], cfg["d_model"]
    d_head = cfg.get("d_head") or d_model // n_head
    afrac = cfg.get("afrac")
    locs = set(cfg.get("afrac_loctypes", "attn_in,attn_out,mlp_in,mlp_out").split(","))
    rms = cfg.get("rms_norm", False)
    relu_mlp = cfg.get("activation_type", "gelu") == "relu"
    resid_relu = cfg.get("residual_activation_type", "identity") == "relu"
    sink = cfg.get("sink", False)
    d_pos = cfg.get("d_pos_emb")

    def sp(x, loc):
        return _topk_abs(x, afrac) if afrac is not None and loc in locs else x

    def norm(x, prefix):
        w = sd[prefix + ".weight"]
        if rms:
            eps = torch.finfo(x.dtype).eps
            return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        out = (x - mu) / torch.sqrt(var + 1e-5) * w
        return out + sd[prefix + ".bias"] if prefix + ".bias" in sd else out

    def linear(x, prefix):
        out = x @ sd[prefix + ".weight"].T
        return out + sd[prefix + ".bias"] if prefix + ".bias" in sd else out

    acts = {}
    B, T = idx.shape
    wte = sd.get("transformer.wte.weight", sd.get("lm_head.weight"))
    x = wte[idx]
    pos = sd["transformer.wpe.weight"][:T]
    if d_pos is None:
        x = x + pos
    for i in range(n_layer):
        p = f"transformer.h.{i}"
        acts[f"{i}.resid_in"] = x
        h = norm(x, p + ".ln_1")
        if d_pos is not None:
            h = torch.cat([h, norm(pos, p + ".ln_p1").expand(B, T, d_pos)], -1)
        h = sp(h, "attn_in")
        acts[f"{i}.attn.act_in"] = h
        qkv = linear(h, p + ".attn.c_attn")
        inner = n_head * d_head
        q, k = sp(qkv[..., :inner], "attn_q"), sp(qkv[..., inner:2 * inner], "attn_k")
        v = sp(qkv[..., 2 * inner:], "attn_v")
        acts[f"{i}.attn.q"], acts[f"{i}.attn.k"], acts[f"{i}.attn.v"] = q, k, v
        heads = []
        for hd in range(n_head):
            sl = slice(hd * d_head, (hd + 1) * d_head)
            scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d_head)  # B,T,T
            future = torch.ones(T, T, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
            vals = v[..., sl]
            if sink:
                s = sd[p + ".attn.attn_imp.sink_logit"][hd].expand(B, T, 1)
                scores = torch.cat([s, scores], -1)
                vals = torch.cat([torch.zeros(B, 1, d_head), vals], 1)
            heads.append(torch.softmax(scores, -1) @ vals)
        y = torch.cat(heads, -1)
        acts[f"{i}.attn.y"] = y
        delta = sp(linear(y, p + ".attn.c_proj"), "attn_out")
        acts[f"{i}.attn.resid_delta"] = delta
        x = x + delta
        if resid_relu:
            x = x.clamp_min(0)
        x = sp(x, "resid_post_attn")
        acts[f"{i}.resid_mid"] = x
        h = norm(x, p + ".ln_2")
        if d_pos is not None:
            h = torch.cat([h, norm(pos, p + ".ln_p2").expand(B, T, d_pos)], -1)
        h = sp(h, "mlp_in")
        acts[f"{i}.mlp.act_in"] = h
        pre = linear(h, p + ".mlp.c_fc")
        post = sp(pre.clamp_min(0) if relu_mlp else F.gelu(pre), "mlp_neuron")
        acts[f"{i}.mlp.post_act"] = post
        delta = sp(linear(post, p + ".mlp.c_proj"), "mlp_out")
        acts[f"{i}.mlp.resid_delta"] = delta
        x = x + delta
        if resid_relu:
            x = x.clamp_min(0)
        x = sp(x, "resid_post_mlp")
    acts["final_resid"] = x
    lm = sd.get("lm_head.weight", wte)
    logits = norm(x, "transformer.ln_f") @ lm.T + sd.get("final_logits_bias", torch.zeros(lm.shape[0]))
    if "bigram_table" in sd:
        logits = logits + sd["bigram_table"][idx]
    return logits, acts
