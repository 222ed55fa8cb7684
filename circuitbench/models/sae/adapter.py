"""The SAE-augmented model: `SAEAdapter` and `load_saes`.

`SAEAdapter` splices SAEs in at their hook points and exposes their latents and error nodes as its sites;
`load_saes` builds it from `--sae` values.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from torch import Tensor

from circuitbench.errors import ConfigError
from circuitbench.models.adapter import HookedForward, ModelAdapter, Site
from circuitbench.models.sae.autoencoder import SAE
from circuitbench.models.sae.matching import check_model_name, check_processing, direct_path, hook_widths, splice_point
from circuitbench.models.sae.releases import load_sae_spec
from circuitbench.models.sparse_gpt import Hook
from circuitbench.protocols import Tokenizer

log = logging.getLogger(__name__)


class BOSTokenizer:
    """A tokenizer that starts every encoding with the BOS token (for SAEs trained with prepend_bos)."""

    def __init__(self, base: Tokenizer, bos_id: int) -> None:
        self.base, self.bos_id = base, bos_id
        self.name = f"{base.name}+bos"
        self.vocab_size, self.eot_id = base.vocab_size, base.eot_id

    def encode(self, text: str) -> list[int]:
        """The base tokenizer's ids, after the BOS token."""
        return [self.bos_id, *self.base.encode(text)]

    def decode(self, ids: list[int]) -> str:
        """The text of the ids, the leading BOS token left out."""
        return self.base.decode(list(ids[1:]) if ids[:1] == [self.bos_id] else list(ids))


def _identity(name: str, x: Tensor) -> Tensor:
    return x


class SAEAdapter(HookedForward):
    """`ModelAdapter` of a base model with SAEs spliced in; its sites are the SAE latents and error nodes.

    See the module docstring for the splice, the sites and how edges are (not) counted.
    """

    has_saes = True

    def __init__(self, base: ModelAdapter, saes: list[SAE]) -> None:
        if not saes:
            raise ConfigError("SAEAdapter needs at least one SAE")
        order = list(hook_widths(base))
        self.base = base
        self.splices = _splices(base, saes, order)
        self.tokenizer: Tokenizer = _tokenizer(base, self.splices)
        self.sites, self._virtual = _sites(self.splices, order)
        self.hook_names = order + [s.name for s in self.sites]
        self.device, self.dtype = base.device, base.dtype
        self.config = getattr(base, "config", None)
        self.context_length: int | None = base.context_length
        self.n_heads: int | None = base.n_heads
        self.provenance: dict[str, Any] = dict(base.provenance)
        self.provenance["saes"] = [
            {"spec": s.spec or str(s.path), "path": str(s.path.resolve()) if not s.origin else str(s.path),
             "hook": p, "weights_sha256": s.weights_sha256, "prepend_bos": s.prepend_bos, **s.origin}
            for p, s in self.splices.items()]
        # appended to the model's name (and results directory): SAE folder names and a hash of their weights
        digest = hashlib.sha256(",".join(s.weights_sha256 for s in self.splices.values()).encode()).hexdigest()
        self.suffix = f"+sae:{','.join(s.path.name for s in self.splices.values())}-{digest[:8]}"
        self.name = base.name + self.suffix

    def _splice_hook(self, hook: Hook | None) -> Hook:
        outer = hook or _identity

        def inner(name: str, x: Tensor) -> Tensor:
            sae = self.splices.get(name)
            if sae is not None:
                x0 = x.float()
                latents = sae.encode(x0)  # (..., d_sae)
                error = x0 - sae.decode(latents)  # (..., d_in), from the original x: kept + kept = x
                latents = outer(f"{name}.sae", latents)
                error = outer(f"{name}.sae_error", error)
                x = (sae.decode(latents) + error).to(x.dtype)
            return outer(name, x)

        return inner

    def forward(self, tokens: Tensor, hook: Hook | None = None, at: Tensor | None = None) -> Tensor:
        """Logits of the spliced model; `hook` also sees `{h}.sae` and `{h}.sae_error` at every splice h."""
        return self.base.forward(tokens, self._splice_hook(hook), at)

    def site_weight(self, site: Site) -> Tensor | None:
        """[d_sae_b, d_sae_a] = (W_dec_a @ W_enc_b)^T for latents b read directly off a's splice; else None.

        See the module docstring, on edges.
        """
        pair = self._virtual.get(site.name)
        if pair is None:
            return None
        a, b = pair
        return (a.W_dec @ b.W_enc).T  # (d_sae_b, d_sae_a)


def load_saes(base: ModelAdapter, specs: Iterable[str]) -> SAEAdapter:
    """Splice the SAEs these --sae values name (directories, SAELens RELEASE/ID, Hub ids) into `base`.

    Raises:
        CircuitbenchError: for an SAE that cannot be found, read or fitted to the model.
    """
    return SAEAdapter(base, [load_sae_spec(p) for p in specs])


def _splices(base: ModelAdapter, saes: list[SAE], order: list[str]) -> dict[str, SAE]:
    """Hook point -> SAE, in forward order, each SAE checked against the model it is spliced into.

    Raises:
        ConfigError: for a hook point the model lacks, two SAEs at one point, a width that differs, or an
            SAE trained on another model or weight processing.
    """
    widths = hook_widths(base)
    splices: dict[str, SAE] = {}
    for sae in saes:
        point = splice_point(sae.hook_name, order)
        if point is None:
            raise ConfigError(
                f"{sae.where}: hook_name: {sae.hook_name!r} is not a hook point of {base.name}; valid: "
                f"{', '.join(order)} (or as TransformerLens names: blocks.L.hook_resid_pre, hook_resid_mid, "
                "hook_resid_post, hook_attn_out, hook_mlp_out, attn.hook_z, mlp.hook_post)"
            )
        if point in splices:
            raise ConfigError(f"{sae.where}: hook_name: {point} already has an SAE ({splices[point].spec})")
        if widths[point] != sae.d_in:
            raise ConfigError(
                f"{sae.where}: d_in: {sae.d_in}, but {base.name}'s {point} has width {widths[point]}; "
                "this SAE was trained on another model or hook point"
            )
        check_model_name(sae, base)
        check_processing(sae, point, base)
        splices[point] = sae.to(base.device)
    return dict(sorted(splices.items(), key=lambda kv: order.index(kv[0])))


def _tokenizer(base: ModelAdapter, splices: dict[str, SAE]) -> Tokenizer:
    """The model's tokenizer, with the BOS token put first when the SAEs were trained with prepend_bos.

    Raises:
        ConfigError: when the SAEs disagree on prepend_bos, or want a BOS token the model does not name.
    """
    bos = {s.prepend_bos for s in splices.values()}
    if len(bos) > 1:
        raise ConfigError("--sae: some of these SAEs were trained with prepend_bos and some without ("
                          + ", ".join(f"{s.spec}: {s.prepend_bos}" for s in splices.values())
                          + "); one run feeds the model one kind of prompt: splice SAEs that agree")
    if bos != {True}:
        return base.tokenizer
    bos_id = getattr(base, "bos_token_id", None)
    if bos_id is None:
        first = next(iter(splices.values()))
        raise ConfigError(f"{first.where}: prepend_bos: true, but {base.name} names no BOS token "
                          "(config.json bos_token_id); the SAE's training prompts cannot be reproduced")
    return BOSTokenizer(base.tokenizer, int(bos_id))


def _sites(splices: dict[str, SAE], order: list[str]) -> tuple[list[Site], dict[str, tuple[SAE, SAE]]]:
    """Each splice's latent and error sites, and the latent sites joined to the previous splice's directly."""
    n_layer = 1 + max((int(n.split(".")[0]) for n in order if n.split(".")[0].isdigit()), default=-1)
    sites: list[Site] = []
    virtual: dict[str, tuple[SAE, SAE]] = {}
    previous: str | None = None
    for point, sae in splices.items():
        layer = int(point.split(".")[0]) if point[0].isdigit() else n_layer
        source = None
        if previous is not None and direct_path(previous, point):
            source = f"{previous}.sae"
            virtual[f"{point}.sae"] = (splices[previous], sae)
        sites += [Site(f"{point}.sae", layer, "sae_latent", sae.d_sae, source, "W_dec @ W_enc" if source else None),
                  Site(f"{point}.sae_error", layer, "sae_error", 1, value_width=sae.d_in)]
        previous = point
    return sites, virtual
