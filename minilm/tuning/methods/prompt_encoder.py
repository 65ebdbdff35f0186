"""Prompt encoder (P-tuning style): the soft prompt is the output of a small network, p = g_phi(u).

    P = g_phi(U) = U + W_2 tanh(W_1 U + b_1) + b_2        row by row; U in R^{n x d} trainable inputs
    h_0 = [P; E[x]] + pos                                  as in prompt tuning

phi = (U, W_1, b_1, W_2, b_2) trains; the base is frozen unless `train_base` (full-model prompt tuning:
phi and theta together). W_2, b_2 and b_1 start at 0, so P = U at step 0 (U is initialised like a soft
prompt). The network couples the prompt vectors through shared weights, which can make training
steadier than updating every vector on its own.

After training the network is folded away: P is computed once and stored as plain vectors (n d
numbers), exactly what prompt tuning stores. The network's own tensors are saved too, so training
can resume from a folded checkpoint.

Docs: docs/tuning.md (prompt encoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minilm.model import ModelConfig, Transformer
from minilm.settings import check_fields, setting
from minilm.tokenizer import Tokenizer
from minilm.tuning.methods.base import Reparameterized
from minilm.tuning.methods.prompt import (
    INIT_HELP,
    PromptSettings,
    check_init,
    checked_start,
    initial_prompt,
    parse_init,
    pretrained_needs_start,
)


@dataclass(frozen=True)
class PromptEncoderSettings:
    """The prompt encoder's settings: its hyper-parameters in tuned.json and its flags."""

    prompt_len: int = setting(PromptSettings.prompt_len, "soft prompt vectors", check="positive", metavar="N")
    hidden: int = setting(
        256, "hidden width of the prompt encoder", flag="--encoder-hidden", check="positive", metavar="H"
    )
    init: str = setting(PromptSettings.init, INIT_HELP, parse=check_init)
    train_base: bool = setting(False, "train the base together with the prompt (full-model prompt tuning)")

    def __post_init__(self) -> None:
        check_fields(self)
        check_init(self.init)


class PromptMLP(nn.Module):
    """g_phi(U) = U + W_2 tanh(W_1 U + b_1) + b_2: a residual two-layer network applied to each row of U."""

    def __init__(self, prompt_len: int, d_model: int, hidden: int) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.zeros(prompt_len, d_model))
        self.W_1 = nn.Linear(d_model, hidden)
        self.W_2 = nn.Linear(hidden, d_model)
        nn.init.zeros_(self.W_2.weight)
        nn.init.zeros_(self.W_2.bias)

    def forward(self) -> Tensor:
        return self.U + self.W_2(torch.tanh(self.W_1(self.U)))


class PromptEncoder(Reparameterized):
    """A soft prompt produced by `PromptMLP` while training; plain vectors P once folded."""

    name = "prompt-encoder"
    Settings = PromptEncoderSettings
    network_attr, output_attr = "encoder", "P"

    @property
    def mixable(self) -> bool:
        """Rows of one batch may use different tasks' prompts, unless the base trains too (train_base)."""
        return not self.settings.train_base

    def __init__(self, settings: PromptEncoderSettings | None, config: ModelConfig, seed: int = 0) -> None:
        super().__init__(settings, config, seed)
        self.d_model = config.d_model
        self.encoder: PromptMLP | None = self.new_network()
        self.register_parameter("P", None)

    def initialize(self, base: Transformer, tokenizer: Tokenizer | None) -> None:
        """U at step 0 as a soft prompt's P (settings.init); W_1 drawn from the seed, b_1 = 0 (W_2 = 0, so P = U)."""
        kind, text = parse_init(self.settings.init)
        if kind == "pretrained":
            raise ValueError(pretrained_needs_start(self.settings.init))
        self.start_at(initial_prompt(base, self.settings.prompt_len, kind, self.seed, tokenizer, text))

    def start_at(self, start: Tensor) -> None:
        """U = start (n, d), so P = start at step 0 (a pre-trained prompt's P*_source too); W_1 drawn from the seed,
        b_1 = 0."""
        s, encoder = self.settings, self.encoder
        assert encoder is not None
        with torch.no_grad():
            encoder.U.copy_(checked_start(start, tuple(encoder.U.shape), "soft prompt"))
            g = torch.Generator().manual_seed(self.seed + 1)
            nn.init.normal_(encoder.W_1.weight, 0.0, 1.0 / s.hidden**0.5, generator=g)
            nn.init.zeros_(encoder.W_1.bias)  # not PyTorch's default draw, which would come from the global generator

    def new_network(self) -> PromptMLP:
        return PromptMLP(self.settings.prompt_len, self.d_model, self.settings.hidden)

    def setup(self, base: Transformer) -> None:
        base.requires_grad_(self.settings.train_base)

    @property
    def prompt_length(self) -> int:
        return self.settings.prompt_len

    def soft_prompt(self) -> Tensor:
        """P (n, d): g_phi(U) while training, the stored vectors once folded."""
        return self.computed()
