"""What the hardware multiplies fast: bfloat16 autocast where it pays, float32 elsewhere.

Training and pruning both run the model's matrix products in bfloat16 under autocast when the device
multiplies bfloat16 natively (AMX or AVX512-BF16 CPUs, CUDA GPUs with bf16), with float32 parameters,
optimizer state and loss. `precision="auto"` means exactly that; it is resolved to `float32` or
`bfloat16` before anything is recorded, so a stored result always names the precision it ran at.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import torch

Precision = Literal["auto", "float32", "bfloat16"]


@functools.cache
def _cpu_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


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
