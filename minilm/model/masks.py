"""Masks and positions: which keys a query may see, the position of every real token, and each row's last real token.

    M_ij = 0 where query i may see key j, -inf elsewhere:
           key j is real (key_mask) and, in a causal model, j <= i + (T_k - T_q)
    pos(t) = start + |{s < t : m_s = 1}|          padding takes no position
    last(b) = max {t : m_bt = 1}                  where a causal model reads a row's final state

The queries are always the *last* T_q of the T_k keys: the keys before them are a per-layer prefix (prefix tuning)
and/or a KV cache of earlier tokens, so the causal diagonal is shifted by T_k - T_q and a prefix is visible to
every query.

Docs: docs/attention.md (the mask), docs/transformer.md (positions).
"""

from __future__ import annotations

import torch
from torch import Tensor


def attention_mask(
    n_queries: int, n_keys: int, causal: bool, key_mask: Tensor | None, device: torch.device
) -> Tensor | None:
    """M as a boolean: allowed[b, 0, i, j] = key_mask[b, j] and (not causal or j <= i + n_keys - n_queries).

    Returns a (B or 1, 1, T_q, T_k) bool tensor, True where query i may attend to key j,
    or None when every query sees every key.
    """
    allowed = None
    if causal:
        i = torch.arange(n_queries, device=device)[:, None]
        j = torch.arange(n_keys, device=device)[None, :]
        allowed = (j <= i + (n_keys - n_queries))[None, None]
    if key_mask is not None:
        visible = key_mask[:, None, None, :]
        allowed = visible if allowed is None else allowed & visible
    return allowed


def position_ids(real: Tensor | None, start: Tensor, T: int) -> Tensor:
    """pos(t) = start + |{s < t : m_s = 1}| for a real token t: positions count real tokens only.

    real (B, T) marks real tokens (None: all real); start (B,) is the position of the first new real
    token (non-zero when continuing from a KV cache). Padding gets a neighbour's position; it is never
    attended, so its value does not matter.
    """
    if real is None:
        return start[:, None] + torch.arange(T, device=start.device)
    return start[:, None] + (real.long().cumsum(dim=1) - 1).clamp(min=0)


def last_real_index(mask: Tensor) -> Tensor:
    """Index of each row's last real (True) position in a (B, T) mask."""
    T = mask.size(1)
    return T - 1 - mask.flip(dims=[1]).long().argmax(dim=1)
