"""What the hardware multiplies fast: bfloat16 autocast where it pays, float32 elsewhere.

Training and pruning both run the model's matrix products in bfloat16 under autocast when the device
multiplies bfloat16 natively (AMX or AVX512-BF16 CPUs, CUDA GPUs with bf16), with float32 parameters,
optimizer state and loss. `precision="auto"` means exactly that; it is resolved to `float32` or
`bfloat16` before anything is recorded, so a stored result always names the precision it ran at.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any, Literal

import torch

Precision = Literal["auto", "float32", "bfloat16"]


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_bf16() -> bool:
    flags = _cpuinfo()
    return " amx_bf16" in flags or " avx512_bf16" in flags


@functools.cache
def cpu_kind() -> str:
    """The CPU's kind as far as float results go: `amx`, `avx512`, `avx2` or the machine's architecture.

    Kernels differ between these (AMX tiles, AVX-512, AVX2 each sum in their own order), so the same
    computation can end a few units in the last place apart on two kinds; on one kind, with the same thread
    count and torch, it is bit for bit the same (docs/reference/reproducing.md).
    """
    flags = set(_cpuinfo().split())
    for kind, flag in (("amx", "amx_bf16"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in flags:
            return kind
    return platform.machine() or "unknown"


@functools.cache
def cpu_model() -> str | None:
    """The CPU's model name as /proc/cpuinfo gives it (None where there is none)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def bf16_native(device: torch.device | str = "cpu") -> bool:
    """Whether this device multiplies bfloat16 matrices natively (so autocast pays)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_bf16()


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """`float32` or `bfloat16`: what `precision` (`auto` included) means on this device."""
    if precision != "auto":
        return precision
    return "bfloat16" if bf16_native(device) else "float32"


def autocast(precision: str, device: torch.device | str = "cpu") -> Any:
    """bfloat16 autocast on `device` for a resolved `precision` of `bfloat16`; a no-op context otherwise."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
