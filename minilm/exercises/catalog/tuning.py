"""Exercises of prefix tuning's key mask, its start from a text's keys and values, LoRA's merge, and the adapter.

Docs: docs/course.md (the exercises).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilm.exercises.exercise import Exercise
from minilm.model.kv_cache import KVCache

PATHS = "tests/test_tuning_paths.py"


# ---- the key mask [cached; prefix; tokens] ---------------------------------------------------------------------------
def key_mask_tokens_before_prefix(
    cache: KVCache | None,
    n_prefix: int,
    prefix_visible: Tensor | None,
    real: Tensor | None,
    B: int,
    T: int,
    device: torch.device,
) -> Tensor | None:
    """The parts in the wrong order, [cached; tokens; prefix]: the mask no longer lines up with the keys."""
    cached = cache.key_mask if cache is not None else None
    if cached is None and real is None and prefix_visible is None:
        return None
    S = cache.length if cache is not None else 0
    ones = lambda n: torch.ones(B, n, dtype=torch.bool, device=device)  # noqa: E731
    parts = [
        cached if cached is not None else ones(S),
        real if real is not None else ones(T),
        prefix_visible if prefix_visible is not None else ones(n_prefix),
    ]
    return torch.cat(parts, dim=1)


def key_mask_every_prefix_visible(
    cache: KVCache | None,
    n_prefix: int,
    prefix_visible: Tensor | None,
    real: Tensor | None,
    B: int,
    T: int,
    device: torch.device,
) -> Tensor | None:
    """prefix_visible ignored: in a mixed-task batch a row sees the padded prefix positions of a longer prefix."""
    cached = cache.key_mask if cache is not None else None
    if cached is None and real is None:
        return None
    S = cache.length if cache is not None else 0
    ones = lambda n: torch.ones(B, n, dtype=torch.bool, device=device)  # noqa: E731
    return torch.cat(
        [cached if cached is not None else ones(S), ones(n_prefix), real if real is not None else ones(T)], 1
    )


def key_mask_forgetting_the_cache(
    cache: KVCache | None,
    n_prefix: int,
    prefix_visible: Tensor | None,
    real: Tensor | None,
    B: int,
    T: int,
    device: torch.device,
) -> Tensor | None:
    """The cached keys all visible: padding in an earlier chunk of a KV cache is attended again."""
    if real is None and prefix_visible is None and (cache is None or cache.key_mask is None):
        return None
    S = cache.length if cache is not None else 0
    ones = lambda n: torch.ones(B, n, dtype=torch.bool, device=device)  # noqa: E731
    prefix = prefix_visible if prefix_visible is not None else ones(n_prefix)
    return torch.cat([ones(S), prefix, real if real is not None else ones(T)], dim=1)


def key_mask_by_slices(
    cache: KVCache | None,
    n_prefix: int,
    prefix_visible: Tensor | None,
    real: Tensor | None,
    B: int,
    T: int,
    device: torch.device,
) -> Tensor | None:
    """One tensor of ones, with each known part written into its slice."""
    cached = cache.key_mask if cache is not None else None
    if cached is None and real is None and prefix_visible is None:
        return None
    S = cache.length if cache is not None else 0
    mask = torch.ones(B, S + n_prefix + T, dtype=torch.bool, device=device)
    if cached is not None:
        mask[:, :S] = cached
    if prefix_visible is not None:
        mask[:, S : S + n_prefix] = prefix_visible
    if real is not None:
        mask[:, S + n_prefix :] = real
    return mask


# ---- a prefix from a text: its keys and values in every layer ------------------------------------------------------
def _each_layer(base, ids: Tensor, kv) -> Tensor:
    """Run the base on the text in eval mode; kv(block, h) gives a layer's (K, V), each (n, d)."""
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad():
            h, key_mask, _ = base.block_inputs(ids[None])
            layers = []
            for block in base.blocks:
                layers.append(torch.stack(kv(block, h)))
                h = block(h, key_mask)
    finally:
        base.train(was_training)
    return torch.stack(layers).float()


def text_keys_values_before_layer_norm(base, ids: Tensor) -> Tensor:
    """K = h W_K of the block's input h itself, without LN_1: not what the attention projects."""
    return _each_layer(base, ids, lambda block, h: (block.attn.W_k(h)[0], block.attn.W_v(h)[0]))


def text_keys_values_heads_flattened(base, ids: Tensor) -> Tensor:
    """The split keys (h, n, d_k) flattened straight to (n, d): heads and positions mixed up."""
    n, d = ids.numel(), base.config.d_model

    def kv(block, h):
        _, k, v = block.attn.project(block.ln_1(h))
        return k[0].reshape(n, d), v[0].reshape(n, d)

    return _each_layer(base, ids, kv)


def text_keys_values_values_are_keys(base, ids: Tensor) -> Tensor:
    """V = K: the keys stored twice, W_V never used."""

    def kv(block, h):
        k = block.attn.W_k(block.ln_1(h))[0]
        return k, k

    return _each_layer(base, ids, kv)


def text_keys_values_from_the_embeddings(base, ids: Tensor) -> Tensor:
    """Every layer's K and V projected from h_0, the embeddings, instead of that layer's own input."""
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad():
            h_0, _, _ = base.block_inputs(ids[None])
            X = [block.ln_1(h_0) for block in base.blocks]
            layers = [torch.stack([b.attn.W_k(x)[0], b.attn.W_v(x)[0]]) for b, x in zip(base.blocks, X)]
    finally:
        base.train(was_training)
    return torch.stack(layers).float()


def text_keys_values_without_positions(base, ids: Tensor) -> Tensor:
    """The text's tokens without their position embeddings, h_0 = E[x]: the keys of a text with no order."""
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad():
            h = base.tok_emb(ids[None])
            layers = []
            for block in base.blocks:
                x = block.ln_1(h)
                layers.append(torch.stack([block.attn.W_k(x)[0], block.attn.W_v(x)[0]]))
                h = block(h, None)
    finally:
        base.train(was_training)
    return torch.stack(layers).float()


def text_keys_values_written_out(base, ids: Tensor) -> Tensor:
    """K^l = X^l W_K^T + b_K written out on the d columns, no head split (the split is only a view of them)."""

    def kv(block, h):
        x = block.ln_1(h)[0]
        W_k, W_v = block.attn.W_k, block.attn.W_v
        return x @ W_k.weight.t() + W_k.bias, x @ W_v.weight.t() + W_v.bias

    return _each_layer(base, ids, kv)


# ---- adapters -------------------------------------------------------------------------------------------------------
def adapter_without_its_residual(self, h: Tensor) -> Tensor:
    """W_up GELU(W_down h + b_down) + b_up alone: h left out, so the adapter starts near zero, not at the identity."""
    return self.W_up(F.gelu(self.W_down(h)))


def adapter_with_relu(self, h: Tensor) -> Tensor:
    """ReLU in place of the GELU the equation (and the base's feed-forward network) uses."""
    return h + self.W_up(F.relu(self.W_down(h)))


def adapter_activation_after_up(self, h: Tensor) -> Tensor:
    """The non-linearity after the up-projection: h + GELU(W_up (W_down h + b_down) + b_up)."""
    return h + F.gelu(self.W_up(self.W_down(h)))


def adapter_written_out(self, h: Tensor) -> Tensor:
    """The same equation with the weights written out and GELU(z) = z Phi(z) = z/2 (1 + erf(z / sqrt 2))."""
    z = h @ self.W_down.weight.t() + self.W_down.bias
    return h + (0.5 * z * (1 + torch.erf(z / math.sqrt(2)))) @ self.W_up.weight.t() + self.W_up.bias


# ---- LoRA's merge ---------------------------------------------------------------------------------------------------
def merged_with_alpha(self) -> nn.Linear:
    """W + alpha B A: the update scaled by alpha, not alpha / r."""
    W = self.base.weight
    linear = nn.Linear(W.size(1), W.size(0), device=W.device, dtype=W.dtype)
    with torch.no_grad():
        linear.weight.copy_(W + self.alpha * (self.B @ self.A))
        linear.bias.copy_(self.base.bias)
    return linear.requires_grad_(False)


def merged_transposed(self) -> nn.Linear:
    """W + (alpha / r) A^T B^T: the product in the wrong order (it has W's shape only when W is square)."""
    W = self.base.weight
    linear = nn.Linear(W.size(1), W.size(0), device=W.device, dtype=W.dtype)
    with torch.no_grad():
        linear.weight.copy_(W + self.scale * (self.A.t() @ self.B.t()))
        linear.bias.copy_(self.base.bias)
    return linear.requires_grad_(False)


def merged_without_the_bias(self) -> nn.Linear:
    """The new layer's bias left at its random initialisation instead of the base's bias."""
    W = self.base.weight
    linear = nn.Linear(W.size(1), W.size(0), device=W.device, dtype=W.dtype)
    with torch.no_grad():
        linear.weight.copy_(W + self.scale * (self.B @ self.A))
    return linear.requires_grad_(False)


def merged_by_sum_of_rank_one_terms(self) -> nn.Linear:
    """W + (alpha / r) sum_i b_i a_i^T: the low-rank update as r outer products."""
    W = self.base.weight
    update = sum(torch.outer(self.B[:, i], self.A[i]) for i in range(self.r))
    linear = nn.Linear(W.size(1), W.size(0), device=W.device, dtype=W.dtype)
    with torch.no_grad():
        linear.weight.copy_(W + (self.alpha / self.r) * update)
        linear.bias.copy_(self.base.bias)
    return linear.requires_grad_(False)


TEXT_PREFIX = "tests/test_prefix_init.py"

EXERCISES = (
    Exercise(
        id="prefix-mask",
        target="minilm.model.transformer:Transformer._key_mask",
        docs="docs/attention.md#prefix-keys-and-values",
        tests=(
            f"{PATHS}::test_real_tokens_see_every_prefix_position_and_causally_each_other",
            f"{PATHS}::test_a_mixed_task_batch_equals_each_row_with_its_own_prompt_or_prefix_alone",
            "tests/test_model.py::test_kv_cache_chunks_give_the_same_logits_as_one_pass[pad-prefix-math]",
            "tests/test_model.py::test_kv_cache_chunks_give_the_same_logits_as_one_pass[pad-no-prefix-sdpa]",
        ),
        hints=(
            "The keys of a layer are [cached; prefix; new tokens]: the mask has S + P + T columns in that order.",
            "A part that is not given is all visible: torch.ones(B, n) for it; return None when no part is given.",
            "The cache keeps the mask of its earlier keys (cache.key_mask); its length is cache.length.",
        ),
        mutants=(key_mask_tokens_before_prefix, key_mask_every_prefix_visible, key_mask_forgetting_the_cache),
        alternatives=(key_mask_by_slices,),
    ),
    Exercise(
        id="prefix-from-text",
        target="minilm.tuning.methods.prefix:text_keys_values",
        docs="docs/tuning.md#starting-the-prefix-from-a-text",
        tests=(
            f"{TEXT_PREFIX}::test_a_prefix_initialised_from_a_text_prompt_gives_the_logits_of_that_prompt_followed_by_"
            "the_input_at_step_0",
            f"{TEXT_PREFIX}::test_a_text_prefix_holds_the_keys_and_values_a_kv_cache_of_that_text_holds_without_dropout",
            f"{TEXT_PREFIX}::test_a_tuned_model_with_a_text_prefix_generates_what_the_base_generates_after_the_text",
        ),
        hints=(
            "Run the base on the text alone, in eval mode (no dropout): base.block_inputs(ids[None]) gives "
            "h_0 = E[x] + P[0..n-1] and the key mask; put the base's mode back at the end.",
            "Layer l's attention projects X^l = LN_1(h_{l-1}): block.attn.project(block.ln_1(h)) gives Q, K, V split "
            "into heads; then h = block(h, key_mask) is the next layer's input.",
            "Store each layer's K and V with the heads side by side again (block.attn.merge_heads), stacked to "
            "(L, 2, n, d).",
        ),
        mutants=(
            text_keys_values_before_layer_norm,
            text_keys_values_heads_flattened,
            text_keys_values_values_are_keys,
            text_keys_values_from_the_embeddings,
            text_keys_values_without_positions,
        ),
        alternatives=(text_keys_values_written_out,),
    ),
    Exercise(
        id="lora-merge",
        target="minilm.tuning.methods.lora:LoRALinear.merged",
        docs="docs/tuning.md#lora-hu-et-al-2021",
        tests=(
            f"{PATHS}::test_a_merged_lora_layer_computes_the_unmerged_layer_bias_included_and_is_frozen",
            f"{PATHS}::test_lora_starts_at_the_base_and_merging_keeps_its_outputs",
        ),
        hints=(
            "B is (d_out, r) and A is (r, d_in): B A has the shape of W, and the update is scaled by alpha / r.",
            "Make a new nn.Linear, copy W + (alpha / r) B A and the base's bias into it under torch.no_grad().",
            "The merged layer is for inference: requires_grad_(False).",
        ),
        mutants=(merged_with_alpha, merged_transposed, merged_without_the_bias),
        alternatives=(merged_by_sum_of_rank_one_terms,),
    ),
    Exercise(
        id="adapter",
        target="minilm.tuning.methods.adapter:Adapter.forward",
        docs="docs/tuning.md#adapters-houlsby-et-al-2019",
        tests=(
            f"{PATHS}::test_an_adapter_adds_its_bottleneck_update_to_its_input",
            f"{PATHS}::test_adapters_start_at_the_base_and_train_only_themselves_and_the_layernorms",
        ),
        hints=(
            "self.W_down is nn.Linear(d, m) and self.W_up is nn.Linear(m, d); each already adds its bias.",
            "The non-linearity sits in the bottleneck, between the two projections: the exact GELU, F.gelu.",
            "An adapter keeps a residual connection of its own: add h back, so near-zero weights give the identity.",
        ),
        mutants=(adapter_without_its_residual, adapter_with_relu, adapter_activation_after_up),
        alternatives=(adapter_written_out,),
    ),
)
