"""The attention map: every layer's and every head's probabilities, read from the model on its own inputs.

    probs^l = softmax(Q^l K^l^T / sqrt(d_k) + M)       l = 1..L, one (B, h, T, P + T) tensor per layer
    Q^l = LN_1(h_{l-1}) W_Q^l,   K^l = [prefix_k^l; LN_1(h_{l-1}) W_K^l]

`layer_probs` runs the blocks one by one as `Transformer.hidden_states` does (the same h_0, key mask and prefixes,
from `Transformer.block_inputs`; the same blocks carry the residual stream from layer to layer) and, before each
block, asks its attention for the probabilities it applies to V (`MultiHeadAttention.probs`: the math path, the
one softmax of `attention_probs`). Normal forward passes are untouched: they never form these matrices.

Docs: docs/attention.md (the attention map).
"""

from __future__ import annotations

import torch
from torch import Tensor

from minilm.model.transformer import Prefix, Transformer


@torch.no_grad()
def layer_probs(
    model: Transformer,
    input_ids: Tensor | None = None,
    *,
    inputs_embeds: Tensor | None = None,
    attention_mask: Tensor | None = None,
    prefix: Prefix | None = None,
    prefix_mask: Tensor | None = None,
    position_offset: int | Tensor = 0,
) -> list[Tensor]:
    """[probs^1, ..., probs^L], each (B, h, T, P + T): query i's weights over the keys [prefix; tokens], per head.

    Takes the inputs of `hidden_states` (no cache). Rows sum to 1 over the visible keys; a causal model's are 0 above
    the diagonal shifted by P. Runs in eval mode (no dropout), then restores the model's mode.
    """
    was_training = model.training
    model.eval()
    try:
        x, key_mask, prefixes = model.block_inputs(
            input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            prefix=prefix,
            prefix_mask=prefix_mask,
            position_offset=position_offset,
        )
        probs = []
        for block, layer_prefix in zip(model.blocks, prefixes):
            probs.append(block.attn.probs(block.ln_1(x), key_mask, layer_prefix))  # the block's own LN_1 and W_Q, W_K
            x = block(x, key_mask, layer_prefix)
        return probs
    finally:
        model.train(was_training)
