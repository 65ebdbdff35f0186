"""BitFit (Ben Zaken et al. 2022): train only the bias terms of the base.

    theta_tuned = { b_Q, b_K, b_V, b_O, b_1, b_2, beta_1, beta_2 of every block } + { beta_f }

Every weight matrix, embedding and LayerNorm gain gamma stays frozen. Trainable numbers:
L (4 d + d_ff + d + 2 d) + d = L (7 d + d_ff) + d.

Docs: docs/tuning.md (BitFit).
"""

from __future__ import annotations

from minilm.model import ModelConfig, Transformer
from minilm.model.layers import LayerNorm
from minilm.tuning.methods.base import TuningMethod


class BitFit(TuningMethod):
    """Only biases (linear biases b and LayerNorm shifts beta) train."""

    name = "bitfit"

    def setup(self, base: Transformer) -> None:
        """phi = {b of every linear layer} + {beta of every LayerNorm}: the base frozen, then exactly those train."""
        base.requires_grad_(False)
        for module in base.modules():
            if isinstance(module, LayerNorm):
                module.beta.requires_grad_(True)
            elif hasattr(module, "bias") and getattr(module, "bias", None) is not None:
                module.bias.requires_grad_(True)

    @staticmethod
    def expected_count(c: ModelConfig) -> int:
        """L (7 d + d_ff) + d."""
        return c.n_layers * (7 * c.d_model + c.d_ff) + c.d_model
