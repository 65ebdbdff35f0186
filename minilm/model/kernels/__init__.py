"""minilm's own GPU kernels. `flash_attention` (Triton) is imported only when it runs: Triton is an optional extra.

This file holds what the `triton` attention backend decides before it launches anything: whether the kernel can take
a call.

Docs: docs/kernels.md.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """TRITON_INTERPRET=1: Triton runs kernels on CPU tensors with NumPy (slow; how the kernel is tested without
    a GPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def triton_installed() -> bool:
    """Whether Triton can be imported (looked up once: attention asks on every call)."""
    return importlib.util.find_spec("triton") is not None


def triton_unsupported(q: Tensor, k: Tensor, dropout_p: float) -> str | None:
    """Why the Triton kernel cannot take this call, or None when it can. Any mask (causal, prefix, padding on either
    side) and any sequence length are supported."""
    if not triton_installed():
        return "Triton is not installed (pip install 'minilm[cuda]')"
    if not (q.is_cuda or interpreting()):
        return f"the kernel runs on CUDA tensors, not {q.device.type} (TRITON_INTERPRET=1 runs it on CPU for tests)"
    if q.size(-1) not in HEAD_DIMS:
        return f"head dim {q.size(-1)} is not one of {', '.join(map(str, HEAD_DIMS))}"
    if q.dtype not in DTYPES or k.dtype != q.dtype:
        return f"dtype {q.dtype} is not float32, float16 or bfloat16"
    if dropout_p > 0.0:
        return "attention dropout is not implemented in the kernel (set dropout=0 to use it)"
    return None
