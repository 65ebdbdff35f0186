"""Exercises of the model layer: attention, its mask, layer norm, top-k and top-p.

Each mutant is a typical mistake (its docstring's first line says which); each alternative is a correct solution
written differently from the library's. tests/test_exercises.py checks that the tests reject every mutant and pass
the reference and every alternative.

Docs: docs/course.md (the exercises).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minilm.exercises.exercise import Exercise

ATTENTION = "tests/test_attention.py"


# ---- attention ------------------------------------------------------------------------------------------------------
def attention_over_d_k(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0) -> Tensor:
    """Scores divided by d_k instead of sqrt(d_k)."""
    scores = q @ k.transpose(-2, -1) / q.size(-1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0) @ v


def attention_without_max_subtraction(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0
) -> Tensor:
    """softmax as exp(s) / sum exp(s), without subtracting the row's maximum: large scores overflow to inf / inf."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    e = scores.exp() if mask is None else scores.exp().masked_fill(~mask, 0.0)
    total = e.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, e / total, torch.zeros_like(e)) @ v


def attention_nan_on_empty_rows(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0
) -> Tensor:
    """A query with no visible key: softmax of all -inf is NaN, left as it is."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def attention_by_einsum(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0) -> Tensor:
    """Attention written with einsum and an explicit max subtraction."""
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    top = scores.amax(dim=-1, keepdim=True).clamp(min=-1e30).nan_to_num(0.0, neginf=0.0)
    e = (scores - top).exp()
    total = e.sum(dim=-1, keepdim=True)
    probs = torch.where(total > 0, e / total.clamp(min=1e-30), torch.zeros_like(e))
    if dropout_p > 0.0:
        probs = torch.nn.functional.dropout(probs, p=dropout_p)
    return torch.einsum("bhij,bhjd->bhid", probs, v)


# ---- attention mask -------------------------------------------------------------------------------------------------
def mask_top_left(n_queries: int, n_keys: int, causal: bool, key_mask: Tensor | None, device: torch.device):
    """The causal diagonal at the top-left corner (j <= i): with a prefix or a KV cache, queries miss earlier keys."""
    allowed = None
    if causal:
        i = torch.arange(n_queries, device=device)[:, None]
        j = torch.arange(n_keys, device=device)[None, :]
        allowed = (j <= i)[None, None]
    if key_mask is not None:
        visible = key_mask[:, None, None, :]
        allowed = visible if allowed is None else allowed & visible
    return allowed


def mask_ignoring_padding(n_queries: int, n_keys: int, causal: bool, key_mask: Tensor | None, device: torch.device):
    """The key mask (padding) left out: padded keys are attended."""
    if not causal:
        return None
    i = torch.arange(n_queries, device=device)[:, None]
    j = torch.arange(n_keys, device=device)[None, :]
    return (j <= i + (n_keys - n_queries))[None, None]


def mask_strictly_before(n_queries: int, n_keys: int, causal: bool, key_mask: Tensor | None, device: torch.device):
    """j < i instead of j <= i: a token cannot see itself (and the first sees nothing)."""
    allowed = None
    if causal:
        i = torch.arange(n_queries, device=device)[:, None]
        j = torch.arange(n_keys, device=device)[None, :]
        allowed = (j < i + (n_keys - n_queries))[None, None]
    if key_mask is not None:
        visible = key_mask[:, None, None, :]
        allowed = visible if allowed is None else allowed & visible
    return allowed


def mask_by_loops(n_queries: int, n_keys: int, causal: bool, key_mask: Tensor | None, device: torch.device):
    """The mask built entry by entry with Python loops."""
    B = 1 if key_mask is None else key_mask.size(0)
    allowed = torch.zeros(B, 1, n_queries, n_keys, dtype=torch.bool, device=device)
    for b in range(B):
        for i in range(n_queries):
            for j in range(n_keys):
                real = True if key_mask is None else bool(key_mask[b, j])
                allowed[b, 0, i, j] = real and (not causal or j <= i + n_keys - n_queries)
    return allowed


# ---- layer norm -----------------------------------------------------------------------------------------------------
def layer_norm_unbiased(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """The unbiased variance (divided by d - 1) instead of the mean of the squared deviations."""
    mu = x.mean(dim=-1, keepdim=True)
    return gamma * (x - mu) / torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=True) + eps) + beta


def layer_norm_eps_outside(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """eps added to the standard deviation instead of the variance: (x - mu) / (sigma + eps)."""
    mu = x.mean(dim=-1, keepdim=True)
    sigma = (x - mu).pow(2).mean(dim=-1, keepdim=True).sqrt()
    return gamma * (x - mu) / (sigma + eps) + beta


def layer_norm_over_batch(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """Statistics over the positions (dim 1, as a batch norm of a sequence) instead of the d features."""
    mu = x.mean(dim=1, keepdim=True)
    var = (x - mu).pow(2).mean(dim=1, keepdim=True)
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


def layer_norm_by_rsqrt(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """Layer norm from E[x^2] - E[x]^2 in float64, with rsqrt."""
    x64 = x.double()
    mu = x64.mean(dim=-1, keepdim=True)
    var = (x64 * x64).mean(dim=-1, keepdim=True) - mu * mu
    return (gamma * ((x64 - mu) * torch.rsqrt(var + eps)).to(x.dtype)) + beta


def layer_norm_module(layer_norm):
    """LayerNorm.forward routed through a layer_norm function: how the learner's runs inside the model."""
    return lambda self, x: layer_norm(x, self.gamma, self.beta, self.eps)


# ---- top-k and top-p ------------------------------------------------------------------------------------------------
def top_k_with_ties(logits: Tensor, k: int) -> Tensor:
    """Keeps every logit >= the k-th largest: ties at the k-th value keep more than k tokens."""
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_off_by_one(logits: Tensor, k: int) -> Tensor:
    """Keeps the k - 1 largest (an off-by-one on the index of the k-th value)."""
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices[..., : max(k - 1, 1)]
    return torch.full_like(logits, float("-inf")).scatter(-1, order, logits.gather(-1, order))


def top_k_by_loop(logits: Tensor, k: int) -> Tensor:
    """Top-k row by row: repeatedly take the largest remaining logit (lowest id first among equals)."""
    out = torch.full_like(logits, float("-inf"))
    for row in range(logits.size(0)):
        remaining = logits[row].clone()
        for _ in range(min(k, logits.size(-1))):
            best = int(torch.nonzero(remaining == remaining.max())[0])
            out[row, best] = logits[row, best]
            remaining[best] = float("-inf")
    return out


def top_p_drops_the_crossing_token(logits: Tensor, p: float) -> Tensor:
    """Keeps only the tokens whose cumulative probability stays below p: the token that reaches p is dropped."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    mass = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = mass > p
    drop_sorted[..., 0] = False
    return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))


def top_p_on_logits(logits: Tensor, p: float) -> Tensor:
    """The nucleus computed on the logits' cumulative sum instead of the probabilities'."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    before = sorted_logits.cumsum(dim=-1) - sorted_logits
    drop_sorted = before >= p
    drop_sorted[..., 0] = False
    return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))


def top_p_by_loop(logits: Tensor, p: float) -> Tensor:
    """The nucleus row by row: add the most likely tokens until their probability reaches p."""
    out = torch.full_like(logits, float("-inf"))
    probs = torch.softmax(logits.double(), dim=-1)
    for row in range(logits.size(0)):
        total = 0.0
        for index in torch.argsort(probs[row], descending=True).tolist():
            out[row, index] = logits[row, index]
            total += float(probs[row, index])
            if total >= p:
                break
    return out


EXERCISES = (
    Exercise(
        id="attention",
        target="minilm.model.attention:scaled_dot_product_attention",
        docs="docs/attention.md#scaled-dot-product-attention",
        tests=(
            f"{ATTENTION}::test_scores_are_scaled_by_sqrt_of_head_dim",
            f"{ATTENTION}::test_identical_keys_give_the_mean_of_the_values",
            f"{ATTENTION}::test_masked_keys_get_exactly_zero_weight",
            f"{ATTENTION}::test_large_scores_give_the_float64_softmax_without_overflow",
            f"{ATTENTION}::test_query_with_nothing_to_attend_gives_zeros_not_nan[math]",
            f"{ATTENTION}::test_causal_attention_blocks_future_tokens[math]",
            f"{ATTENTION}::test_prefix_is_visible_to_every_query_while_tokens_stay_causal[math]",
            f"{ATTENTION}::test_math_and_sdpa_agree_forward_and_backward",
            "tests/test_generate.py::test_kv_cache_decoding_gives_the_same_logits_as_recomputing[math]",
            "tests/test_model.py::test_kv_cache_chunks_give_the_same_logits_as_one_pass[pad-prefix-math]",
            "tests/test_model.py::test_padded_batch_equals_each_sequence_alone[left-causal-math]",
        ),
        hints=(
            "scores = q @ k^T has shape (B, h, T_q, T_k); divide by sqrt(d_k), the size of q's last dimension.",
            "Where mask is False the score is -inf, so exp gives exactly 0: use scores.masked_fill(~mask, -inf).",
            "torch.softmax subtracts each row's maximum for you; a row that is all -inf gives NaN: set it to 0.",
            "The output is probs @ v; dropout (F.dropout) applies to probs, only when dropout_p > 0.",
        ),
        mutants=(attention_over_d_k, attention_without_max_subtraction, attention_nan_on_empty_rows),
        alternatives=(attention_by_einsum,),
    ),
    Exercise(
        id="attention-mask",
        target="minilm.model.masks:attention_mask",
        docs="docs/attention.md#the-mask-m-causal-padding-and-prefix",
        tests=(
            f"{ATTENTION}::test_causal_diagonal_is_shifted_by_the_extra_keys",
            f"{ATTENTION}::test_causal_attention_blocks_future_tokens[math]",
            f"{ATTENTION}::test_prefix_is_visible_to_every_query_while_tokens_stay_causal[math]",
            "tests/test_model.py::test_padded_batch_equals_each_sequence_alone[left-causal-sdpa]",
            "tests/test_model.py::test_padded_batch_equals_each_sequence_alone[right-bidirectional-math]",
            "tests/test_model.py::test_kv_cache_chunks_give_the_same_logits_as_one_pass[no-pad-no-prefix-sdpa]",
            "tests/test_model.py::test_kv_cache_chunks_give_the_same_logits_as_one_pass[pad-prefix-math]",
            "tests/test_generate.py::test_kv_cache_decoding_gives_the_same_logits_as_recomputing[sdpa]",
        ),
        hints=(
            "The queries are the last n_queries of the n_keys keys: query i sits at key i + (n_keys - n_queries).",
            "Causal: query i may see key j when j <= i + (n_keys - n_queries); build it from two aranges.",
            "key_mask (B, T_k) is True at real keys: broadcast it to (B, 1, 1, T_k) and AND it with the causal part.",
            "Return None when every query sees every key (not causal and no key_mask).",
        ),
        mutants=(mask_top_left, mask_ignoring_padding, mask_strictly_before),
        alternatives=(mask_by_loops,),
    ),
    Exercise(
        id="layer-norm",
        target="minilm.model.layers:layer_norm",
        docs="docs/transformer.md#layer-normalisation",
        tests=(
            "tests/test_model.py::test_layer_norm_matches_its_equation_and_torch",
            "tests/test_model.py::test_layer_norm_of_a_nearly_constant_vector_is_bounded_by_eps",
            "tests/test_model.py::test_padded_batch_equals_each_sequence_alone[left-causal-sdpa]",
        ),
        hints=(
            "mu and sigma^2 are the mean and the variance over the last dimension (the d features), keepdim=True.",
            "The variance is the mean of (x - mu)^2: divided by d, not d - 1.",
            "eps goes inside the square root: (x - mu) / sqrt(sigma^2 + eps), then times gamma plus beta.",
        ),
        mutants=(layer_norm_unbiased, layer_norm_eps_outside, layer_norm_over_batch),
        uses=(("minilm.model.layers:LayerNorm.forward", layer_norm_module),),
        alternatives=(layer_norm_by_rsqrt,),
    ),
    Exercise(
        id="top-k",
        target="minilm.model.sampling:top_k_filter",
        docs="docs/generation.md#top-k",
        tests=(
            "tests/test_generate.py::test_top_k_keeps_exactly_the_k_largest_logits",
            "tests/test_generate.py::test_top_k_keeps_exactly_k_tokens_when_logits_tie_breaking_ties_by_id",
            "tests/test_generate.py::test_sampling_never_draws_a_filtered_token",
        ),
        hints=(
            "Sort each row in descending order with a stable sort, so equal logits keep their id order.",
            "Keep the first k indices of that order; scatter their logits into a row of -inf.",
        ),
        mutants=(top_k_with_ties, top_k_off_by_one),
        alternatives=(top_k_by_loop,),
    ),
    Exercise(
        id="top-p",
        target="minilm.model.sampling:top_p_filter",
        docs="docs/generation.md#top-p-nucleus",
        tests=("tests/test_generate.py::test_top_p_keeps_the_smallest_set_reaching_p",),
        hints=(
            "Sort the logits in descending order and take the softmax of the sorted row.",
            "The mass before token r is cumsum - p_r: drop a token when the tokens before it already reach p.",
            "The most likely token is never dropped; scatter the decision back to the original order.",
        ),
        mutants=(top_p_drops_the_crossing_token, top_p_on_logits),
        alternatives=(top_p_by_loop,),
    ),
)
