"""Adapters (Houlsby et al. 2019): a small bottleneck network after each sub-layer, before its residual add.

    A(h) = h + W_up GELU(W_down h + b_down) + b_up        W_down in R^{m x d}, W_up in R^{d x m}, m << d
    a_l = h_{l-1} + A_attn(MultiHead(LN_1(h_{l-1})))     h_l = a_l + A_ffn(FFN(LN_2(a_l)))

Two adapters per block, one after attention and one after the feed-forward network, put into the block's
`post_attn` and `post_ffn` hooks (minilm.model.layers.Block): the base's code is unchanged. The adapters and every
LayerNorm train; everything else is frozen. W_down and W_up start at N(0, 1e-3^2) and the biases at zero, so
A(h) = h + O(1e-6 |h|): the adapted model starts (to within float rounding) at the base.
Trainable numbers: L * 2 * (2 d m + m + d) in the adapters, plus 4 L d + 2 d in the LayerNorms.

Docs: docs/tuning.md (adapters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilm.model import ModelConfig, Transformer
from minilm.model.layers import LayerNorm
from minilm.settings import check_fields, setting
from minilm.tuning.methods.base import TuningMethod

INIT_STD = 1e-3
"""Standard deviation of W_down and W_up at the start: near zero, so each adapter starts near the identity."""
HOOKS = ("post_attn", "post_ffn")


@dataclass(frozen=True)
class AdapterSettings:
    """The adapters' settings: their hyper-parameters in tuned.json and their flags."""

    size: int = setting(32, "adapter bottleneck m (1..d_model)", flag="--adapter-size", check="positive", metavar="M")

    def __post_init__(self) -> None:
        check_fields(self)


class Adapter(nn.Module):
    """A(h) = h + W_up GELU(W_down h + b_down) + b_up: a bottleneck of width m with its own residual connection."""

    def __init__(self, d: int, m: int, generator: torch.Generator) -> None:
        super().__init__()
        self.W_down = nn.Linear(d, m)
        self.W_up = nn.Linear(m, d)
        with torch.no_grad():
            for linear in (self.W_down, self.W_up):
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * INIT_STD)
                linear.bias.zero_()

    def forward(self, h: Tensor) -> Tensor:
        """A(h) = h + W_up GELU(W_down h + b_down) + b_up, with the exact GELU."""
        return h + self.W_up(F.gelu(self.W_down(h)))


class Adapters(TuningMethod):
    """An adapter of bottleneck m after the attention and the feed-forward sub-layer of every block."""

    name = "adapter"
    draws = True
    Settings = AdapterSettings

    def setup(self, base: Transformer) -> None:
        """The base frozen; an Adapter in each block's post_attn and post_ffn; the adapters and LayerNorms train."""
        base.requires_grad_(False)
        d, m = base.config.d_model, self.settings.size
        if m > d:
            raise ValueError(
                f"--adapter-size {m} is larger than the model width d_model={d}: "
                f"a bottleneck is narrower, choose 1..{d}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        weight = base.tok_emb.weight
        for block in base.blocks:
            for hook in HOOKS:
                setattr(block, hook, Adapter(d, m, generator).to(weight.device, weight.dtype))
        for module in base.modules():
            if isinstance(module, LayerNorm):
                module.requires_grad_(True)

    @staticmethod
    def expected_count(c: ModelConfig, m: int) -> int:
        """L * 2 * (2 d m + m + d) in the adapters + 4 L d + 2 d in the LayerNorms (two per block and LN_f)."""
        L, d = c.n_layers, c.d_model
        return L * 2 * (2 * d * m + m + d) + 4 * L * d + 2 * d
