"""The pieces of a Transformer block: layer norm, the GELU feed-forward, and the pre-LayerNorm block.

    LN(x)   = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta
    FFN(x)  = GELU(x W_1 + b_1) W_2 + b_2
    block:  x = x + MultiHead(LN_1(x));  x = x + FFN(LN_2(x))

Each sub-layer's output passes through a hook before its residual add, `post_attn` and `post_ffn`: the identity,
unless a tuning method puts a module there (adapters, minilm/tuning/methods/adapter.py). They hold no parameters,
so a base's weights and checkpoints are the same with or without them.

Docs: docs/transformer.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilm.model.attention import MultiHeadAttention
from minilm.model.config import ModelConfig
from minilm.model.kv_cache import LayerCache


def layer_norm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """LN(x) = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta, mu and sigma^2 over the last dimension.

    Written out op by op: the reference that LayerNorm.forward's fused kernel is tested against.
    """
    mu = x.mean(dim=-1, keepdim=True)
    var = (x - mu).pow(2).mean(dim=-1, keepdim=True)
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


class LayerNorm(nn.Module):
    """LN(x) = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta, with mu and sigma^2 the mean and variance over the d
    features."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(d))
        self.beta = nn.Parameter(torch.zeros(d))

    def forward(self, x: Tensor) -> Tensor:
        """LN(x) by PyTorch's fused kernel for exactly this equation (`layer_norm` writes it out; a test checks
        they agree). Written out, it is seven elementwise passes over x, each output kept for the backward
        pass; fused, it is one: a whole training step is ~10-15% faster (docs/performance.md)."""
        return F.layer_norm(x, self.gamma.shape, self.gamma, self.beta, self.eps)


class FeedForward(nn.Module):
    """FFN(x) = GELU(x W_1 + b_1) W_2 + b_2, with GELU(z) = z Phi(z), applied to every position on its own."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.W_1 = nn.Linear(config.d_model, config.d_ff)
        self.W_2 = nn.Linear(config.d_ff, config.d_model)

    def forward(self, x: Tensor) -> Tensor:
        """FFN(x) = GELU(x W_1 + b_1) W_2 + b_2, with the exact GELU(z) = z Phi(z) = z/2 (1 + erf(z / sqrt(2)))."""
        return self.W_2(F.gelu(self.W_1(x)))


class Block(nn.Module):
    """One pre-LayerNorm Transformer block: x = x + MultiHead(LN_1(x)); x = x + FFN(LN_2(x)).

    `post_attn` and `post_ffn` act on each sub-layer's output before the residual add (identity by default)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.d_model)
        self.attn = MultiHeadAttention(config)
        self.post_attn: nn.Module = nn.Identity()
        self.ln_2 = LayerNorm(config.d_model)
        self.ffn = FeedForward(config)
        self.post_ffn: nn.Module = nn.Identity()
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None,
        prefix: tuple[Tensor, Tensor] | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        x = x + self.drop(self.post_attn(self.attn(self.ln_1(x), key_mask, prefix, cache)))
        return x + self.drop(self.post_ffn(self.ffn(self.ln_2(x))))
