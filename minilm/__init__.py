"""minilm: a minimal, from-scratch Transformer for learning how language models and prompt learning work.

The package is layered; a module imports only from its own layer or a lower one:

    files, outputs, settings, tokenizer    [0] safe files, what a command may write over, settings, the tokenizer
    model/                                 [1] the network
    training/                              [2] text -> a trained base
    prompting/                             [3] a frozen LM read out by words
    tuning/                                [4] a frozen LM adapted by a few parameters
    experiments/                           [5] methods measured against each other
    cli/                                   [6] the command line: one module per command

Docs: docs/README.md (one page per topic), docs/layout.md (where things are).
"""

from minilm.model import (
    KVCache,
    ModelConfig,
    MultiHeadAttention,
    Transformer,
    attention,
    complete,
    fill_mask,
    generate,
    parameter_count,
    scaled_dot_product_attention,
)
from minilm.tokenizer import SPECIAL_TOKENS, Tokenizer
from minilm.training import (
    IGNORE_INDEX,
    TrainConfig,
    Trainer,
    causal_lm_loss,
    mask_tokens,
    masked_lm_loss,
    prepare_corpus,
)

__all__ = [
    "IGNORE_INDEX",
    "SPECIAL_TOKENS",
    "KVCache",
    "ModelConfig",
    "MultiHeadAttention",
    "Tokenizer",
    "TrainConfig",
    "Trainer",
    "Transformer",
    "attention",
    "causal_lm_loss",
    "complete",
    "fill_mask",
    "generate",
    "mask_tokens",
    "masked_lm_loss",
    "parameter_count",
    "prepare_corpus",
    "scaled_dot_product_attention",
]
__version__ = "0.1.0"
