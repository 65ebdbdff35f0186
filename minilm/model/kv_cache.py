"""The KV cache: keys and values already computed, kept so each new token costs one position, not all of them.

In causal attention the keys and values of positions 1..t never change when token t+1 arrives,
so generation stores them per layer and computes Q, K, V for the new token only:

    K_{1..t+1} = [K_{1..t}; x_{t+1} W_K],   V_{1..t+1} = [V_{1..t}; x_{t+1} W_V]

A per-layer prefix (prefix tuning) enters the cache on the first call, in front of the tokens. Only a causal model
can use a cache: in a bidirectional one every earlier key would change when a token arrives.

Docs: docs/transformer.md (KV cache), docs/generation.md.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LayerCache:
    """One layer's cached keys and values, each (B, h, S, d_k)."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store [K_cached; k] and [V_cached; v] and return them."""
        if self.k is not None and self.v is not None:
            k = torch.cat([self.k, k], dim=2)
            v = torch.cat([self.v, v], dim=2)
        self.k, self.v = k, v
        return k, v


class KVCache:
    """The whole model's cache: one LayerCache per block, plus what the model needs to continue a sequence.

    key_mask   (B, S) bool over the cached keys, True where a key may be attended; None = all may.
    positions  (B,) position id the next real token of each row gets (padding takes no position).
    length     S, number of cached keys (prefix + tokens).
    n_tokens   number of token columns seen so far, plus a first call's position offset (the model's max_len
               bounds this).
    """

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layers)]
        self.key_mask: Tensor | None = None
        self.positions: Tensor | None = None
        self.n_tokens = 0

    @property
    def length(self) -> int:
        """S, the number of cached keys (prefix + tokens)."""
        k = self.layers[0].k
        return 0 if k is None else k.size(2)

    def __len__(self) -> int:
        return self.length
