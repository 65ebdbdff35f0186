"""Where and in what precision training runs: `auto` device and precision, and bf16 autocast.

Docs: docs/training.md (one optimizer step: bf16 autocast), docs/performance.md (what bf16 buys on CPUs).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str) -> str:
    """auto = cuda when PyTorch sees a GPU, else cpu; asking for cuda without one is a one-line error."""
    if name not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU here: use --device cpu (or auto)")
    return name


def resolve_precision(name: str, device: str) -> str:
    """auto = bf16 autocast where the hardware computes bf16 natively (it trains about twice as fast on CPUs with
    AVX-512 BF16 or AMX, see docs/performance.md), else fp32."""
    if name not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name != "auto":
        return name
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast of the forward pass (parameters, gradients and optimiser state stay fp32), or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
