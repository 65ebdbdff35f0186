"""Sampling the next token: temperature, greedy decoding, top-k and top-p (nucleus) filtering.

    p(x_{t+1} = w | x_{<=t}) = softmax(z / tau)_w        z = logits at the last position, tau = temperature

Greedy decoding (tau = 0) takes argmax_w z_w. Top-k keeps the k largest logits; top-p (nucleus)
keeps the smallest set of tokens whose probabilities sum to at least p; the rest get probability 0. Tokens a
constraint forbids (`allowed`, e.g. minilm.model.utf8) get z_w = -inf first, so greedy and every filter obey it.

Docs: docs/generation.md.
"""

from __future__ import annotations

import torch
from torch import Tensor


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep exactly the k largest logits of each row, set the others to -inf.

    Ties are broken by index: among logits equal to the k-th largest, the lower token ids are kept, so a row never
    keeps more than k tokens.
    """
    k = min(k, logits.size(-1))
    kept = torch.sort(logits, dim=-1, descending=True, stable=True).indices[
        ..., :k
    ]  # stable: equal logits keep id order
    return torch.full_like(logits, float("-inf")).scatter(-1, kept, logits.gather(-1, kept))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus: keep the smallest set S of tokens, most likely first, with sum_{w in S} softmax(z)_w >= p."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the more likely tokens
    drop_sorted = mass_before >= p  # the set already reached p without this token (never drops the top one)
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
    allowed: Tensor | None = None,
) -> Tensor:
    """Draw x_{t+1} ~ softmax(filter(z / tau)) for each row of logits (B, V); tau = 0 is greedy argmax.

    `allowed` (B, V) bool: where False, z_w = -inf before anything else. Where it is all True the logits, and so the
    draws, are bitwise what they are without it.
    """
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
