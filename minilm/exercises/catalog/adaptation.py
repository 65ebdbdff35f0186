"""Exercises of the blocks, the prompting and tuning methods, and the FlashAttention recurrence: the heads, the
feed-forward network, the KV cache, the soft prompt, the prefix MLP, BitFit, a label word's score, contextual
calibration, a prompt search's first-order candidates and the online softmax.

Each mutant is a typical mistake (its docstring's first line says which); each alternative is a correct solution
written differently from the library's. tests/test_exercises.py checks that the tests reject every mutant and pass
the reference and every alternative.

Docs: docs/course.md (the exercises), docs/attention.md, docs/transformer.md, docs/tuning.md, docs/prompting.md,
docs/kernels.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.exercises.exercise import Exercise
from minilm.tokenizer import MASK_ID, NUM_SPECIAL_TOKENS

ATTENTION = "tests/test_attention.py"
MODEL = "tests/test_model.py"
PATHS = "tests/test_tuning_paths.py"
PROMPTING = "tests/test_prompting.py"
ONLINE = "tests/test_online_softmax.py"
SEARCH = "tests/test_prompt_search.py"


# ---- split and merge the heads --------------------------------------------------------------------------------------
def split_heads_without_transpose(self, x: Tensor) -> Tensor:
    """Viewed straight as (B, h, T, d_k), without the transpose: a head gets a block of positions, not its features."""
    B, T, _ = x.shape
    return x.reshape(B, self.n_heads, T, self.head_dim)


def split_heads_interleaved(self, x: Tensor) -> Tensor:
    """Head i takes every h-th feature (i, i + h, ...) instead of the block i d_k .. (i+1) d_k - 1."""
    B, T, _ = x.shape
    return x.view(B, T, self.head_dim, self.n_heads).permute(0, 3, 1, 2)


def split_heads_by_slices(self, x: Tensor) -> Tensor:
    """The heads cut out one by one as column slices and stacked along a new dimension 1."""
    d_k = self.head_dim
    return torch.stack([x[..., i * d_k : (i + 1) * d_k] for i in range(self.n_heads)], dim=1)


def merge_heads_without_transpose(self, x: Tensor) -> Tensor:
    """Reshaped straight from (B, h, T, d_k) to (B, T, d), without moving the heads behind the positions."""
    B, _, T, _ = x.shape
    return x.reshape(B, T, self.n_heads * self.head_dim)


def merge_heads_interleaved(self, x: Tensor) -> Tensor:
    """The heads interleaved feature by feature (head i at i, i + h, ...) instead of side by side."""
    B, _, T, _ = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, self.n_heads * self.head_dim)


def merge_heads_by_cat(self, x: Tensor) -> Tensor:
    """Concat(head_1, ..., head_h) with torch.cat over the heads, one (B, T, d_k) tensor each."""
    return torch.cat([x[:, i] for i in range(self.n_heads)], dim=-1)


# ---- feed-forward ---------------------------------------------------------------------------------------------------
def ffn_tanh_gelu(self, x: Tensor) -> Tensor:
    """The tanh approximation of GELU (GPT-2's) instead of the exact z Phi(z)."""
    return self.W_2(F.gelu(self.W_1(x), approximate="tanh"))


def ffn_relu(self, x: Tensor) -> Tensor:
    """ReLU instead of GELU."""
    return self.W_2(torch.relu(self.W_1(x)))


def ffn_gelu_after_w_2(self, x: Tensor) -> Tensor:
    """GELU applied after W_2 instead of between the two linear maps."""
    return F.gelu(self.W_2(self.W_1(x)))


def ffn_by_erf(self, x: Tensor) -> Tensor:
    """GELU written out as z/2 (1 + erf(z / sqrt(2))), the linear maps as matrix products."""
    z = x @ self.W_1.weight.T + self.W_1.bias
    return (z / 2 * (1 + torch.erf(z / math.sqrt(2)))) @ self.W_2.weight.T + self.W_2.bias


# ---- KV cache -------------------------------------------------------------------------------------------------------
def append_new_before_cached(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """[k; K_cached] instead of [K_cached; k]: the new keys put in front, out of line with the key mask."""
    if self.k is not None and self.v is not None:
        k = torch.cat([k, self.k], dim=2)
        v = torch.cat([v, self.v], dim=2)
    self.k, self.v = k, v
    return k, v


def append_keeping_only_the_last_step(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """[K_cached; k] returned, but only the new k stored: the next step has lost every earlier key."""
    stored_k, stored_v = k, v
    if self.k is not None and self.v is not None:
        k = torch.cat([self.k, k], dim=2)
        v = torch.cat([self.v, v], dim=2)
    self.k, self.v = stored_k, stored_v
    return k, v


def append_returning_only_the_new_keys(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """[K_cached; k] stored, but the new keys returned alone: this step's queries see only this step."""
    new_k, new_v = k, v
    if self.k is not None and self.v is not None:
        k = torch.cat([self.k, k], dim=2)
        v = torch.cat([self.v, v], dim=2)
    self.k, self.v = k, v
    return new_k, new_v


def append_along_minus_two(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The positions axis counted from the end (dim -2), the empty cache skipped by a filter."""
    self.k = torch.cat([t for t in (self.k, k) if t is not None], dim=-2)
    self.v = torch.cat([t for t in (self.v, v) if t is not None], dim=-2)
    return self.k, self.v


# ---- soft prompt ----------------------------------------------------------------------------------------------------
def embed_prompt_after_tokens(self, base, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """[E[x]; P] instead of [P; E[x]]: the prompt put after the tokens (and after the padding)."""
    P = self.soft_prompt()
    embeds = base.tok_emb(input_ids)
    if P is None:
        return embeds, mask
    B, n = embeds.size(0), P.size(0)
    ones = torch.ones(B, n, dtype=torch.bool, device=mask.device)
    return torch.cat([embeds, P.expand(B, n, -1).to(embeds.dtype)], dim=1), torch.cat([mask, ones], dim=1)


def embed_prompt_as_padding(self, base, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The prompt's mask is zeros: the virtual tokens are treated as padding, no token attends to them."""
    P = self.soft_prompt()
    embeds = base.tok_emb(input_ids)
    if P is None:
        return embeds, mask
    B, n = embeds.size(0), P.size(0)
    zeros = torch.zeros(B, n, dtype=torch.bool, device=mask.device)
    return torch.cat([P.expand(B, n, -1).to(embeds.dtype), embeds], dim=1), torch.cat([zeros, mask], dim=1)


def embed_mask_after_tokens(self, base, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """[P; E[x]] but the mask [m; 1]: the prompt's ones appended after the tokens' mask, out of line."""
    P = self.soft_prompt()
    embeds = base.tok_emb(input_ids)
    if P is None:
        return embeds, mask
    B, n = embeds.size(0), P.size(0)
    ones = torch.ones(B, n, dtype=torch.bool, device=mask.device)
    return torch.cat([P.expand(B, n, -1).to(embeds.dtype), embeds], dim=1), torch.cat([mask, ones], dim=1)


def embed_by_new_tensors(self, base, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """[P; E[x]] written into fresh tensors: rows 0..n-1 the prompt (mask 1), the tokens and their mask after it."""
    P = self.soft_prompt()
    embeds = base.tok_emb(input_ids)
    if P is None:
        return embeds, mask
    (B, T, d), n = embeds.shape, P.size(0)
    out = embeds.new_empty(B, n + T, d)
    out[:, :n] = P.to(embeds.dtype)
    out[:, n:] = embeds
    full = mask.new_ones(B, n + T)
    full[:, n:] = mask
    return out, full


# ---- prefix MLP -----------------------------------------------------------------------------------------------------
def prefix_mlp_without_permute(self) -> Tensor:
    """The rows (n, 2 L d) viewed straight as (L, 2, n, d), without moving the positions: layers and positions mixed."""
    rows = self.W_2(torch.tanh(self.W_1(self.P_prime)))
    return rows.reshape(self.shape[0], 2, -1, self.shape[2])


def prefix_mlp_relu(self) -> Tensor:
    """ReLU instead of tanh between W_1 and W_2."""
    rows = self.W_2(torch.relu(self.W_1(self.P_prime)))
    return rows.view(-1, *self.shape).permute(1, 2, 0, 3)


def prefix_mlp_keys_and_values_swapped(self) -> Tensor:
    """Each layer's d-blocks read as (values, keys) instead of (keys, values): P_k and P_v swapped."""
    rows = self.W_2(torch.tanh(self.W_1(self.P_prime)))
    return rows.view(-1, *self.shape).permute(1, 2, 0, 3).flip(1)


def prefix_mlp_by_loops(self) -> Tensor:
    """out[l, c, i] = row i of MLP(P'), its (2 l + c)-th block of d numbers, filled by loops."""
    L, _, d = self.shape
    rows = self.W_2(torch.tanh(self.W_1(self.P_prime)))
    return torch.stack(
        [torch.stack([rows[:, (2 * layer + c) * d : (2 * layer + c + 1) * d] for c in range(2)]) for layer in range(L)]
    )


# ---- BitFit ---------------------------------------------------------------------------------------------------------
def bitfit_gains_instead_of_shifts(self, base) -> None:
    """The LayerNorm gains gamma train instead of the shifts beta."""
    from minilm.model.layers import LayerNorm

    base.requires_grad_(False)
    for module in base.modules():
        if isinstance(module, LayerNorm):
            module.gamma.requires_grad_(True)
        elif getattr(module, "bias", None) is not None:
            module.bias.requires_grad_(True)


def bitfit_linear_biases_only(self, base) -> None:
    """Only the linear layers' biases b train: the LayerNorm shifts beta are forgotten."""
    base.requires_grad_(False)
    for module in base.modules():
        if getattr(module, "bias", None) is not None:
            module.bias.requires_grad_(True)


def bitfit_base_not_frozen(self, base) -> None:
    """The biases switched on, but the base never frozen first: every weight still trains."""
    from minilm.model.layers import LayerNorm

    for module in base.modules():
        if isinstance(module, LayerNorm):
            module.beta.requires_grad_(True)
        elif getattr(module, "bias", None) is not None:
            module.bias.requires_grad_(True)


def bitfit_by_names(self, base) -> None:
    """Every parameter trains exactly when its name ends in .bias or .beta."""
    for name, p in base.named_parameters():
        p.requires_grad_(name.endswith((".bias", ".beta")))


# ---- a word's score -------------------------------------------------------------------------------------------------
def reads_without_shift(prompt, word: tuple[int, ...], causal: bool):
    """Causal: w_j scored at its own position slot + j (the sequence holds the whole word), not at slot - 1 + j."""
    if causal:
        return tuple(prompt.ids) + tuple(word), [(prompt.slot + j, t) for j, t in enumerate(word)]
    return tuple(prompt.ids), [(prompt.slot + j, t) for j, t in enumerate(word)]


def reads_every_token_after_the_prompt(prompt, word: tuple[int, ...], causal: bool):
    """Causal: every token of the word scored at the prompt's last position, without teacher forcing w_<j."""
    if causal:
        return tuple(prompt.ids), [(prompt.slot - 1, t) for t in word]
    return tuple(prompt.ids), [(prompt.slot + j, t) for j, t in enumerate(word)]


def reads_every_token_at_the_first_mask(prompt, word: tuple[int, ...], causal: bool):
    """Masked: every token of the word scored at the first [MASK] instead of its own."""
    if causal:
        return tuple(prompt.ids) + tuple(word[:-1]), [(prompt.slot - 1 + j, t) for j, t in enumerate(word)]
    masks = sum(1 for t in prompt.ids[prompt.slot :] if t == MASK_ID)
    if masks < len(word):
        raise ValueError(f"the prompt has {masks} [MASK] at its slot: render it with slot_tokens = the word's length")
    return tuple(prompt.ids), [(prompt.slot, t) for t in word]


def reads_by_loop(prompt, word: tuple[int, ...], causal: bool):
    """The reads built token by token; the masked prompt's [MASK] count checked first."""
    ids = list(prompt.ids)
    if not causal and sum(t == MASK_ID for t in ids[prompt.slot :]) < len(word):
        raise ValueError("too few [MASK] at the slot: render the prompt with slot_tokens = the word's length")
    reads = []
    for j, token in enumerate(word):
        if causal:
            reads.append((len(ids) - 1, token))
            if j < len(word) - 1:
                ids.append(token)
        else:
            reads.append((prompt.slot + j, token))
    return tuple(ids), reads


# ---- contextual calibration -----------------------------------------------------------------------------------------
def calibrate_without_renormalising(scores: Tensor, content_free_scores: Tensor) -> Tensor:
    """log p(y | x) - log p(y | "N/A") returned as it is: the calibrated probabilities do not sum to 1."""
    return torch.log_softmax(scores, dim=-1) - torch.log_softmax(content_free_scores, dim=-1)


def calibrate_multiplying(scores: Tensor, content_free_scores: Tensor) -> Tensor:
    """p(y | x) multiplied by p(y | "N/A") instead of divided: the prior is reinforced, not removed."""
    return torch.log_softmax(torch.log_softmax(scores, dim=-1) + torch.log_softmax(content_free_scores, dim=-1), dim=-1)


def calibrate_over_the_examples(scores: Tensor, content_free_scores: Tensor) -> Tensor:
    """The softmax taken over the examples (dim 0) instead of the labels."""
    return torch.log_softmax(torch.log_softmax(scores, dim=0) - torch.log_softmax(content_free_scores, dim=0), dim=0)


def calibrate_in_probabilities(scores: Tensor, content_free_scores: Tensor) -> Tensor:
    """p(y | x) / p(y | "N/A") in probabilities, in float64, divided by its sum, then the log."""
    ratio = torch.softmax(scores.double(), dim=-1) / torch.softmax(content_free_scores.double(), dim=-1)
    return torch.log(ratio / ratio.sum(dim=-1, keepdim=True)).to(scores.dtype)


# ---- prompt search: the first-order candidates ---------------------------------------------------------------------
def candidates_sign_flipped(E: Tensor, g: Tensor, k: int) -> Tensor:
    """The largest +e_w . g: the tokens the first-order estimate says raise the loss most."""
    scores = E @ g
    scores[:NUM_SPECIAL_TOKENS] = float("-inf")
    return scores.topk(min(k, E.size(0) - NUM_SPECIAL_TOKENS)).indices


def candidates_with_special_tokens(E: Tensor, g: Tensor, k: int) -> Tensor:
    """The special tokens ([PAD], [MASK], ...) left among the candidates."""
    return (-(E @ g)).topk(min(k, E.size(0))).indices


def candidates_by_cosine(E: Tensor, g: Tensor, k: int) -> Tensor:
    """The cosine -e_w . g / |e_w| instead of the dot product: the estimate of the loss change needs e_w's length."""
    scores = -(E @ g) / E.norm(dim=-1)
    scores[:NUM_SPECIAL_TOKENS] = float("-inf")
    return scores.topk(min(k, E.size(0) - NUM_SPECIAL_TOKENS)).indices


def candidates_by_sorting(E: Tensor, g: Tensor, k: int) -> Tensor:
    """Every token's first-order estimate e_w . g sorted from the lowest, the special tokens then filtered out."""
    order = torch.argsort(E @ g)
    return order[order >= NUM_SPECIAL_TOKENS][:k]


# ---- online softmax -------------------------------------------------------------------------------------------------
def online_softmax_terms(q: Tensor, k: Tensor, mask: Tensor | None, start: int, block: int) -> Tensor:
    S = q @ k[..., start : start + block, :].transpose(-2, -1) / math.sqrt(q.size(-1))
    return S if mask is None else S.masked_fill(~mask[..., start : start + block], float("-inf"))


def online_softmax_without_rescaling_o(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, block: int = 16
) -> Tensor:
    """O' = O + e^{S_t - m'} V_t: the output summed so far is not rescaled by e^{m - m'} when the maximum grows."""
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype, device=q.device)
    l = torch.zeros_like(m)
    O = torch.zeros(*q.shape[:-1], v.size(-1), dtype=q.dtype, device=q.device)
    for start in range(0, k.size(-2), block):
        S = online_softmax_terms(q, k, mask, start, block)
        m_new = torch.maximum(m, S.amax(dim=-1, keepdim=True))
        m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
        P = torch.exp(S - m_safe)
        l = torch.exp(m - m_safe) * l + P.sum(dim=-1, keepdim=True)
        O = O + P @ v[..., start : start + block, :]
        m = m_new
    return O / torch.where(l > 0, l, torch.ones_like(l))


def online_softmax_without_rescaling_l(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, block: int = 16
) -> Tensor:
    """l' = l + rowsum(e^{S_t - m'}): the normaliser summed so far is not rescaled by e^{m - m'}."""
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype, device=q.device)
    l = torch.zeros_like(m)
    O = torch.zeros(*q.shape[:-1], v.size(-1), dtype=q.dtype, device=q.device)
    for start in range(0, k.size(-2), block):
        S = online_softmax_terms(q, k, mask, start, block)
        m_new = torch.maximum(m, S.amax(dim=-1, keepdim=True))
        m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
        P = torch.exp(S - m_safe)
        l = l + P.sum(dim=-1, keepdim=True)
        O = torch.exp(m - m_safe) * O + P @ v[..., start : start + block, :]
        m = m_new
    return O / torch.where(l > 0, l, torch.ones_like(l))


def online_softmax_nan_before_the_first_key(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, block: int = 16
) -> Tensor:
    """m' used as it is while still -inf: a row that has seen only hidden keys computes e^{-inf - (-inf)} = NaN."""
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype, device=q.device)
    l = torch.zeros_like(m)
    O = torch.zeros(*q.shape[:-1], v.size(-1), dtype=q.dtype, device=q.device)
    for start in range(0, k.size(-2), block):
        S = online_softmax_terms(q, k, mask, start, block)
        m_new = torch.maximum(m, S.amax(dim=-1, keepdim=True))
        P = torch.exp(S - m_new)
        l = torch.exp(m - m_new) * l + P.sum(dim=-1, keepdim=True)
        O = torch.exp(m - m_new) * O + P @ v[..., start : start + block, :]
        m = m_new
    return O / torch.where(l > 0, l, torch.ones_like(l))


def online_softmax_in_base_2(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, block: int = 16) -> Tensor:
    """The kernel's form: scores times log2(e) / sqrt(d_k), exp2 everywhere, a -inf maximum replaced by 0."""
    scale = math.log2(math.e) / math.sqrt(q.size(-1))
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype, device=q.device)
    l = torch.zeros_like(m)
    O = torch.zeros(*q.shape[:-1], v.size(-1), dtype=q.dtype, device=q.device)
    for start in range(0, k.size(-2), block):
        S = q @ k[..., start : start + block, :].transpose(-2, -1) * scale
        if mask is not None:
            S = S.masked_fill(~mask[..., start : start + block], float("-inf"))
        m_new = torch.maximum(m, S.amax(dim=-1, keepdim=True))
        m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        P = torch.exp2(S - m_safe)
        rescale = torch.exp2(m - m_safe)
        l, O, m = rescale * l + P.sum(dim=-1, keepdim=True), rescale * O + P @ v[..., start : start + block, :], m_new
    return torch.where(l > 0, O / l.clamp(min=torch.finfo(l.dtype).tiny), torch.zeros_like(O))


EXERCISES = (
    Exercise(
        id="split-heads",
        target="minilm.model.attention:MultiHeadAttention.split_heads",
        docs="docs/attention.md#multi-head-attention",
        tests=(
            f"{ATTENTION}::test_multi_head_attention_is_concat_of_heads_times_W_o",
            f"{MODEL}::test_kv_cache_chunks_give_the_same_logits_as_one_pass[pad-prefix-math]",
        ),
        hints=(
            "x W_Q holds all h heads side by side: head i is the columns i*d_k .. (i+1)*d_k - 1 of the last dimension.",
            "x.view(B, T, h, d_k) cuts the last dimension into h blocks of d_k; the heads then sit at dim 2.",
            "Move the heads in front of the positions with transpose(1, 2): (B, h, T, d_k).",
        ),
        mutants=(split_heads_without_transpose, split_heads_interleaved),
        alternatives=(split_heads_by_slices,),
    ),
    Exercise(
        id="merge-heads",
        target="minilm.model.attention:MultiHeadAttention.merge_heads",
        docs="docs/attention.md#multi-head-attention",
        tests=(
            f"{ATTENTION}::test_multi_head_attention_is_concat_of_heads_times_W_o",
            f"{MODEL}::test_kv_cache_chunks_give_the_same_logits_as_one_pass[pad-prefix-math]",
        ),
        hints=(
            "merge_heads undoes split_heads: (B, h, T, d_k) back to (B, T, d) with head i in columns i*d_k ..",
            "transpose(1, 2) first, giving (B, T, h, d_k), then reshape to (B, T, h * d_k).",
            "After a transpose the tensor is not contiguous: use reshape (or .contiguous().view).",
        ),
        mutants=(merge_heads_without_transpose, merge_heads_interleaved),
        alternatives=(merge_heads_by_cat,),
    ),
    Exercise(
        id="feed-forward",
        target="minilm.model.layers:FeedForward.forward",
        docs="docs/transformer.md#feed-forward-network",
        tests=(
            f"{MODEL}::test_feed_forward_is_gelu_between_two_linear_maps",
            f"{MODEL}::test_feed_forward_uses_the_exact_erf_gelu_not_the_tanh_approximation",
            f"{MODEL}::test_padded_batch_equals_each_sequence_alone",
        ),
        hints=(
            "self.W_1 maps d to d_ff and self.W_2 maps d_ff back to d; GELU goes between them.",
            "GELU(z) = z Phi(z) = z/2 (1 + erf(z / sqrt(2))): F.gelu computes exactly this by default.",
            "F.gelu(z, approximate='tanh') is GPT-2's approximation, off by up to ~1e-3: not this equation.",
        ),
        mutants=(ffn_tanh_gelu, ffn_relu, ffn_gelu_after_w_2),
        alternatives=(ffn_by_erf,),
    ),
    Exercise(
        id="kv-cache",
        target="minilm.model.kv_cache:LayerCache.append",
        docs="docs/transformer.md#the-kv-cache",
        tests=(
            f"{MODEL}::test_kv_cache_chunks_give_the_same_logits_as_one_pass[pad-prefix-math]",
            "tests/test_generate.py::test_kv_cache_decoding_gives_the_same_logits_as_recomputing[math]",
        ),
        hints=(
            "k and v are (B, h, T_new, d_k); the positions are dimension 2.",
            "The first call finds an empty cache (self.k is None): then the cache is just k and v.",
            "Store [K_cached; k] and [V_cached; v] back in self.k, self.v, and return them: old keys first.",
        ),
        mutants=(append_new_before_cached, append_keeping_only_the_last_step, append_returning_only_the_new_keys),
        alternatives=(append_along_minus_two,),
    ),
    Exercise(
        id="soft-prompt",
        target="minilm.tuning.methods.base:TuningMethod.embed",
        docs="docs/tuning.md#prompt-tuning-lester-et-al-2021",
        tests=(
            f"{PATHS}::test_a_soft_prompt_is_put_before_the_token_embeddings_with_a_mask_of_ones",
            f"{PATHS}::test_a_padded_row_with_a_prefix_or_soft_prompt_equals_the_row_alone[prompt-causal]",
        ),
        hints=(
            "self.soft_prompt() is P (n, d), or None for a method without one: then return E[x] and the mask as is.",
            "E[x] is base.tok_emb(input_ids), (B, T, d); P goes in front of every row: expand it to (B, n, d).",
            "The virtual tokens are never padding: the mask gets n ones (True) in front of the tokens' mask.",
        ),
        mutants=(embed_prompt_after_tokens, embed_prompt_as_padding, embed_mask_after_tokens),
        alternatives=(embed_by_new_tensors,),
    ),
    Exercise(
        id="prefix-mlp",
        target="minilm.tuning.methods.prefix:PrefixMLP.forward",
        docs="docs/tuning.md#prefix-tuning-li--liang-2021",
        tests=(
            f"{PATHS}::test_prefix_mlp_row_i_is_position_i_of_every_layer_s_keys_and_values",
            f"{PATHS}::test_folding_the_reparameterization_does_not_change_outputs[prefix]",
        ),
        hints=(
            "One row of P' (n, d') gives one position of all 2 L prefixes: W_2 tanh(W_1 P' + b_1) + b_2 is (n, L 2 d).",
            "Row i is [P_k^1_i, P_v^1_i, ..., P_k^L_i, P_v^L_i], each d numbers: view it as (n, L, 2, d).",
            "Then move the positions behind the layer and key/value axes: permute to (L, 2, n, d).",
        ),
        mutants=(prefix_mlp_without_permute, prefix_mlp_relu, prefix_mlp_keys_and_values_swapped),
        alternatives=(prefix_mlp_by_loops,),
    ),
    Exercise(
        id="bitfit",
        target="minilm.tuning.methods.bitfit:BitFit.setup",
        docs="docs/tuning.md#bitfit-ben-zaken-et-al-2022",
        tests=(
            f"{PATHS}::test_bitfit_trains_exactly_the_linear_biases_and_the_layernorm_shifts",
            "tests/test_tuning.py::test_trainable_counts_match_the_closed_forms",
        ),
        hints=(
            "Freeze the whole base first: base.requires_grad_(False).",
            "Then switch on every linear layer's bias (module.bias) and every LayerNorm's shift beta.",
            "The LayerNorm gains gamma are weights, not biases: they stay frozen.",
        ),
        mutants=(bitfit_gains_instead_of_shifts, bitfit_linear_biases_only, bitfit_base_not_frozen),
        alternatives=(bitfit_by_names,),
    ),
    Exercise(
        id="verbalizer",
        target="minilm.prompting.verbalizer:word_reads",
        docs="docs/prompting.md#verbalizer-scores",
        tests=(
            f"{PROMPTING}::test_causal_word_scores_equal_the_summed_log_probabilities_of_their_tokens",
            f"{PROMPTING}::test_masked_word_scores_read_each_token_at_its_own_mask",
            f"{PROMPTING}::test_a_masked_prompt_without_enough_masks_is_an_error",
        ),
        hints=(
            "Causal: the logits at position t predict token t + 1, so w_1 is read at slot - 1 (the last prompt token).",
            "Causal: feed w_1 .. w_{k-1} after the prompt (teacher forcing): w_{j+1} is read at slot - 1 + j.",
            "Masked: the k [MASK] sit at slot .. slot + k - 1 and each predicts its own; too few is a ValueError.",
        ),
        mutants=(reads_without_shift, reads_every_token_after_the_prompt, reads_every_token_at_the_first_mask),
        alternatives=(reads_by_loop,),
    ),
    Exercise(
        id="calibration",
        target="minilm.prompting.calibration:calibrate",
        docs="docs/prompting.md#contextual-calibration-zhao-et-al-2021",
        tests=(f"{PROMPTING}::test_calibration_makes_the_content_free_input_uniform",),
        hints=(
            "Turn both score rows into log-probabilities over the labels: log_softmax over the last dimension.",
            "Dividing by p(y | 'N/A') is subtracting its log-probability.",
            "The result must be a distribution again: renormalise with one more log_softmax.",
        ),
        mutants=(calibrate_without_renormalising, calibrate_multiplying, calibrate_over_the_examples),
        alternatives=(calibrate_in_probabilities,),
    ),
    Exercise(
        id="prompt-candidates",
        target="minilm.tuning.prompt_search:top_candidates",
        docs="docs/prompting.md#automatic-prompt-search-autoprompt",
        tests=(
            f"{SEARCH}::test_candidates_are_the_top_k_of_minus_E_g_and_never_a_special_token",
            f"{SEARCH}::test_the_first_order_ranking_equals_a_hand_computation_through_inputs_embeds[causal]",
            f"{SEARCH}::test_the_first_order_ranking_equals_a_hand_computation_through_inputs_embeds[masked]",
        ),
        hints=(
            "L(w) - L(t) ~ (e_w - e_t) . g, and e_t . g is the same for every w: rank the tokens by -(E g)_w.",
            "E g is one matrix-vector product, (V, d) @ (d,) -> (V,); the best candidates have the largest -E g.",
            "The ids below NUM_SPECIAL_TOKENS are [PAD], [MASK], ...: give them -inf before taking topk(k).",
        ),
        mutants=(candidates_sign_flipped, candidates_with_special_tokens, candidates_by_cosine),
        alternatives=(candidates_by_sorting,),
        imports="\nfrom minilm.tokenizer import NUM_SPECIAL_TOKENS\n",
    ),
    Exercise(
        id="online-softmax",
        target="minilm.model.kernels.online_softmax:online_softmax_attention",
        docs="docs/kernels.md#the-recurrence-in-plain-pytorch",
        tests=(
            f"{ONLINE}::test_online_softmax_equals_attention_in_float64_for_every_tile_size",
            f"{ONLINE}::test_online_softmax_with_a_causal_diagonal_shifted_by_extra_keys_and_padding_equals_attention",
            f"{ONLINE}::test_a_query_that_sees_no_key_gets_zeros_and_the_others_are_unchanged",
        ),
        hints=(
            "Keep per query m = -inf, l = 0 and O = 0; loop over the keys `block` at a time.",
            "For a tile: S = q @ k_t^T / sqrt(d_k) with masked entries -inf; m' = max(m, S.amax(-1)).",
            "Everything summed so far was relative to m: multiply both l and O by e^{m - m'} before adding the tile.",
            "While m' is still -inf (no visible key yet) use 0 in its place; at the end O / l, and 0 where l = 0.",
        ),
        mutants=(
            online_softmax_without_rescaling_o,
            online_softmax_without_rescaling_l,
            online_softmax_nan_before_the_first_key,
        ),
        alternatives=(online_softmax_in_base_2,),
    ),
)
