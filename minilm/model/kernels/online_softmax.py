"""FlashAttention's online softmax in plain PyTorch: attention computed one tile of keys at a time.

    m' = max(m, rowmax(S_t))                    S_t = Q K_t^T / sqrt(d_k) + M_t, the scores of key tile t
    l' = e^{m - m'} l + rowsum(e^{S_t - m'})
    O' = e^{m - m'} O + e^{S_t - m'} V_t         after the last tile: out = O / l

The same recurrence as the Triton kernel (minilm/model/kernels/flash_attention.py), without Triton: a loop a learner
can read and step through on CPU. It never holds more than one T_q x block tile of scores, and gives the exact
softmax(Q K^T / sqrt(d_k) + M) V: only the order of the additions differs.

Docs: docs/kernels.md (the recurrence in plain PyTorch).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def online_softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, block: int = 16) -> Tensor:
    """m' = max(m, rowmax(S_t)), l' = e^{m - m'} l + rowsum(e^{S_t - m'}), O' = e^{m - m'} O + e^{S_t - m'} V_t; O / l.

    q (B, h, T_q, d_k), k and v (B, h, T_k, d_k); `mask` (broadcast to (B, h, T_q, T_k)) is True where query i may
    see key j. The keys are read `block` at a time. A query that sees no key gets the zero vector (l = 0), not NaN.
    """
    shape = (*q.shape[:-1], 1)
    m = torch.full(shape, float("-inf"), dtype=q.dtype, device=q.device)
    l = torch.zeros(shape, dtype=q.dtype, device=q.device)
    O = torch.zeros(*q.shape[:-1], v.size(-1), dtype=q.dtype, device=q.device)
    for start in range(0, k.size(-2), block):
        S = q @ k[..., start : start + block, :].transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            S = S.masked_fill(~mask[..., start : start + block], float("-inf"))
        m_new = torch.maximum(m, S.amax(dim=-1, keepdim=True))
        m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)  # no key seen yet: avoid e^{-inf - (-inf)}
        P = torch.exp(S - m_safe)
        rescale = torch.exp(m - m_safe)
        l = rescale * l + P.sum(dim=-1, keepdim=True)
        O = rescale * O + P @ v[..., start : start + block, :]
        m = m_new
    return O / torch.where(l > 0, l, torch.ones_like(l))
