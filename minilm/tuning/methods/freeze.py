"""Layer freezing and full fine-tuning: choose which of the base's own parameters train.

    first k   theta_tuned = {E, pos} + blocks 1..k           ("tune the first k layers"; the rest frozen)
    last k    theta_tuned = blocks L-k+1..L + LN_f           (k = 0: only the final LayerNorm and the task head)
    full      theta_tuned = theta                            (the reference every cheaper method is compared to)

The output projection is tied to E, so with a verbalizer "first k" also moves the LM head and
"last k" does not. Trainable numbers follow from `parameter_count`'s terms (see `expected_count`).
With no recipe given, layer freezing trains the embeddings and the first block (first k, k = 1).

Docs: docs/tuning.md (layer freezing, full fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from minilm.model import ModelConfig, Transformer
from minilm.settings import check_fields, setting
from minilm.tuning.methods.base import TuningMethod

RECIPES = ("first", "last")


@dataclass(frozen=True)
class FreezeSettings:
    """Layer freezing's settings. On the command line one flag gives both: --freeze-first K or --freeze-last K."""

    recipe: str = setting(
        "first",
        "which blocks train: the first k (and the embeddings) or the last k (and LN_f)",
        choices=RECIPES,
        cli=False,
    )
    k: int = setting(1, "how many blocks train", check="non_negative", cli=False)

    FLAGS: ClassVar[dict[str, tuple[str, str]]] = {
        "first": ("--freeze-first", "train the embeddings and the first K blocks, freeze the rest"),
        "last": (
            "--freeze-last",
            "train the last K blocks and the final LayerNorm; 0 = only the final LayerNorm and the head",
        ),
    }
    """recipe -> (its flag, whose value is k; what it trains)."""

    def __post_init__(self) -> None:
        check_fields(self)


def block_size(c: ModelConfig) -> int:
    """Numbers in one block: 4 d^2 + 2 d d_ff + 9 d + d_ff."""
    return 4 * c.d_model**2 + 2 * c.d_model * c.d_ff + 9 * c.d_model + c.d_ff


class LayerFreezing(TuningMethod):
    """Train the embeddings and the first k blocks ('first'), or the last k blocks and LN_f ('last')."""

    name = "freeze"

    Settings = FreezeSettings

    def __init__(self, settings: FreezeSettings | None, config: ModelConfig, seed: int = 0) -> None:
        super().__init__(settings, config, seed)
        recipe, k, n_layers = self.settings.recipe, self.settings.k, config.n_layers
        if k > n_layers:
            raise ValueError(
                f"cannot train the {recipe} {k} blocks: the base has {n_layers} layers, choose 0..{n_layers}"
            )
        self.recipe, self.k, self.n_layers = recipe, k, n_layers

    def setup(self, base: Transformer) -> None:
        base.requires_grad_(False)
        if self.recipe == "first":
            base.tok_emb.requires_grad_(True)
            base.pos_emb.requires_grad_(True)
            for block in base.blocks[: self.k]:
                block.requires_grad_(True)
        else:
            for block in base.blocks[self.n_layers - self.k :]:
                block.requires_grad_(True)
            base.ln_f.requires_grad_(True)

    @staticmethod
    def expected_count(c: ModelConfig, recipe: str, k: int) -> int:
        """first: V d + N d + k * block;  last: k * block + 2 d."""
        if recipe == "first":
            return c.vocab_size * c.d_model + c.max_len * c.d_model + k * block_size(c)
        return k * block_size(c) + 2 * c.d_model


class FullFineTuning(TuningMethod):
    """Every base parameter trains: theta_tuned = theta."""

    name = "full"

    def setup(self, base: Transformer) -> None:
        base.requires_grad_(True)
