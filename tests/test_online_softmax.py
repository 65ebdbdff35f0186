"""The online softmax in plain PyTorch: tile by tile it gives exactly softmax(Q K^T / sqrt(d_k) + M) V (float64,
every tile size), with a causal diagonal shifted by extra keys, with padding, and with zeros for a query that sees
no key."""

from __future__ import annotations

import pytest
import torch

from minilm.model.attention import scaled_dot_product_attention
from minilm.model.kernels.online_softmax import online_softmax_attention
from minilm.model.masks import attention_mask

TOLERANCE = {"rtol": 1e-12, "atol": 1e-12}  # float64: only the order of the additions differs


def random_qkv(B=2, h=2, T_q=11, T_k=11, d_k=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, h, T_q, d_k, generator=g, dtype=torch.float64)
    k = torch.randn(B, h, T_k, d_k, generator=g, dtype=torch.float64)
    v = torch.randn(B, h, T_k, d_k, generator=g, dtype=torch.float64)
    return q, k, v


@pytest.mark.parametrize("block", [1, 3, 4, 16])
def test_online_softmax_equals_attention_in_float64_for_every_tile_size(block):
    """Scores spread over several units (q scaled by 3) so the running maximum changes from tile to tile."""
    q, k, v = random_qkv(T_q=7, T_k=13)
    q = 3 * q
    expected = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(online_softmax_attention(q, k, v, block=block), expected, **TOLERANCE)


@pytest.mark.parametrize("block", [2, 5])
def test_online_softmax_with_a_causal_diagonal_shifted_by_extra_keys_and_padding_equals_attention(block):
    """Queries are the last 6 of 10 keys (4 extra: a prefix or a KV cache); row 1 has 3 padded keys on the left."""
    q, k, v = random_qkv(T_q=6, T_k=10, seed=1)
    key_mask = torch.ones(2, 10, dtype=torch.bool)
    key_mask[1, :3] = False
    mask = attention_mask(6, 10, True, key_mask, q.device)
    expected = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(online_softmax_attention(q, k, v, mask, block=block), expected, **TOLERANCE)


@pytest.mark.parametrize("block", [2, 4])
def test_a_query_that_sees_no_key_gets_zeros_and_the_others_are_unchanged(block):
    """Row 1 sees no key at all; in row 0 the first tiles are hidden, so the running maximum starts at -inf."""
    q, k, v = random_qkv(T_q=5, T_k=9, seed=2)
    key_mask = torch.ones(2, 9, dtype=torch.bool)
    key_mask[0, :5] = False
    key_mask[1] = False
    mask = attention_mask(5, 9, False, key_mask, q.device)
    out = online_softmax_attention(q, k, v, mask, block=block)
    assert torch.equal(out[1], torch.zeros_like(out[1])), "a query with no visible key must give 0, not NaN"
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, mask), **TOLERANCE)
