"""Attention: the math reference, the fused path checked against it, and the masks (causal, padding, prefix)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from minilm.model.attention import (
    BACKENDS,
    MultiHeadAttention,
    attention,
    resolve_backend,
    scaled_dot_product_attention,
)
from minilm.model.masks import attention_mask


def random_qkv(B=2, h=3, T_q=7, T_k=7, d_k=16, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, h, T_q, d_k, generator=g)
    k = torch.randn(B, h, T_k, d_k, generator=g)
    v = torch.randn(B, h, T_k, d_k, generator=g)
    return tuple(t.requires_grad_(requires_grad) for t in (q, k, v))


def padding_key_mask(B, T_k, n_pad):
    """Row b has its last b * n_pad keys padded (row 0 none)."""
    mask = torch.ones(B, T_k, dtype=torch.bool)
    for b in range(B):
        if b * n_pad:
            mask[b, T_k - b * n_pad :] = False
    return mask


def brute_force_allowed(T_q, T_k, causal, key_mask):
    """Which keys each query may see, by the definition, one pair at a time."""
    B = key_mask.size(0) if key_mask is not None else 1
    allowed = torch.zeros(B, 1, T_q, T_k, dtype=torch.bool)
    offset = T_k - T_q  # the keys before the queries: prefix and/or cache
    for b in range(B):
        for i in range(T_q):
            for j in range(T_k):
                visible = key_mask is None or bool(key_mask[b, j])
                allowed[b, 0, i, j] = visible and (not causal or j <= i + offset)
    return allowed


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("padding", [False, True], ids=["no-pad", "pad"])
@pytest.mark.parametrize("extra_keys", [0, 3], ids=["P=0", "P=3"])
def test_math_and_sdpa_agree_forward_and_backward(causal, padding, extra_keys, device):
    """The fused path equals the reference: outputs and the gradients of q, k, v (which include the prefix's)."""
    T = 6
    q, k, v = (t.to(device).requires_grad_(True) for t in random_qkv(T_q=T, T_k=T + extra_keys))
    key_mask = padding_key_mask(2, T + extra_keys, n_pad=2).to(device) if padding else None
    g_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(device)
    results = {}
    for backend in ("math", "sdpa"):
        out = attention(q, k, v, causal, key_mask, 0.0, backend)
        grads = torch.autograd.grad(out, (q, k, v), g_out)
        results[backend] = (out, *grads)
    for name, ref, fast in zip(("out", "dq", "dk", "dv"), results["math"], results["sdpa"]):
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5, msg=f"{name} differs")


def test_causal_diagonal_is_shifted_by_the_extra_keys():
    """Queries are the last T_q keys: with P extra keys, query i sees keys j <= i + P (not j <= i)."""
    for T_q, T_k in [(5, 5), (4, 7), (1, 6)]:
        key_mask = padding_key_mask(2, T_k, n_pad=1)
        for causal in (True, False):
            for mask in (key_mask, None):
                built = attention_mask(T_q, T_k, causal, mask, torch.device("cpu"))
                expected = brute_force_allowed(T_q, T_k, causal, mask)
                if built is None:
                    assert expected.all()
                else:
                    assert torch.equal(built.expand_as(expected), expected)


def test_sdpa_with_extra_keys_does_not_use_the_top_left_causal_diagonal():
    """PyTorch's is_causal=True would hide prefix/cached keys from early queries; ours must not."""
    q, k, v = random_qkv(T_q=3, T_k=5)
    ours = attention(q, k, v, True, None, 0.0, "sdpa")
    top_left = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    reference = scaled_dot_product_attention(q, k, v, brute_force_allowed(3, 5, True, None))
    torch.testing.assert_close(ours, reference)
    assert not torch.allclose(ours, top_left)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_query_with_nothing_to_attend_gives_zeros_not_nan(backend):
    q, k, v = random_qkv(B=2, T_q=4, T_k=4, requires_grad=True)
    key_mask = torch.ones(2, 4, dtype=torch.bool)
    key_mask[1] = False  # row 1: every key is padding
    out = attention(q, k, v, False, key_mask, 0.0, backend)
    assert torch.isfinite(out).all()
    assert out[1].eq(0).all()
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


def test_masked_keys_get_exactly_zero_weight():
    """M uses -inf, not a large negative constant: a masked value, however large, changes nothing."""
    q, k, v = random_qkv(B=1, T_q=3, T_k=5)
    mask = torch.tensor([True, True, True, False, False])[None, None, None, :]
    out = scaled_dot_product_attention(q, k, v, mask)
    v_huge = v.clone()
    v_huge[..., 3:, :] = 1e30
    k_huge = k.clone()
    k_huge[..., 3:, :] = 1e4  # would dominate the softmax if masking were additive with a finite constant
    assert torch.equal(scaled_dot_product_attention(q, k_huge, v_huge, mask), out)


def test_large_scores_give_the_float64_softmax_without_overflow():
    """Scores in the thousands: exp overflows float32 unless each row's maximum is subtracted first; the result is
    the softmax computed in float64."""
    q, k, v = random_qkv(B=1, h=2, T_q=3, T_k=5)
    q, k = q * 30, k * 30  # scores of order 30 * 30 * 16 / 4 = 3600
    mask = torch.tensor([True, True, True, True, False])[None, None, None, :]
    scores = (q.double() @ k.double().transpose(-2, -1) / 4.0).masked_fill(~mask, float("-inf"))
    expected = torch.softmax(scores, dim=-1) @ v.double()
    out = scaled_dot_product_attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


def test_identical_keys_give_the_mean_of_the_values():
    """softmax of equal scores is uniform, so the output is the average value vector."""
    q, _, v = random_qkv(B=1, h=1, T_q=2, T_k=4)
    k = torch.ones(1, 1, 4, 16)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v), v.mean(dim=2, keepdim=True).expand(1, 1, 2, 16))


def test_scores_are_scaled_by_sqrt_of_head_dim():
    """One query, two keys: p_1 = softmax(q.k_1 / sqrt(d_k), q.k_2 / sqrt(d_k))_1, computed by hand."""
    d_k = 4
    q = torch.tensor([[[[1.0, 1.0, 1.0, 1.0]]]])
    k = torch.tensor([[[[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]]])
    v = torch.tensor([[[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]]])
    s1, s2 = 1.0 / d_k**0.5, 4.0 / d_k**0.5
    p1 = torch.exp(torch.tensor(s1)) / (torch.exp(torch.tensor(s1)) + torch.exp(torch.tensor(s2)))
    out = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out[0, 0, 0, :2], torch.stack([p1, 1 - p1]))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_causal_attention_blocks_future_tokens(backend):
    """d out_t / d x_s is exactly zero for every s > t (and not for s <= t)."""
    T = 6
    q, k, v = random_qkv(B=1, T_q=T, T_k=T, requires_grad=True)
    for t in range(T):
        _, dk, dv = torch.autograd.grad(attention(q, k, v, True, None, 0.0, backend)[..., t, :].sum(), (q, k, v))
        assert dk[..., t + 1 :, :].eq(0).all() and dv[..., t + 1 :, :].eq(0).all()
        assert dv[..., : t + 1, :].abs().sum(dim=-1).gt(0).all()


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_prefix_is_visible_to_every_query_while_tokens_stay_causal(backend):
    P, T = 3, 5
    q, k, v = random_qkv(B=1, T_q=T, T_k=P + T, requires_grad=True)
    out = attention(q, k, v, True, None, 0.0, backend)
    first_query = torch.autograd.grad(out[..., 0, :].sum(), v)[0]
    assert first_query[..., :P, :].abs().sum(dim=-1).gt(0).all(), "the first token must see the whole prefix"
    assert first_query[..., P + 1 :, :].eq(0).all(), "the first token must not see later tokens"


def test_multi_head_attention_is_concat_of_heads_times_W_o():
    """MultiHead(X) = Concat(head_1..head_h) W_O with head_i = Attention(X W_Q^i, X W_K^i, X W_V^i), head by head."""
    config = tiny_config(causal=True, attention="math")
    mha = MultiHeadAttention(config)
    x = torch.randn(2, 5, config.d_model, generator=torch.Generator().manual_seed(0))
    d_k = config.head_dim
    heads = []
    for i in range(config.n_heads):
        cols = slice(i * d_k, (i + 1) * d_k)
        q_i = x @ mha.W_q.weight[cols].T + mha.W_q.bias[cols]
        k_i = x @ mha.W_k.weight[cols].T + mha.W_k.bias[cols]
        v_i = x @ mha.W_v.weight[cols].T + mha.W_v.bias[cols]
        causal = torch.ones(5, 5, dtype=torch.bool).tril()
        heads.append(scaled_dot_product_attention(q_i, k_i, v_i, causal))
    expected = torch.cat(heads, dim=-1) @ mha.W_o.weight.T + mha.W_o.bias
    torch.testing.assert_close(mha(x), expected)


def test_auto_backend_is_sdpa_on_cpu_and_unknown_backend_is_a_clear_error():
    q, k, v = random_qkv()
    assert resolve_backend("auto", q, k, 0.0) == "sdpa"
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        attention(q, k, v, True, None, 0.0, "flash")


def test_mismatched_key_mask_shape_is_a_clear_error():
    q, k, v = random_qkv(T_k=7)
    with pytest.raises(ValueError, match=r"key_mask must be a bool tensor of shape \(batch, n_keys\) = \(2, 7\)"):
        attention(q, k, v, True, torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_mask must be a bool tensor"):
        attention(q, k, v, True, torch.ones(2, 7))


def test_fewer_keys_than_queries_is_a_clear_error():
    q, k, v = random_qkv(T_q=5, T_k=3)
    with pytest.raises(ValueError, match="at least as many keys as queries"):
        attention(q, k, v, True)
