"""LoRA (Hu et al. 2021): a trainable low-rank update next to a frozen weight matrix.

    h = x W^T + b + (alpha / r) x A^T B^T          A in R^{r x d_in}, B in R^{d_out x r}
    W' = W + (alpha / r) B A                      merged for inference: no extra cost per token

Applied here to W_Q and W_V of every layer. A starts random (N(0, 1/d_in)) and B at zero, so the
tuned model starts exactly at the base. Trainable numbers: 2 r d per adapted d x d matrix per layer,
4 L r d for W_Q and W_V.

Docs: docs/tuning.md (LoRA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minilm.model import ModelConfig, Transformer
from minilm.settings import check_fields, setting
from minilm.tuning.methods.base import TuningMethod

TARGETS = ("W_q", "W_v")


@dataclass(frozen=True)
class LoRASettings:
    """LoRA's settings: its hyper-parameters in tuned.json and its flags."""

    rank: int = setting(8, "LoRA rank r", flag="--lora-rank", check="positive", metavar="R")
    alpha: float = setting(16.0, "LoRA scale alpha (updates scaled by alpha/r)", flag="--lora-alpha", check="positive")

    def __post_init__(self) -> None:
        check_fields(self)


class LoRALinear(nn.Module):
    """x W^T + b + (alpha / r) x A^T B^T, with the frozen nn.Linear (W, b) kept as `base`."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.r, self.alpha = r, alpha
        self.scale = alpha / r
        d_out, d_in = base.weight.shape
        A = torch.randn(r, d_in, generator=generator) / d_in**0.5
        self.A = nn.Parameter(A.to(base.weight.device, base.weight.dtype))
        self.B = nn.Parameter(torch.zeros(d_out, r, device=base.weight.device, dtype=base.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """h = x W^T + b + (alpha / r) x A^T B^T: the frozen layer plus the low-rank update scaled by alpha / r."""
        return self.base(x) + self.scale * ((x @ self.A.t()) @ self.B.t())

    def merged(self) -> nn.Linear:
        """nn.Linear with W' = W + (alpha / r) B A and the same bias."""
        W = self.base.weight
        linear = nn.Linear(W.size(1), W.size(0), device=W.device, dtype=W.dtype)
        with torch.no_grad():
            linear.weight.copy_(W + self.scale * (self.B @ self.A))
            linear.bias.copy_(self.base.bias)
        linear.requires_grad_(False)
        return linear


class LoRA(TuningMethod):
    """LoRA of rank r on W_Q and W_V in every block; `merge` folds the updates into the weights."""

    name = "lora"
    draws = True

    Settings = LoRASettings

    def __init__(self, settings: LoRASettings | None = None, config: ModelConfig | None = None, seed: int = 0) -> None:
        super().__init__(settings, config, seed)
        self.rank, self.alpha = self.settings.rank, float(self.settings.alpha)
        self.merged = False

    def setup(self, base: Transformer) -> None:
        base.requires_grad_(False)
        d = base.config.d_model
        if self.rank > d:
            raise ValueError(f"LoRA rank {self.rank} is larger than the model width d_model={d}: choose 1..{d}")
        generator = torch.Generator().manual_seed(self.seed)
        for block in base.blocks:
            for target in TARGETS:
                setattr(block.attn, target, LoRALinear(getattr(block.attn, target), self.rank, self.alpha, generator))

    def merge(self, base: Transformer) -> None:
        """W_Q := W_Q + (alpha/r) B A, same for W_V: the plain base architecture again, with no adapter."""
        for block in base.blocks:
            for target in TARGETS:
                layer = getattr(block.attn, target)
                if isinstance(layer, LoRALinear):
                    setattr(block.attn, target, layer.merged())
        self.merged = True

    @staticmethod
    def expected_count(c: ModelConfig, rank: int) -> int:
        """2 r d per matrix, two matrices per layer: 4 L r d."""
        return len(TARGETS) * c.n_layers * 2 * rank * c.d_model
