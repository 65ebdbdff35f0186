"""What every tuning method is: a small module that adapts a frozen base Transformer through its hooks.

A method may
  - choose which base parameters train (`setup`: freezing, BitFit, full fine-tuning) or add new ones
    inside the base (LoRA wraps W_Q and W_V),
  - put vectors in front of the input embeddings (`embed`: prompt tuning, prompt encoder),
  - give every layer extra keys and values (`layer_prefix`: prefix tuning).
The base model's code never changes; it only sees `inputs_embeds`, `prefix` and masks.

Trainable parameters theta_tuned are those with requires_grad; everything else stays bitwise unchanged
because only theta_tuned reaches the optimiser.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from minilm.model import Prefix, Transformer


class TuningMethod(nn.Module):
    """Base class. Subclasses set `name`, and override what they change."""

    name: ClassVar[str] = ""
    mixable: ClassVar[bool] = False
    """True when rows of one batch may use different tasks' instances over one base (prompts, prefixes)."""

    def setup(self, base: Transformer) -> None:
        """Decide which base parameters train. The default freezes the whole base."""
        base.requires_grad_(False)

    def soft_prompt(self) -> Tensor | None:
        """Vectors (n, d) placed in front of the input embeddings, or None (prompt tuning, prompt encoder)."""
        return None

    def embed(self, base: Transformer, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """[P; E[x]] and its mask when the method has a soft prompt P, else E[x]."""
        P = self.soft_prompt()
        embeds = base.tok_emb(input_ids)
        if P is None:
            return embeds, mask
        B = embeds.size(0)
        return torch.cat([expand_rows(P, B).to(embeds.dtype), embeds], dim=1), torch.cat([ones_mask(B, P.size(0), mask.device), mask], dim=1)

    def layer_prefix(self, batch_size: int) -> tuple[Prefix, Tensor | None] | None:
        """Per-layer (prefix_k, prefix_v) and an optional (B, P) prefix mask, or None."""
        return None

    def hyperparameters(self) -> dict[str, Any]:
        """What rebuilds this method: written to tuned.json and passed back to the constructor."""
        return {}

    @property
    def prompt_length(self) -> int:
        """Positions the method adds in front of the input (soft prompts take positions; prefixes do not)."""
        return 0

    # ---- reparameterised methods (prefix tuning, prompt encoder) --------------------------------
    @property
    def folded(self) -> bool:
        """True when nothing is computed by a reparameterisation network any more."""
        return True

    def fold(self) -> None:
        """Replace the reparameterisation network by the vectors it produces (no-op for other methods)."""

    def folded_state(self) -> dict[str, Tensor]:
        """The method's own tensors as they are stored for inference (folded), by name within the method."""
        return {name: p.detach().clone() for name, p in self.named_parameters()}

    def reparameterization_state(self) -> dict[str, Tensor]:
        """Tensors of the reparameterisation network, saved so that training can resume after folding."""
        return {}

    def load_reparameterization_state(self, tensors: dict[str, Tensor]) -> None:
        """Restore the network from `reparameterization_state` (unfolds the method)."""
        if tensors:
            raise ValueError(f"method {self.name!r} has no reparameterisation network, but tensors were given")


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """theta_tuned: every parameter with requires_grad, by name (a tied tensor appears once)."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def count(parameters: dict[str, Tensor] | list[Tensor]) -> int:
    values = parameters.values() if isinstance(parameters, dict) else parameters
    return sum(p.numel() for p in values)


def check_positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def expand_rows(x: Tensor, batch_size: int) -> Tensor:
    """(n, ...) -> (B, n, ...): the same vectors for every row."""
    return x.unsqueeze(0).expand(batch_size, *x.shape)


def ones_mask(batch_size: int, n: int, device: torch.device) -> Tensor:
    return torch.ones(batch_size, n, dtype=torch.bool, device=device)
