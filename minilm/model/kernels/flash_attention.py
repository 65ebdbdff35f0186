"""FlashAttention in Triton: softmax(Q K^T / sqrt(d_k) + M) V one tile at a time, never building the T_q x T_k matrix.

The same equation as `minilm.model.attention.scaled_dot_product_attention`, with the mask M described by numbers
instead of a tensor (docs/kernels.md derives every step):

    shift = T_k - T_q          the keys before the queries (a prefix and/or a KV cache), visible to every query
    n_keys[b]                  keys j >= n_keys[b] are padding (right padding of the whole key row)
    query i sees key j  <=>    j < n_keys[b]  and  (not causal or j <= i + shift)

Forward (one program per tile of BLOCK_M queries of one (batch, head)): walk the key tiles left to right keeping,
per query row, the running max m, the running sum l = sum_j exp(s_j - m) and the accumulator
acc = sum_j exp(s_j - m) v_j; when a tile raises the max to m_new, the old l and acc are rescaled by exp(m - m_new).
At the end out = acc / l and lse = m + log(l) is saved for the backward. Key tiles that no query of the tile may see
(right of the causal diagonal, or wholly padding) are never loaded.

Backward: recompute p_ij = exp(s_ij - lse_i) from the saved lse, with D_i = rowsum(dO_i * O_i):

    dV = P^T dO      dP = dO V^T      dS = P * (dP - D)      dQ = dS K / sqrt(d_k)      dK = dS^T Q / sqrt(d_k)

one kernel per key tile for dK, dV (so the prefix keys and values get their gradients like any other key) and one per
query tile for dQ, so no two programs write the same output and no atomics are needed.

Exponentials are base 2 (`exp2` is one instruction on a GPU): the scores are scaled by log2(e) / sqrt(d_k) and the
saved lse is in base 2 too; exp2(s * log2 e - lse2) = exp(s - lse), the same numbers.

Docs: docs/kernels.md.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

LOG2_E = 1.4426950408889634  # log2(e): exp(x) = exp2(x * log2(e))


@triton.jit
def _visible(offs_m, offs_n, n_keys, shift, key_mask_row, CAUSAL: tl.constexpr, HAS_PADDING: tl.constexpr):
    """M_ij = 0 (True) where query i may see key j: j < n_keys, key_mask[j] (if there is a key mask), and
    (not causal or j <= i + shift)."""
    visible = offs_n[None, :] < n_keys
    if HAS_PADDING:
        visible = visible & (tl.load(key_mask_row + offs_n, mask=offs_n < n_keys, other=0) != 0)[None, :]
    if CAUSAL:
        visible = visible & (offs_n[None, :] <= offs_m[:, None] + shift)
    return visible


@triton.jit
def _last_key(tile_m, n_keys, shift, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr):
    """Tile skipping: the keys a query tile needs are 0 .. end-1. Its last row is (tile_m + 1) * BLOCK_M - 1, which
    sees up to key (tile_m + 1) * BLOCK_M - 1 + shift under the causal mask; padding keys >= n_keys are never needed."""
    end = n_keys
    if CAUSAL:
        end = tl.minimum(end, (tile_m + 1) * BLOCK_M + shift)
    return end


@triton.jit
def _load_rows(ptr, offs, stride_t, n_rows, HEAD_DIM: tl.constexpr):
    """Rows `offs` of one head's (T, d_k) matrix starting at ptr; rows >= n_rows read as zeros."""
    rows = ptr + offs[:, None] * stride_t + tl.arange(0, HEAD_DIM)[None, :]
    return tl.load(rows, mask=offs[:, None] < n_rows, other=0.0)


@triton.jit
def _store_rows(ptr, offs, stride_t, n_rows, values, HEAD_DIM: tl.constexpr):
    """Write `values` to rows `offs` (< n_rows) of one head's (T, d_k) matrix, in the matrix's dtype."""
    rows = ptr + offs[:, None] * stride_t + tl.arange(0, HEAD_DIM)[None, :]
    tl.store(rows, values.to(ptr.dtype.element_ty), mask=offs[:, None] < n_rows)


# fmt: off
# The kernels' argument lists and launches are grouped by hand (pointers, then each tensor's three strides, then sizes,
# then compile-time switches): one argument per line would hide which stride belongs to which tensor.
@triton.jit
def _recomputed_probs(q, k, lse, offs_m, offs_n, n_keys, shift, key_mask_row, qk_scale,
                      CAUSAL: tl.constexpr, HAS_PADDING: tl.constexpr, PRECISION: tl.constexpr):
    """P_ij = exp(s_ij - L_i) from the saved log-sum-exp (both base 2 here), and 0 where M_ij = -inf."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    visible = _visible(offs_m, offs_n, n_keys, shift, key_mask_row, CAUSAL, HAS_PADDING)
    return tl.where(visible, tl.exp2(s - lse[:, None]), 0.0)


@triton.jit
def _forward_kernel(
    Q, K, V, O, LSE, N_KEYS, KEY_MASK,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
    stride_ob, stride_oh, stride_ot,
    n_heads, T_q, T_k, qk_scale,
    CAUSAL: tl.constexpr, HAS_PADDING: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    tile_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    shift = T_k - T_q
    n_keys = tl.load(N_KEYS + b) if HAS_PADDING else T_k

    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qt, T_q, HEAD_DIM)
    K = K + b * stride_kb + h * stride_kh  # this (batch, head)'s keys and values
    V = V + b * stride_vb + h * stride_vh

    m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of the (base-2) scores
    l = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s - m)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # running sum of exp2(s - m) v
    for start_n in range(0, _last_key(tile_m, n_keys, shift, CAUSAL, BLOCK_M), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(K, offs_n, stride_kt, n_keys, HEAD_DIM)
        v = _load_rows(V, offs_n, stride_vt, n_keys, HEAD_DIM)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = tl.where(_visible(offs_m, offs_n, n_keys, shift, KEY_MASK + b * T_k, CAUSAL, HAS_PADDING), s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet: keep exp2 finite
        p = tl.exp2(s - m_safe[:, None])
        rescale = tl.exp2(m - m_safe)  # exp(m_old - m_new): the old terms relative to the new max
        l = l * rescale + tl.sum(p, 1)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m = m_new

    empty = l == 0.0  # no visible key: out = 0 (as in the math path) and lse = +inf, so the backward's p = 0
    out = acc / tl.where(empty, 1.0, l)[:, None]
    lse = tl.where(empty, float("inf"), m + tl.log2(tl.where(empty, 1.0, l)))
    _store_rows(O + b * stride_ob + h * stride_oh, offs_m, stride_ot, T_q, out, HEAD_DIM)
    tl.store(LSE + bh * T_q + offs_m, lse, mask=offs_m < T_q)


@triton.jit
def _delta_kernel(O, DO, DELTA, stride_ob, stride_oh, stride_ot, stride_db, stride_dh, stride_dt, n_heads, T_q,
                  BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """D_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij, the term dS = P * (dP - D) subtracts."""
    tile_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o = _load_rows(O + b * stride_ob + h * stride_oh, offs_m, stride_ot, T_q, HEAD_DIM)
    do = _load_rows(DO + b * stride_db + h * stride_dh, offs_m, stride_dt, T_q, HEAD_DIM)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh * T_q + offs_m, delta, mask=offs_m < T_q)


@triton.jit
def _dk_dv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, N_KEYS, KEY_MASK,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
    stride_db, stride_dh, stride_dt, stride_gb, stride_gh, stride_gt,
    n_heads, T_q, T_k, qk_scale, sm_scale,
    CAUSAL: tl.constexpr, HAS_PADDING: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """One tile of BLOCK_N keys: dV_j = sum_i P_ij dO_i and dK_j = sum_i dS_ij q_i / sqrt(d_k), over the queries that
    see it."""
    tile_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    shift = T_k - T_q
    n_keys = tl.load(N_KEYS + b) if HAS_PADDING else T_k

    offs_n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k = _load_rows(K + b * stride_kb + h * stride_kh, offs_n, stride_kt, n_keys, HEAD_DIM)
    v = _load_rows(V + b * stride_vb + h * stride_vh, offs_n, stride_vt, n_keys, HEAD_DIM)
    Q = Q + b * stride_qb + h * stride_qh  # this (batch, head)'s queries and output gradients
    DO = DO + b * stride_db + h * stride_dh
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Tile skipping, seen from the keys: key j is seen by queries i >= j - shift (causal); a padding tile by none.
    start = 0
    if CAUSAL:
        start = tl.maximum(tile_n * BLOCK_N - shift, 0)
    end = tl.where(tile_n * BLOCK_N < n_keys, T_q, 0)
    for start_m in range(start, end, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = _load_rows(Q, offs_m, stride_qt, T_q, HEAD_DIM)
        do = _load_rows(DO, offs_m, stride_dt, T_q, HEAD_DIM)
        lse = tl.load(LSE + bh * T_q + offs_m, mask=offs_m < T_q, other=float("inf"))
        delta = tl.load(DELTA + bh * T_q + offs_m, mask=offs_m < T_q, other=0.0)
        p = _recomputed_probs(q, k, lse, offs_m, offs_n, n_keys, shift, KEY_MASK + b * T_k, qk_scale,
                              CAUSAL, HAS_PADDING, PRECISION)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)

    _store_rows(DK + b * stride_gb + h * stride_gh, offs_n, stride_gt, T_k, dk * sm_scale, HEAD_DIM)
    _store_rows(DV + b * stride_gb + h * stride_gh, offs_n, stride_gt, T_k, dv, HEAD_DIM)


@triton.jit
def _dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, N_KEYS, KEY_MASK,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
    stride_db, stride_dh, stride_dt, stride_gb, stride_gh, stride_gt,
    n_heads, T_q, T_k, qk_scale, sm_scale,
    CAUSAL: tl.constexpr, HAS_PADDING: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """One tile of BLOCK_M queries: dQ_i = sum_j dS_ij k_j / sqrt(d_k), over the same key tiles as the forward."""
    tile_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    shift = T_k - T_q
    n_keys = tl.load(N_KEYS + b) if HAS_PADDING else T_k

    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _load_rows(Q + b * stride_qb + h * stride_qh, offs_m, stride_qt, T_q, HEAD_DIM)
    do = _load_rows(DO + b * stride_db + h * stride_dh, offs_m, stride_dt, T_q, HEAD_DIM)
    lse = tl.load(LSE + bh * T_q + offs_m, mask=offs_m < T_q, other=float("inf"))
    delta = tl.load(DELTA + bh * T_q + offs_m, mask=offs_m < T_q, other=0.0)
    K = K + b * stride_kb + h * stride_kh
    V = V + b * stride_vb + h * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, _last_key(tile_m, n_keys, shift, CAUSAL, BLOCK_M), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(K, offs_n, stride_kt, n_keys, HEAD_DIM)
        v = _load_rows(V, offs_n, stride_vt, n_keys, HEAD_DIM)
        p = _recomputed_probs(q, k, lse, offs_m, offs_n, n_keys, shift, KEY_MASK + b * T_k, qk_scale,
                              CAUSAL, HAS_PADDING, PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    _store_rows(DQ + b * stride_gb + h * stride_gh, offs_m, stride_gt, T_q, dq * sm_scale, HEAD_DIM)


# fmt: on
def key_layout(key_mask: Tensor | None, T_k: int) -> tuple[Tensor | None, Tensor | None]:
    """The key mask as the kernels read it: (n_keys, flags), or (None, None) when every key is visible.

    n_keys[b] = 1 + the last visible key of row b: the keys after it are right padding, and no tile of them is loaded.
    flags = key_mask as int8, read one tile at a time for the keys before n_keys[b] that are hidden (left padding, a
    padded prefix, a row that stopped early in generation). Both are O(T_k) numbers per sequence, computed on the
    device: nothing here waits for the GPU, so a forward through every layer makes no host sync for its mask.
    """
    if key_mask is None:
        return None, None
    positions = torch.arange(T_k, device=key_mask.device)
    n_keys = torch.where(key_mask, positions + 1, 0).amax(dim=-1)
    return n_keys.to(torch.int32), key_mask.to(torch.int8).contiguous()


def _strides(t: Tensor) -> tuple[int, int, int]:
    """(batch, head, time) strides; the head dimension is contiguous."""
    return t.stride(0), t.stride(1), t.stride(2)


Tiles = tuple[int, int, int]  # (BLOCK_M queries, BLOCK_N keys, num_warps) of one kernel launch


def default_tiles(dtype: torch.dtype) -> tuple[Tiles, Tiles, Tiles]:
    """Tiles of the forward, dK/dV and dQ kernels. fp16/bf16: the largest tiles that compile for sm_90 (H100/H200)
    without spilling registers at head dims 32-128 (checked with Triton 3.9's compiler and cuobjdump, 2026-11-23;
    docs/kernels.md); not yet tuned by timing on a GPU. fp32 takes exact (non-TF32) dots, which need more registers:
    small tiles."""
    if dtype == torch.float32:
        return (32, 32, 4), (32, 32, 4), (32, 32, 4)
    return (128, 64, 8), (32, 64, 8), (64, 64, 8)


class FlashAttention(torch.autograd.Function):
    """out = softmax(Q K^T / sqrt(d_k) + M) V with M given by `causal`, the shift T_k - T_q and the key layout."""

    # fmt: off
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, causal: bool, key_mask: Tensor | None,
                tiles: tuple[Tiles, Tiles, Tiles]) -> Tensor:
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        B, h, T_q, d_k = q.shape
        T_k = k.size(2)
        n_keys, flags = key_layout(key_mask, T_k)
        unused = q.new_empty(0, dtype=torch.int32)  # a pointer the kernel never reads (HAS_PADDING False)
        ctx.pointers = (unused, unused) if n_keys is None else (n_keys, flags)
        ctx.scalars = (h, T_q, T_k, LOG2_E / math.sqrt(d_k), 1.0 / math.sqrt(d_k))
        ctx.constants = dict(CAUSAL=causal, HAS_PADDING=n_keys is not None,
                             PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # fp32: no TF32 rounding
                             HEAD_DIM=d_k)
        ctx.tiles = tiles
        block_m, block_n, warps = tiles[0]
        out = torch.empty(q.shape, device=q.device, dtype=q.dtype)
        lse = torch.empty(B * h, T_q, device=q.device, dtype=torch.float32)
        _forward_kernel[(triton.cdiv(T_q, block_m), B * h)](
            q, k, v, out, lse, *ctx.pointers, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
            *ctx.scalars[:4], **ctx.constants, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        dout = dout if dout.stride(-1) == 1 else dout.contiguous()
        B, h, T_q, d_k = q.shape
        delta = torch.empty_like(lse)
        _delta_kernel[(triton.cdiv(T_q, 64), B * h)](out, dout, delta, *_strides(out), *_strides(dout), h, T_q,
                                                     BLOCK_M=64, HEAD_DIM=d_k)
        dq, dk, dv = (torch.empty(t.shape, device=t.device, dtype=t.dtype) for t in (q, k, v))  # contiguous
        inputs = (*_strides(q), *_strides(k), *_strides(v), *_strides(dout))
        (_, _, _), (kv_m, kv_n, kv_warps), (q_m, q_n, q_warps) = ctx.tiles
        _dk_dv_kernel[(triton.cdiv(k.size(2), kv_n), B * h)](
            q, k, v, dout, lse, delta, dk, dv, *ctx.pointers, *inputs, *_strides(dk), *ctx.scalars, **ctx.constants,
            BLOCK_M=kv_m, BLOCK_N=kv_n, num_warps=kv_warps)
        _dq_kernel[(triton.cdiv(T_q, q_m), B * h)](
            q, k, v, dout, lse, delta, dq, *ctx.pointers, *inputs, *_strides(dq), *ctx.scalars, **ctx.constants,
            BLOCK_M=q_m, BLOCK_N=q_n, num_warps=q_warps)
        return dq, dk, dv, None, None, None
    # fmt: on


def flash_attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, key_mask: Tensor | None = None, block: int | None = None
) -> Tensor:
    """softmax(Q K^T / sqrt(d_k) + M) V by the Triton kernels, differentiable in q, k and v.

    q (B, h, T_q, d_k); k, v (B, h, T_k, d_k) with T_k >= T_q: the first T_k - T_q keys are a prefix (or a KV cache)
    every query sees, and with `causal` query i sees key j iff j <= i + T_k - T_q. key_mask (B, T_k) bool, True at
    keys that may be attended. The caller (minilm.model.attention.triton_attention) checks that the kernel takes the
    call (minilm.model.kernels.triton_unsupported). `block`: one square tile size for every kernel instead of
    `default_tiles` (the tests use 16, so that short sequences span several tiles).
    """
    tiles = default_tiles(q.dtype) if block is None else ((block, block, 4),) * 3
    return FlashAttention.apply(q, k, v, causal, key_mask, tiles)
