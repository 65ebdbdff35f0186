"""Layer 1, the network: config, attention and its kernels, masks, the KV cache, the Transformer, sampling, generation.

Docs: docs/transformer.md, docs/attention.md, docs/kernels.md, docs/generation.md.
"""

from minilm.model.attention import MultiHeadAttention, attention, scaled_dot_product_attention
from minilm.model.config import ModelConfig
from minilm.model.generate import complete, fill_mask, generate
from minilm.model.kv_cache import KVCache
from minilm.model.transformer import Prefix, Transformer, parameter_count

__all__ = [
    "KVCache",
    "ModelConfig",
    "MultiHeadAttention",
    "Prefix",
    "Transformer",
    "attention",
    "complete",
    "fill_mask",
    "generate",
    "parameter_count",
    "scaled_dot_product_attention",
]
