"""Time the attention backends against each other in one process.

    python bench/attention.py                      # CPU, small shapes
    python bench/attention.py --device cuda --seq-lens 512 1024 2048 4096 8192 --head-dims 64 128 --dtype bf16

For every (mask case, T, head_dim) it times forward and forward+backward of each backend (on CUDA: math,
sdpa and minilm's Triton kernel `triton`), reports milliseconds, TFLOP/s (the attention matmuls only:
4 B h T_q T_k d_k for the forward, halved under a causal mask; backward counted as 2.5x forward) and, on
CUDA, peak memory of forward+backward; the last two columns are each backend's forward+backward speed as a
ratio to `math` and to `sdpa`, measured in the same run. Mask cases:

    causal                 plain causal self-attention (T_q = T_k)
    bidirectional          every query sees every key
    prefix+causal+padding  P prefix keys visible to all, causal among the T tokens, 1/8 of each row padded

`bench_case` times one (case, T, head_dim) and returns its rows as dicts; `main` prints them as the table and
bench/gpu_check.py imports it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from minilm.model.attention import BACKENDS, attention
from minilm.model.kernels import triton_unsupported

CASES = ("causal", "bidirectional", "prefix+causal+padding")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_inputs(case: str, B: int, h: int, T: int, d_k: int, prefix_len: int, dtype: torch.dtype, device: str):
    """q (B, h, T, d_k), k and v (B, h, P + T, d_k) (P = prefix_len in the prefix case, else 0), the key mask (None
    unless the case pads) and whether the case is causal."""
    P = prefix_len if case.startswith("prefix") else 0
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(B, h, T, d_k, generator=g, device=device, dtype=dtype)
    k = torch.randn(B, h, P + T, d_k, generator=g, device=device, dtype=dtype)
    v = torch.randn(B, h, P + T, d_k, generator=g, device=device, dtype=dtype)
    key_mask = None
    if case.endswith("padding"):
        key_mask = torch.ones(B, P + T, dtype=torch.bool, device=device)
        key_mask[:, P + T - T // 8 :] = False  # right padding on every row
    return q, k, v, key_mask, case != "bidirectional"


def time_ms(fn: Callable[[], Any], repeats: int, device: str) -> float:
    """Median wall time of `fn` in milliseconds, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def forward_flops(B: int, h: int, T_q: int, T_k: int, d_k: int, causal: bool) -> float:
    """FLOPs of the attention matmuls of one forward: 4 B h T_q T_k d_k (Q K^T and P V), halved under a causal mask."""
    return 4 * B * h * T_q * T_k * d_k * (0.5 if causal else 1.0)


def bench_case(
    case: str,
    T: int,
    d_k: int,
    backends: Iterable[str],
    *,
    batch: int,
    heads: int,
    prefix_len: int,
    dtype: str,
    device: str,
    repeats: int,
    max_math_len: int | None = None,
) -> list[dict[str, Any]]:
    """Time forward and forward+backward of every backend on one (case, T, d_k): one row (a dict) per backend.

    A row holds the case, sizes and backend, then `fwd_ms`, `fwd_tflops`, `fwd_bwd_ms`, `fwd_bwd_tflops`, `peak_mib`
    (CUDA: the most memory allocated during forward+backward; None on CPU) and `vs_math`, `vs_sdpa` (the other
    backend's forward+backward time over this one's: > 1 is faster). A backend that could not be timed has `error`
    instead ("out of memory"; `triton` where the kernel would not take the call and would silently run `sdpa`; `math`
    above `max_math_len`, whose T x T score tensors are skipped to save time and memory).
    """
    q, k, v, key_mask, causal = make_inputs(case, batch, heads, T, d_k, prefix_len, DTYPES[dtype], device)
    flops = forward_flops(batch, heads, T, k.size(2), d_k, causal)
    rows: list[dict[str, Any]] = []
    for backend in backends:
        row: dict[str, Any] = dict(
            case=case, T=T, d_k=d_k, backend=backend, dtype=dtype, batch=batch, heads=heads, prefix_len=prefix_len
        )
        rows.append(row)
        if backend == "math" and max_math_len is not None and T > max_math_len:
            row["error"] = f"skipped: math above T={max_math_len}"
            continue
        if backend == "triton" and (reason := triton_unsupported(q, k, 0.0)) is not None:
            row["error"] = f"not run: {reason}"
            continue
        qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

        def forward(qg=qg, kg=kg, vg=vg, backend=backend):
            with torch.no_grad():
                attention(qg, kg, vg, causal, key_mask, 0.0, backend)

        def forward_backward(qg=qg, kg=kg, vg=vg, backend=backend):
            attention(qg, kg, vg, causal, key_mask, 0.0, backend).sum().backward()

        try:
            fwd = time_ms(forward, repeats, device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            fwd_bwd = time_ms(forward_backward, repeats, device)
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of memory"
            del qg, kg, vg, forward, forward_backward
            torch.cuda.empty_cache()
            continue
        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
        row.update(
            fwd_ms=fwd,
            fwd_tflops=flops / fwd / 1e9,
            fwd_bwd_ms=fwd_bwd,
            fwd_bwd_tflops=3.5 * flops / fwd_bwd / 1e9,
            peak_mib=peak,
        )
    timed = {row["backend"]: row["fwd_bwd_ms"] for row in rows if "fwd_bwd_ms" in row}
    for row in rows:
        for peer in ("math", "sdpa"):
            row[f"vs_{peer}"] = timed[peer] / row["fwd_bwd_ms"] if peer in timed and "fwd_bwd_ms" in row else None
    return rows


TABLE_HEADER = [
    "| case | T | d_k | backend | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | peak MiB | vs math | vs sdpa |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def table_row(row: dict[str, Any]) -> str:
    """One markdown table line of a `bench_case` row."""
    head = f"| {row['case']} | {row['T']} | {row['d_k']} | {row['backend']} |"
    if "error" in row:
        return f"{head} {row['error']} |"
    ratios = [f"{row[f'vs_{peer}']:.2f}x" if row[f"vs_{peer}"] is not None else "-" for peer in ("math", "sdpa")]
    peak = f"{row['peak_mib']:.0f}" if row["peak_mib"] is not None else "-"
    return (
        f"{head} {row['fwd_ms']:.2f} | {row['fwd_tflops']:.3f} | {row['fwd_bwd_ms']:.2f} | "
        f"{row['fwd_bwd_tflops']:.3f} | {peak} | {' | '.join(ratios)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=list(BACKENDS),
        help="default: math sdpa, and triton on CUDA (on CPU it needs TRITON_INTERPRET=1 and is no benchmark)",
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seq-lens", nargs="+", type=int, default=[128, 256, 512])
    parser.add_argument("--head-dims", nargs="+", type=int, default=[64])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--prefix-len", type=int, default=16)
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = args.backends or (["math", "sdpa", "triton"] if args.device == "cuda" else ["math", "sdpa"])

    print(
        f"# device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} dtype={args.dtype} "
        f"B={args.batch} h={args.heads} P={args.prefix_len}"
    )
    print("\n".join(TABLE_HEADER))
    for case in args.cases:
        for T in args.seq_lens:
            for d_k in args.head_dims:
                rows = bench_case(
                    case,
                    T,
                    d_k,
                    backends,
                    batch=args.batch,
                    heads=args.heads,
                    prefix_len=args.prefix_len,
                    dtype=args.dtype,
                    device=args.device,
                    repeats=args.repeats,
                )
                for row in rows:
                    print(table_row(row), flush=True)


if __name__ == "__main__":
    main()
