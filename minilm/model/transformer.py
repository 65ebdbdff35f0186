"""The Transformer: embeddings, pre-LayerNorm blocks of multi-head attention and a GELU feed-forward, tied output.

    h_0 = E[x] + P[pos]                                 token + position embeddings
    a_l = h_{l-1} + MultiHead(LN_1(h_{l-1}))            attention sub-layer with residual
    h_l = a_l + FFN(LN_2(a_l))                          feed-forward sub-layer with residual
    logits = LN_f(h_L) E^T                              output projection tied to the token embedding

One model serves both objectives: `config.causal` makes attention causal (autoregressive LM) or
bidirectional (masked LM). Hooks let tuning methods plug in without touching this file:
`inputs_embeds` (soft prompts are prepended there), `prefix` (per-layer keys/values that every
query may attend to: prefix tuning), `position_offset` (the tokens' positions start later, as
behind a text whose keys and values a prefix holds), and each block's `post_attn` / `post_ffn`
(a module on a sub-layer's output before its residual add: adapters; minilm.model.layers).

Docs: docs/transformer.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from minilm.model.config import ModelConfig
from minilm.model.kv_cache import KVCache
from minilm.model.layers import Block, LayerNorm
from minilm.model.masks import position_ids

Prefix = Sequence[tuple[Tensor, Tensor]]
"""Per-layer (prefix_k, prefix_v), each (B or 1, n_heads, P, head_dim), one pair per block."""


def parameter_count(config: ModelConfig) -> int:
    """Closed form: V d + N d + L (4 d^2 + 2 d d_ff + 9 d + d_ff) + 2 d (the output matrix is E, shared).

    Per block: W_Q, W_K, W_V, W_O with biases 4(d^2 + d); two LayerNorms 4d; W_1, b_1, W_2, b_2
    2 d d_ff + d_ff + d. Plus token (V d) and position (N d) tables and the final LayerNorm (2d).
    """
    V, N, L, d, f = config.vocab_size, config.max_len, config.n_layers, config.d_model, config.d_ff
    return V * d + N * d + L * (4 * d * d + 2 * d * f + 9 * d + f) + 2 * d


class Transformer(nn.Module):
    """A GPT/BERT-style Transformer language model (see the module docstring for the equations)."""

    def __init__(self, config: ModelConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = LayerNorm(config.d_model)
        self.gradient_checkpointing = False
        """When True, training forward passes keep only each block's input and recompute the block in the
        backward pass: activation memory O(L) block inputs instead of every intermediate, for ~1 extra forward."""
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Draw every weight from N(0, 0.02^2) with a generator seeded by `seed` (the residual output
        projections W_O and W_2 with std 0.02 / sqrt(2L), as in GPT-2); biases 0, LayerNorm gamma 1, beta 0."""
        generator = torch.Generator().manual_seed(seed)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
            elif isinstance(module, LayerNorm):
                nn.init.ones_(module.gamma)
                nn.init.zeros_(module.beta)
        for block in self.blocks:
            for out in (block.attn.W_o, block.ffn.W_2):
                nn.init.normal_(out.weight, 0.0, residual_std, generator=generator)

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied output matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids: Tensor | None = None, **inputs: Any) -> Tensor:
        """logits = LN_f(h_L) E^T, shape (B, T, V): a score for every vocabulary token at every position.

        Takes the inputs of `hidden_states` (input_ids or inputs_embeds, attention_mask, prefix, prefix_mask, cache,
        position_offset).
        """
        return F.linear(self.hidden_states(input_ids, **inputs), self.tok_emb.weight)

    def hidden_states(
        self,
        input_ids: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        prefix: Prefix | None = None,
        prefix_mask: Tensor | None = None,
        cache: KVCache | None = None,
        position_offset: int | Tensor = 0,
    ) -> Tensor:
        """LN_f(h_L), shape (B, T, d): the final hidden vector of every position.

        input_ids       (B, T) token ids, or
        inputs_embeds   (B, T, d) vectors used in place of E[x] (position embeddings are still added)
        attention_mask  (B, T) 1/True at real tokens, 0/False at padding; padding is never attended
                        and takes no position, so a padded row gives the same outputs as the row alone
        prefix          one (prefix_k, prefix_v) pair per block, each (B or 1, h, P, d_k): keys and values
                        every query may attend to (causality applies among the real tokens only)
        prefix_mask     (B, P) True at prefix positions that are used; rows of a mixed-task batch whose
                        prefix is shorter than P pad it with False (None: every prefix position is used)
        cache           a KVCache to continue from; it is extended in place with this call's keys/values
        position_offset the position of each row's first real token, an int or (B,) (0: the start), as if that many
                        tokens came before; a prefix holding a text's keys and values puts the input behind the text
                        (with a cache: the first call only, the cache then carries the positions on)
        """
        x, key_mask, layer_prefixes = self.block_inputs(
            input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            prefix=prefix,
            prefix_mask=prefix_mask,
            cache=cache,
            position_offset=position_offset,
        )
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            if recompute and layer_cache is None:
                # keep only the block's input; its activations are recomputed (same dropout masks) in backward
                x = torch.utils.checkpoint.checkpoint(block, x, key_mask, layer_prefixes[i], use_reentrant=False)
            else:
                x = block(x, key_mask, layer_prefixes[i], layer_cache)
        return self.ln_f(x)

    def block_inputs(
        self,
        input_ids: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        prefix: Prefix | None = None,
        prefix_mask: Tensor | None = None,
        cache: KVCache | None = None,
        position_offset: int | Tensor = 0,
    ) -> tuple[Tensor, Tensor | None, list[tuple[Tensor, Tensor] | None]]:
        """(h_0, key mask, per-layer prefixes): what every block takes, from the inputs of `hidden_states`.

        h_0 = E[x] + P[pos] (B, T, d), pos counted from position_offset; the key mask (B, S + P + T) over [cached;
        prefix; tokens], or None when every key is visible; one (prefix_k, prefix_v) or None per block. With a cache,
        its positions, token count and key mask move past this call's tokens here (the blocks then append their keys
        and values).
        """
        x = self._token_embeddings(input_ids, inputs_embeds)
        B, T, _ = x.shape
        real = self._real_token_mask(attention_mask, B, T, x.device)
        layer_prefixes = self._check_prefix(prefix, B)
        offset = self._check_offset(position_offset, B, cache)
        self._check_continuation(cache, B, T, prefix is not None, offset)

        start = (
            cache.positions
            if cache is not None and cache.positions is not None
            else torch.as_tensor(position_offset, dtype=torch.long, device=x.device).expand(B)
        )
        x = self.drop(x + self.pos_emb(position_ids(real, start, T)))

        n_prefix = layer_prefixes[0][0].size(2) if layer_prefixes[0] is not None else 0
        prefix_visible = self._prefix_mask(prefix_mask, B, n_prefix, x.device)
        key_mask = self._key_mask(cache, n_prefix, prefix_visible, real, B, T, x.device)
        if cache is not None:
            cache.key_mask = key_mask
            cache.positions = start + (T if real is None else real.sum(dim=1))
            cache.n_tokens += offset + T
        return x, key_mask, layer_prefixes

    # ---- input checks and masks --------------------------------------------------------------
    def _token_embeddings(self, input_ids: Tensor | None, inputs_embeds: Tensor | None) -> Tensor:
        """E[x] for token ids, or the given vectors; checks shapes and the id range (on the host in eager calls, on
        the device inside torch.compile, so a compiled step stays one graph)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is not None:
            if inputs_embeds.dim() != 3 or inputs_embeds.size(-1) != self.config.d_model:
                raise ValueError(
                    f"inputs_embeds must be (batch, seq, d_model={self.config.d_model}), "
                    f"got {tuple(inputs_embeds.shape)}"
                )
            if inputs_embeds.size(1) == 0:
                raise ValueError("inputs_embeds has no positions: give at least one")
            return inputs_embeds
        assert input_ids is not None
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8):
            raise ValueError(
                f"input_ids must be an integer tensor of shape (batch, seq), "
                f"got {input_ids.dtype} {tuple(input_ids.shape)}"
            )
        if input_ids.size(1) == 0:
            raise ValueError("input_ids has no tokens: give at least one")
        V = self.config.vocab_size
        if torch.compiler.is_compiling():
            # Compiled: a device-side check. Reading the ids on the host (as below) would break the graph and, on CUDA,
            # wait for the GPU at every forward; this raises a RuntimeError when the ids are out of range, no sync.
            in_range = ((input_ids >= 0) & (input_ids < V)).all()
            torch._assert_async(in_range, f"a token id is out of range for vocab_size={V}: ids must be in [0, {V})")
        else:
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= V:
                raise ValueError(
                    f"token id {lo if lo < 0 else hi} is out of range for vocab_size={V}: "
                    "ids must be in [0, vocab_size); was the text encoded with this model's tokenizer?"
                )
        return self.tok_emb(input_ids.long())

    @staticmethod
    def _real_token_mask(attention_mask: Tensor | None, B: int, T: int, device: torch.device) -> Tensor | None:
        if attention_mask is None:
            return None
        if attention_mask.shape != (B, T):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the input is {(B, T)}: "
                "give one 1/0 entry per token"
            )
        return attention_mask.to(device=device, dtype=torch.bool)

    def _check_prefix(self, prefix: Prefix | None, B: int) -> list[tuple[Tensor, Tensor] | None]:
        """Validate a per-layer prefix and broadcast a batch of 1 to B rows."""
        if prefix is None:
            return [None] * self.config.n_layers
        if len(prefix) != self.config.n_layers:
            raise ValueError(f"prefix has {len(prefix)} layers but the model has n_layers={self.config.n_layers}")
        h, d_k = self.config.n_heads, self.config.head_dim
        P = prefix[0][0].size(2) if prefix[0][0].dim() == 4 else -1
        checked: list[tuple[Tensor, Tensor] | None] = []
        for layer, (prefix_k, prefix_v) in enumerate(prefix):
            for t in (prefix_k, prefix_v):
                if t.dim() != 4 or t.size(0) not in (1, B) or t.shape[1:] != (h, P, d_k) or P < 1:
                    raise ValueError(
                        f"prefix of layer {layer} has shape {tuple(t.shape)}; expected (batch {B} or 1, "
                        f"n_heads={h}, P, head_dim={d_k}) with the same P >= 1 in every layer"
                    )
            checked.append((prefix_k.expand(B, -1, -1, -1), prefix_v.expand(B, -1, -1, -1)))
        return checked

    @staticmethod
    def _check_offset(position_offset: int | Tensor, B: int, cache: KVCache | None) -> int:
        """The largest position offset, once checked: >= 0, an int or one per row, and only for a cache's first call."""
        if isinstance(position_offset, Tensor):
            if position_offset.shape != (B,) or position_offset.is_floating_point():
                raise ValueError(
                    f"position_offset must be an int or an integer tensor of shape ({B},), one per row; "
                    f"got {position_offset.dtype} {tuple(position_offset.shape)}"
                )
            low, offset = int(position_offset.min()), int(position_offset.max())
        else:
            low = offset = position_offset
        if low < 0:
            raise ValueError(f"position_offset must be >= 0 (the first real token's position), got {low}")
        if offset and cache is not None and cache.positions is not None:
            raise ValueError(
                "the KV cache already carries the positions: pass position_offset with the first chunk only"
            )
        return offset

    def _check_continuation(self, cache: KVCache | None, B: int, T: int, has_prefix: bool, offset: int = 0) -> None:
        """The input fits in max_len after what the cache already holds (and the position offset), and matches the
        cache's batch."""
        past_tokens = (cache.n_tokens if cache is not None else 0) + offset
        if past_tokens + T > self.config.max_len:
            after = f" after a position offset of {offset}" if offset else ""
            raise ValueError(
                f"sequence of {past_tokens + T - offset} tokens{after} is longer than the model's "
                f"max_len={self.config.max_len}: truncate the input or train a model with a larger max_len"
            )
        if cache is None:
            return
        if not self.config.causal:
            raise ValueError(
                "a KV cache is only meaningful for a causal model: in a bidirectional (masked) model every "
                "token sees the later ones too, so earlier keys and values change; run the whole sequence"
            )
        if cache.positions is not None and cache.positions.size(0) != B:
            raise ValueError(
                f"the KV cache holds {cache.positions.size(0)} rows but the input has {B}: use one cache per batch"
            )
        if has_prefix and cache.length > 0:
            raise ValueError("the prefix is already in the KV cache: pass prefix only with the first chunk")

    @staticmethod
    def _prefix_mask(prefix_mask: Tensor | None, B: int, P: int, device: torch.device) -> Tensor | None:
        if prefix_mask is None:
            return None
        if P == 0:
            raise ValueError("prefix_mask was given without a prefix")
        if prefix_mask.shape != (B, P):
            raise ValueError(
                f"prefix_mask has shape {tuple(prefix_mask.shape)} but the prefix is {(B, P)}: "
                "one entry per row and prefix position"
            )
        return prefix_mask.to(device=device, dtype=torch.bool)

    @staticmethod
    def _key_mask(
        cache: KVCache | None,
        n_prefix: int,
        prefix_visible: Tensor | None,
        real: Tensor | None,
        B: int,
        T: int,
        device: torch.device,
    ) -> Tensor | None:
        """Visibility of every key [cached; prefix; new tokens] as (B, S + P + T) bool, or None if all are visible."""
        cached = cache.key_mask if cache is not None else None
        if cached is None and real is None and prefix_visible is None:
            return None
        S = cache.length if cache is not None else 0
        parts = [
            cached if cached is not None else torch.ones(B, S, dtype=torch.bool, device=device),
            prefix_visible if prefix_visible is not None else torch.ones(B, n_prefix, dtype=torch.bool, device=device),
            real if real is not None else torch.ones(B, T, dtype=torch.bool, device=device),
        ]
        return torch.cat(parts, dim=1)
