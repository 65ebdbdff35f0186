"""minilm: a minimal, from-scratch Transformer for learning how language models and prompt learning work."""

from minilm.attention import MultiHeadAttention, attention, scaled_dot_product_attention
from minilm.config import ModelConfig
from minilm.data import prepare_corpus
from minilm.generate import fill_mask, generate
from minilm.kv_cache import KVCache
from minilm.model import Transformer, parameter_count
from minilm.objectives import IGNORE_INDEX, causal_lm_loss, mask_tokens, masked_lm_loss
from minilm.tokenizer import SPECIAL_TOKENS, Tokenizer
from minilm.trainer import TrainConfig, Trainer

__all__ = [
    "IGNORE_INDEX",
    "KVCache",
    "ModelConfig",
    "MultiHeadAttention",
    "SPECIAL_TOKENS",
    "Tokenizer",
    "TrainConfig",
    "Trainer",
    "Transformer",
    "attention",
    "causal_lm_loss",
    "fill_mask",
    "generate",
    "mask_tokens",
    "masked_lm_loss",
    "parameter_count",
    "prepare_corpus",
    "scaled_dot_product_attention",
]
__version__ = "0.1.0"
