"""minilm's Triton FlashAttention kernel against the `math` reference: forward, dQ, dK, dV and the prefix's gradients.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest.py sets TRITON_INTERPRET=1 before
Triton is imported); with one they are compiled for CUDA, and the half-precision tests below run too. Tiles of 16
make every sequence here span several tiles and end in a partial one.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import random_ids, tiny_config

from minilm import Transformer
from minilm.model.attention import attention, math_attention, resolve_backend
from minilm.model.kernels import interpreting, triton_unsupported
from minilm.tuning.methods import PrefixSettings

pytest.importorskip("triton")
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
pytestmark = pytest.mark.skipif(not (CUDA or interpreting()), reason="needs CUDA or TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not CUDA, reason="compiled kernels need a CUDA GPU")
ROOT = pathlib.Path(__file__).resolve().parent.parent


def kernel(q, k, v, causal, key_mask=None, block=16):
    from minilm.model.kernels.flash_attention import flash_attention

    return flash_attention(q, k, v, causal, key_mask, block=block)


def random_qkv(B=2, h=2, T_q=37, P=0, d_k=32, dtype=torch.float32, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    shapes = [(B, h, T_q, d_k), (B, h, P + T_q, d_k), (B, h, P + T_q, d_k)]
    return [torch.randn(s, generator=g, device=DEVICE, dtype=dtype).requires_grad_(True) for s in shapes]


def key_mask_for(case: str, B: int, T_k: int, P: int) -> torch.Tensor | None:
    """none: no padding; right: row 1 loses its last 7 keys; holes: hidden keys inside the rows (left padding after
    the prefix in row 1, two hidden prefix keys in row 0), as left-padded or mixed-prefix batches have."""
    if case == "none":
        return None
    mask = torch.ones(B, T_k, dtype=torch.bool, device=DEVICE)
    if case == "right":
        mask[1, T_k - 7 :] = False
    else:
        mask[1, P : P + 6] = False
        mask[0, 1:3] = False
    return mask


def outputs_and_grads(fn, q, k, v, causal, key_mask, dout):
    out = fn(q, k, v, causal, key_mask)
    return (out, *torch.autograd.grad(out, (q, k, v), dout))


def assert_matches_math(q, k, v, causal, key_mask, atol=1e-4, rtol=1e-4):
    """The kernel's out, dQ, dK, dV against `math` run in fp32 on the same inputs and the same upstream gradient."""
    dout = torch.randn(q.shape, generator=torch.Generator(device=DEVICE).manual_seed(1), device=DEVICE, dtype=q.dtype)
    ours = outputs_and_grads(kernel, q, k, v, causal, key_mask, dout)
    q32, k32, v32 = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    reference = outputs_and_grads(lambda *a: math_attention(*a, 0.0), q32, k32, v32, causal, key_mask, dout.float())
    for name, a, b in zip(("out", "dQ", "dK", "dV"), ours, reference):
        torch.testing.assert_close(a.float(), b, atol=atol, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}")
    return ours


@pytest.mark.parametrize("padding", ["none", "right", "holes"])
@pytest.mark.parametrize("P", [0, 5], ids=["no-prefix", "prefix-5"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_forward_and_all_gradients_match_math(causal, P, padding):
    """37 queries (two full tiles of 16 and a partial one), 0 or 5 prefix keys, every padding layout."""
    q, k, v = random_qkv(P=P)
    _, _, dk, dv = assert_matches_math(q, k, v, causal, key_mask_for(padding, 2, P + 37, P))
    if P:  # prefix tuning trains these: the first P keys' and values' gradients are real numbers, not zeros
        assert dk[:, :, :P].abs().sum() > 0 and dv[:, :, :P].abs().sum() > 0


def test_the_half_precision_default_tiles_match_math():
    """The GPU defaults give each kernel its own tile shape (forward 128 x 64, dK/dV 32 x 64, dQ 64 x 64); run with
    exactly those shapes (on fp32 data) so the tile-skipping starts hold when BLOCK_M != BLOCK_N."""
    from minilm.model.kernels.flash_attention import FlashAttention, default_tiles

    q, k, v = random_qkv(T_q=150, P=7)
    key_mask = key_mask_for("holes", 2, 157, 7)
    tiles = default_tiles(torch.float16)
    assert len({t[:2] for t in tiles}) == 3
    dout = torch.randn(q.shape, generator=torch.Generator(device=DEVICE).manual_seed(1), device=DEVICE)
    ours = outputs_and_grads(lambda *a: FlashAttention.apply(*a, tiles), q, k, v, True, key_mask, dout)
    reference = outputs_and_grads(lambda *a: math_attention(*a, 0.0), q, k, v, True, key_mask, dout)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_causal_diagonal_is_shifted_by_the_prefix_in_the_kernel():
    """The first query sees the P prefix keys and itself, nothing later: dV of later keys is exactly zero."""
    P = 5
    q, k, v = random_qkv(B=1, h=1, T_q=20, P=P)
    (dv,) = torch.autograd.grad(kernel(q, k, v, True)[..., 0, :].sum(), v)
    assert dv[..., : P + 1, :].abs().sum(dim=-1).gt(0).all()
    assert dv[..., P + 1 :, :].eq(0).all()


@pytest.mark.parametrize("d_k", [16, 64, 128])
def test_every_supported_head_dim_matches_math(d_k):
    q, k, v = random_qkv(T_q=21, P=3, d_k=d_k)
    assert_matches_math(q, k, v, True, key_mask_for("right", 2, 24, 3))


def test_one_query_against_a_long_cache_matches_math():
    """A decoding step: T_q = 1 sees all 40 cached keys (the shift is 39), some of them padding."""
    q, k, v = random_qkv(T_q=1, P=39)
    assert_matches_math(q, k, v, True, key_mask_for("holes", 2, 40, 10))


def test_a_query_that_sees_no_key_gets_zeros_and_finite_gradients():
    q, k, v = random_qkv(T_q=20)
    key_mask = torch.ones(2, 20, dtype=torch.bool, device=DEVICE)
    key_mask[1] = False
    out, dq, dk, dv = assert_matches_math(q, k, v, False, key_mask)
    assert out[1].eq(0).all()
    assert all(torch.isfinite(g).all() for g in (dq, dk, dv))


def test_right_padding_keys_are_never_read():
    """Keys after a row's last visible key are outside every loaded tile: NaN there changes nothing."""
    q, k, v = random_qkv(T_q=37)
    key_mask = key_mask_for("right", 2, 37, 0)
    clean = kernel(q, k, v, True, key_mask)
    with torch.no_grad():
        k[1, :, 30:] = float("nan")
        v[1, :, 30:] = float("nan")
    torch.testing.assert_close(kernel(q, k, v, True, key_mask), clean, equal_nan=False)


def test_float16_matches_math_within_half_precision():
    q, k, v = random_qkv(T_q=37, P=5, dtype=torch.float16)
    assert_matches_math(q, k, v, True, key_mask_for("right", 2, 42, 5), atol=5e-3, rtol=5e-3)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("d_k", [64, 128])
def test_cuda_half_precision_with_default_tiles_matches_math(dtype, d_k):
    q, k, v = random_qkv(B=2, h=4, T_q=1000, P=16, d_k=d_k, dtype=dtype)
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
    dout = torch.randn_like(q)
    ours = outputs_and_grads(
        lambda *a: attention(*a, 0.0, "triton"), q, k, v, True, key_mask_for("right", 2, 1016, 16), dout
    )
    reference = outputs_and_grads(
        lambda *a: math_attention(*a, 0.0),
        *(t.detach().float().requires_grad_(True) for t in (q, k, v)),
        True,
        key_mask_for("right", 2, 1016, 16),
        dout.float(),
    )
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a.float(), b, atol=tol, rtol=tol)


@needs_cuda
def test_auto_picks_triton_on_cuda_without_dropout_and_sdpa_with_it():
    q, k, _ = random_qkv(d_k=64)
    assert resolve_backend("auto", q, k, 0.0) == "triton"
    assert resolve_backend("auto", q, k, 0.1) == "sdpa"


def test_auto_is_sdpa_on_cpu_even_when_the_interpreter_could_run_the_kernel():
    q, k, _ = (t.cpu() for t in random_qkv())
    assert resolve_backend("auto", q, k, 0.0) == "sdpa"


@pytest.mark.parametrize("case", ["head_dim", "dropout"])
def test_a_call_the_kernel_cannot_take_runs_on_sdpa_with_one_warning(case):
    d_k, dropout = (24, 0.0) if case == "head_dim" else (32, 0.5)
    q, k, v = random_qkv(d_k=d_k)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        outs = [attention(q, k, v, True, None, dropout, "triton") for _ in range(3)]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "these calls use sdpa" in messages[0], messages
    if case == "head_dim":
        torch.testing.assert_close(outs[0], math_attention(q, k, v, True, None, 0.0), atol=1e-5, rtol=1e-5)


def test_cpu_tensors_without_the_interpreter_are_refused_with_the_reason(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, _ = (t.cpu() for t in random_qkv())
    assert "CUDA tensors" in triton_unsupported(q, k, 0.0)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "masked"])
def test_prefix_tuning_training_step_through_triton_equals_math(causal):
    """One AdamW step of prefix tuning (MLP reparameterisation) on a padded batch: same loss, same gradients and the
    same updated parameters whether attention runs through the Triton kernel or the math reference."""
    from minilm.tuning import ClassificationHead, PrefixTuning, TunedModel

    ids = random_ids(3, 19, vocab_size=300, seed=3).to(DEVICE)
    mask = torch.ones(3, 19, dtype=torch.long, device=DEVICE)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    labels = torch.tensor([0, 1, 1], device=DEVICE)
    results = {}
    for backend in ("math", "triton"):
        base = Transformer(tiny_config(d_model=64, n_heads=2, causal=causal, attention=backend), seed=0).to(DEVICE)
        method = PrefixTuning.for_base(base, PrefixSettings(4, d_prime=8, hidden=16))
        model = TunedModel(base, method, ClassificationHead(64, 2, seed=0)).to(DEVICE)
        params = list(model.trainable().values())
        optimizer = torch.optim.AdamW(params, lr=1e-2)
        loss = F.cross_entropy(model(ids, mask), labels)
        loss.backward()
        grads = [p.grad.clone() for p in params]
        optimizer.step()
        results[backend] = (loss.detach(), grads, [p.detach().clone() for p in params])
    torch.testing.assert_close(results["triton"][0], results["math"][0], atol=1e-5, rtol=1e-5)
    for name, index in (("gradients", 1), ("updated parameters", 2)):
        for a, b in zip(results["triton"][index], results["math"][index]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_kernels_compile_for_sm90_with_the_default_tiles_without_spilling_registers():
    """What the interpreter cannot check: Triton's compiler (no GPU needed) builds every kernel for an H100/H200, and
    with the default fp16 tiles no kernel spills registers to local memory (bench/kernel_resources.py)."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "bench/kernel_resources.py", "--dtypes", "fp16", "--head-dims", "64"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split("|") for line in run.stdout.splitlines() if line.startswith("| fp16 | 64 |")]
    assert [row[3].strip() for row in rows] == ["forward", "dk_dv", "dq"]
    assert all(row[6].strip() == "0" for row in rows), run.stdout
