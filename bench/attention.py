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
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from minilm.model.attention import BACKENDS, attention

CASES = ("causal", "bidirectional", "prefix+causal+padding")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_inputs(case: str, B: int, h: int, T: int, d_k: int, prefix_len: int, dtype: torch.dtype, device: str):
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


def time_ms(fn, repeats: int, device: str) -> float:
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
    dtype = DTYPES[args.dtype]
    backends = args.backends or (["math", "sdpa", "triton"] if args.device == "cuda" else ["math", "sdpa"])

    print(
        f"# device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} dtype={args.dtype} "
        f"B={args.batch} h={args.heads} P={args.prefix_len}"
    )
    print(
        "| case | T | d_k | backend | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | peak MiB | "
        "vs math | vs sdpa |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        for T in args.seq_lens:
            for d_k in args.head_dims:
                q, k, v, key_mask, causal = make_inputs(
                    case, args.batch, args.heads, T, d_k, args.prefix_len, dtype, args.device
                )
                fwd_flops = 4 * args.batch * args.heads * T * k.size(2) * d_k * (0.5 if causal else 1.0)
                rows = {}
                for backend in backends:
                    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

                    def forward(qg=qg, kg=kg, vg=vg, backend=backend, causal=causal, key_mask=key_mask):
                        with torch.no_grad():
                            attention(qg, kg, vg, causal, key_mask, 0.0, backend)

                    def forward_backward(qg=qg, kg=kg, vg=vg, backend=backend, causal=causal, key_mask=key_mask):
                        attention(qg, kg, vg, causal, key_mask, 0.0, backend).sum().backward()

                    try:
                        fwd = time_ms(forward, args.repeats, args.device)
                        if args.device == "cuda":
                            torch.cuda.reset_peak_memory_stats()
                        fwd_bwd = time_ms(forward_backward, args.repeats, args.device)
                    except torch.cuda.OutOfMemoryError:
                        print(f"| {case} | {T} | {d_k} | {backend} | out of memory |")
                        continue
                    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else float("nan")
                    rows[backend] = (fwd, fwd_bwd, peak)
                for backend, (fwd, fwd_bwd, peak) in rows.items():
                    ratios = [f"{rows[peer][1] / fwd_bwd:.2f}x" if peer in rows else "-" for peer in ("math", "sdpa")]
                    peak_text = f"{peak:.0f}" if peak == peak else "-"
                    print(
                        f"| {case} | {T} | {d_k} | {backend} | {fwd:.2f} | {fwd_flops / fwd / 1e9:.3f} | "
                        f"{fwd_bwd:.2f} | {3.5 * fwd_flops / fwd_bwd / 1e9:.3f} | {peak_text} | {' | '.join(ratios)} |"
                    )


if __name__ == "__main__":
    main()
