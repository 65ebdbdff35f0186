"""Attention, written out by hand.

    scores = Q K^T / sqrt(d_k) + M          M_ij = 0 where query i may see key j, -inf elsewhere
    probs  = softmax(scores)                 row-wise over the keys
    out    = probs V

`scaled_dot_product_attention` is that equation in plain tensor ops: the reference every faster
path is tested against. `attention` runs one of the backends, all with one signature:

    backend(q, k, v, causal=..., key_mask=..., dropout_p=...) -> out

q is (B, h, T_q, d_k); k and v are (B, h, T_k, d_k) with T_k >= T_q. The queries are always the
*last* T_q of the T_k keys: the keys before them are a per-layer prefix (prefix tuning) and/or a
KV cache of earlier tokens. So with `causal=True` query i sits at key position i + (T_k - T_q)
and sees every key j <= i + (T_k - T_q): the causal diagonal is shifted by the extra keys, and a
prefix is visible to every query. `key_mask` (B, T_k) is True at keys that may be attended
(False at padding). The mask M itself is `minilm.model.masks.attention_mask`.

`attention_probs` is the softmax on its own: `MultiHeadAttention.probs` returns it for a layer (the attention map).

Docs: docs/attention.md (the equation, the mask, the backends), docs/kernels.md (the triton backend).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilm.model.config import ModelConfig
from minilm.model.kernels import triton_unsupported
from minilm.model.kv_cache import LayerCache
from minilm.model.masks import attention_mask


def attention_probs(q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
    """probs = softmax(Q K^T / sqrt(d_k) + M), (B, h, T_q, T_k): row i is how query i splits its attention over keys.

    M = 0 where `mask` is True and -inf elsewhere. A query row with no visible key gets probabilities 0 (not NaN).
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if mask is not None:
        probs = probs.masked_fill(~mask, 0.0)  # a fully masked row is softmax(-inf, ..., -inf) = NaN; make it 0
    return probs


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0
) -> Tensor:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V, with M = 0 where `mask` is True and -inf elsewhere.

    A query row with no visible key gets probabilities 0 (not NaN), so its output is the zero vector.
    """
    probs = attention_probs(q, k, mask)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v


def math_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, key_mask: Tensor | None, dropout_p: float) -> Tensor:
    """The `math` backend: build M explicitly and apply the equation. Runs on any device."""
    mask = attention_mask(q.size(-2), k.size(-2), causal, key_mask, q.device)
    return scaled_dot_product_attention(q, k, v, mask, dropout_p)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, key_mask: Tensor | None, dropout_p: float) -> Tensor:
    """The `sdpa` backend: PyTorch's fused scaled_dot_product_attention (flash / memory-efficient / cuDNN on CUDA).

    PyTorch's `is_causal=True` aligns the diagonal to the top-left corner (query i sees keys j <= i),
    which is only right when T_q == T_k. With a prefix, a KV cache or padding we pass the boolean
    mask M instead, which costs the fastest kernels but never gives a wrong answer.
    """
    if key_mask is None and (not causal or q.size(-2) == k.size(-2)):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    mask = attention_mask(q.size(-2), k.size(-2), causal, key_mask, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def triton_attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, key_mask: Tensor | None, dropout_p: float
) -> Tensor:
    """The `triton` backend: minilm's own FlashAttention kernel (minilm/model/kernels/flash_attention.py,
    docs/kernels.md).

    It reads the causal shift T_k - T_q and the key mask as per-sequence numbers instead of a T_q x T_k mask tensor, so
    a prefix with causality and padding costs it nothing extra. A call it cannot take (no CUDA, head dim, dtype,
    dropout: minilm.model.kernels.triton_unsupported) runs on `sdpa` instead, with a warning once per reason.
    """
    reason = triton_unsupported(q, k, dropout_p)
    if reason is not None:
        warnings.warn(f"triton attention: {reason}; these calls use sdpa", RuntimeWarning, stacklevel=3)
        return sdpa_attention(q, k, v, causal, key_mask, dropout_p)
    from minilm.model.kernels.flash_attention import flash_attention  # Triton is optional: imported when it runs

    return flash_attention(q, k, v, causal, key_mask)


BACKENDS = {"math": math_attention, "sdpa": sdpa_attention, "triton": triton_attention}


def resolve_backend(name: str, q: Tensor, k: Tensor, dropout_p: float) -> str:
    """The backend `name` stands for in this call. `auto` is `triton` on CUDA when Triton is installed and the kernel
    takes the call, otherwise `sdpa` (PyTorch's fused kernels; on CPU bench/attention.py measured it 1.4-2x faster
    than `math` on causal attention, docs/performance.md)."""
    if name == "auto":
        return "triton" if q.is_cuda and triton_unsupported(q, k, dropout_p) is None else "sdpa"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}: use one of auto, {', '.join(BACKENDS)}")
    return name


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool,
    key_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Run attention with the chosen backend; every backend computes softmax(Q K^T / sqrt(d_k) + M) V."""
    if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.size(-1) != k.size(-1):
        raise ValueError(
            f"attention expects q (B, h, T_q, d_k) and k, v (B, h, T_k, d_k); got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.size(-2) < q.size(-2):
        raise ValueError(
            f"attention needs at least as many keys as queries, got {k.size(-2)} keys for {q.size(-2)} queries"
        )
    if key_mask is not None and (key_mask.dtype != torch.bool or key_mask.shape != (k.size(0), k.size(-2))):
        raise ValueError(
            f"key_mask must be a bool tensor of shape (batch, n_keys) = {(k.size(0), k.size(-2))}, "
            f"got {key_mask.dtype} {tuple(key_mask.shape)}"
        )
    return BACKENDS[resolve_backend(backend, q, k, dropout_p)](q, k, v, causal, key_mask, dropout_p)


class MultiHeadAttention(nn.Module):
    """MultiHead(X) = Concat(head_1, ..., head_h) W_O,  head_i = Attention(X W_Q^i, X W_K^i, X W_V^i).

    W_Q, W_K, W_V are d x d matrices whose columns hold all h heads side by side (head i owns
    columns i*d_k .. (i+1)*d_k); splitting the projected d-vector into h pieces of d_k gives the heads.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.causal = config.causal
        self.backend = config.attention
        self.dropout_p = config.dropout
        self.W_q = nn.Linear(d, d)
        self.W_k = nn.Linear(d, d)
        self.W_v = nn.Linear(d, d)
        self.W_o = nn.Linear(d, d)

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, T, d) -> (B, h, T, d_k): head i gets features i d_k .. (i+1) d_k - 1 of every position."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: Tensor) -> Tensor:
        """(B, h, T, d_k) -> (B, T, d): Concat(head_1, ..., head_h), head i in features i d_k .. (i+1) d_k - 1."""
        B, _, T, _ = x.shape
        return x.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)

    def project(self, x: Tensor, prefix: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Q = X W_Q, K = [prefix_k; X W_K], V = [prefix_v; X W_V], split into heads: (B, h, T or P + T, d_k)."""
        q = self.split_heads(self.W_q(x))
        k = self.split_heads(self.W_k(x))
        v = self.split_heads(self.W_v(x))
        if prefix is not None:
            prefix_k, prefix_v = prefix
            k = torch.cat([prefix_k.to(k.dtype), k], dim=2)
            v = torch.cat([prefix_v.to(v.dtype), v], dim=2)
        return q, k, v

    def probs(self, x: Tensor, key_mask: Tensor | None = None, prefix: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """softmax(Q K^T / sqrt(d_k) + M) of every head, (B, h, T, P + T): the weights `forward` applies to V.

        Computed on the math path (`attention_probs`) from the same Q and K as `forward`, whatever the backend; the
        fused backends never form this matrix. No cache: the keys are [prefix; x]. `layer_probs`
        (minilm/model/attention_probs.py) asks every layer for it.
        """
        q, k, _ = self.project(x, prefix)
        return attention_probs(q, k, attention_mask(q.size(-2), k.size(-2), self.causal, key_mask, q.device))

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None = None,
        prefix: tuple[Tensor, Tensor] | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """x (B, T, d) -> (B, T, d).

        prefix: (prefix_k, prefix_v), each (B, h, P, d_k), prepended to this layer's K and V.
        cache: earlier keys/values of this layer; the new ones are appended to it.
        key_mask: (B, T_k) over all keys [cache, prefix, x], True where a key may be attended.
        """
        q, k, v = self.project(x, prefix)
        if cache is not None:
            k, v = cache.append(k, v)
        dropout_p = self.dropout_p if self.training else 0.0
        heads = attention(q, k, v, self.causal, key_mask, dropout_p, self.backend)
        return self.W_o(self.merge_heads(heads))
