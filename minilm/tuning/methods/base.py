"""What every tuning method is: a small module that adapts a frozen base Transformer through its hooks.

A method may
  - choose which base parameters train (`setup`: freezing, BitFit, full fine-tuning) or add new ones
    inside the base (LoRA wraps W_Q and W_V),
  - put vectors in front of the input embeddings (`embed`: prompt tuning, prompt encoder),
  - give every layer extra keys and values (`layer_prefix`: prefix tuning).
The base model's code never changes; it only sees `inputs_embeds`, `prefix` and masks.

Trainable parameters theta_tuned are those with requires_grad; everything else stays bitwise unchanged
because only theta_tuned reaches the optimiser. Each method's settings are a dataclass next to it (its fields are
its hyper-parameters, stored in tuned.json); `minilm.tuning.registry` lists the methods.

Docs: docs/tuning.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from minilm.model import ModelConfig, Prefix, Transformer
from minilm.tokenizer import Tokenizer

PRETRAINED = "pretrained:"
"""How an init names a tuned folder to start from (prompt pre-training): pretrained:DIR."""


def pretrained_folder(init: object) -> str | None:
    """DIR of an init "pretrained:DIR", else None."""
    if isinstance(init, str) and init.startswith(PRETRAINED):
        return init[len(PRETRAINED) :]
    return None


@dataclass(frozen=True)
class NoSettings:
    """The settings of a method that has none (BitFit: the biases train; full fine-tuning: everything trains)."""


class TuningMethod(nn.Module):
    """Base class. Subclasses set `name` and `Settings` (their settings dataclass), and override what they change.

    A method keeps its settings and its seed; they are its hyper-parameters (tuned.json), from which
    `registry.build_method` rebuilds it.
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings
    mixable: ClassVar[bool] = False
    """True when rows of one batch may use different tasks' instances over one base (prompts, prefixes)."""
    draws: ClassVar[bool] = False
    """True when the method draws random numbers (an initialisation), so its seed is one of its hyper-parameters."""

    def __init__(self, settings: Any = None, config: ModelConfig | None = None, seed: int = 0) -> None:
        """settings: the method's settings (None: the defaults); config: the base's sizes, for a method whose tensors
        depend on them; seed: for anything the method draws."""
        super().__init__()
        self.settings = settings if settings is not None else self.Settings()
        if not isinstance(self.settings, self.Settings):
            raise TypeError(f"{type(self).__name__} takes {self.Settings.__name__}, got {type(self.settings).__name__}")
        self.seed = seed

    @classmethod
    def for_base(
        cls,
        base: Transformer,
        settings: Any = None,
        *,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
        start: Tensor | None = None,
    ):
        """The method for `base`: built for the base's sizes, then `initialize`d from the base itself, or started at
        `start` when one is given (a pre-trained prompt's tensor, read by `minilm.tuning.pretrained`)."""
        method = cls(settings, base.config, seed)
        if start is None:
            method.initialize(base, tokenizer)
        else:
            method.start_at(start)
        return method

    def initialize(self, base: Transformer, tokenizer: Tokenizer | None) -> None:
        """Starting values taken from the base (a soft prompt from its token embeddings); none by default. The
        tokenizer is there for an initialisation from text."""

    def start_at(self, start: Tensor) -> None:
        """Begin at the given tensor: the soft prompt or the prefixes at step 0 (a pre-trained prompt's)."""
        raise ValueError(f"method {self.name!r} has no soft prompt or prefix to start from a tuned folder")

    def setup(self, base: Transformer) -> None:
        """Decide which base parameters train. The default freezes the whole base."""
        base.requires_grad_(False)

    def soft_prompt(self) -> Tensor | None:
        """Vectors (n, d) placed in front of the input embeddings, or None (prompt tuning, prompt encoder)."""
        return None

    def embed(self, base: Transformer, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """[P; E[x]] and the mask [1; m] when the method has a soft prompt P (n, d), else E[x] and m.

        P is the same for every row of the batch; its n positions come first and are never padding.
        """
        P = self.soft_prompt()
        embeds = base.tok_emb(input_ids)
        if P is None:
            return embeds, mask
        B = embeds.size(0)
        return torch.cat([expand_rows(P, B).to(embeds.dtype), embeds], dim=1), torch.cat(
            [ones_mask(B, P.size(0), mask.device), mask], dim=1
        )

    def layer_prefix(self, batch_size: int) -> tuple[Prefix, Tensor | None] | None:
        """Per-layer (prefix_k, prefix_v) and an optional (B, P) prefix mask, or None."""
        return None

    def hyperparameters(self) -> dict[str, Any]:
        """What rebuilds this method (its settings, and its seed if it draws): written to tuned.json, read by
        `build_method`."""
        return {**dataclasses.asdict(self.settings), **({"seed": self.seed} if self.draws else {})}

    @property
    def prompt_length(self) -> int:
        """Positions the method adds in front of the input (soft prompts take positions; prefixes do not)."""
        return 0

    @property
    def position_offset(self) -> int:
        """Where the input's positions start: 0, or n for a prefix that holds an n-token text's keys and values (the
        input then sits behind that text, at positions n, n+1, ...)."""
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


class Reparameterized(TuningMethod):
    """A method whose tensor is the output of a small network while it trains, and plain numbers once folded:

        training:   output = network()          (the network's parameters train)
        folded:     output = the stored tensor   (network() computed once; outputs do not change)

    Subclasses name the attribute that holds the network (`network_attr`) and the one that holds the folded
    tensor (`output_attr`), and build a fresh network with `new_network()` (to resume training after folding).
    """

    draws = True  # the network's starting weights are drawn from the seed
    network_attr: ClassVar[str] = "network"
    output_attr: ClassVar[str] = "output"

    def new_network(self) -> nn.Module:
        """An untrained network of this method's shape (its tensors are then loaded)."""
        raise TypeError(f"{type(self).__name__} must define new_network()")

    def network(self) -> nn.Module | None:
        return getattr(self, self.network_attr)

    def computed(self) -> Tensor:
        """The method's tensor: network() while training, the stored tensor once folded."""
        network = self.network()
        return network() if network is not None else getattr(self, self.output_attr)

    @property
    def folded(self) -> bool:
        return self.network() is None

    def fold(self) -> None:
        if self.network() is None:
            return
        with torch.no_grad():
            output = self.computed().detach().clone()
        setattr(self, self.network_attr, None)
        setattr(self, self.output_attr, nn.Parameter(output))

    def folded_state(self) -> dict[str, Tensor]:
        with torch.no_grad():
            return {self.output_attr: self.computed().detach().clone()}

    def reparameterization_state(self) -> dict[str, Tensor]:
        network = self.network()
        if network is None:
            return {}
        return {f"{self.network_attr}.{k}": v.detach().clone() for k, v in network.state_dict().items()}

    def load_reparameterization_state(self, tensors: dict[str, Tensor]) -> None:
        if not tensors:
            return
        network = self.new_network()
        network.load_state_dict({k.removeprefix(f"{self.network_attr}."): v for k, v in tensors.items()})
        stored = getattr(self, self.output_attr)
        setattr(self, self.output_attr, None)
        setattr(self, self.network_attr, network.to(stored.device) if stored is not None else network)


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """theta_tuned: every parameter with requires_grad, by name (a tied tensor appears once)."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def count(parameters: dict[str, Tensor] | list[Tensor]) -> int:
    values = parameters.values() if isinstance(parameters, dict) else parameters
    return sum(p.numel() for p in values)


def expand_rows(x: Tensor, batch_size: int) -> Tensor:
    """(n, ...) -> (B, n, ...): the same vectors for every row."""
    return x.unsqueeze(0).expand(batch_size, *x.shape)


def ones_mask(batch_size: int, n: int, device: torch.device) -> Tensor:
    return torch.ones(batch_size, n, dtype=torch.bool, device=device)
