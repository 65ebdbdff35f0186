"""Training tokens/s and MFU of minilm against Hugging Face GPT-2 built at the same size, in one process.

    pip install -e ".[bench]"                                   # transformers, for the peer
    python bench/train_throughput.py --threads 2                # 4x128x64 (batch 32) and 6x384x256 (batch 8)
    python bench/train_throughput.py --configs 6x384x256 --batch 8 --dtype bf16 --optimizer fused

Both models are built from a config (nothing is downloaded) at identical sizes: L layers, width d,
d / head_dim heads, d_ff = 4 d, context T, vocabulary V, output matrix tied to the token embedding,
dropout 0, exact (erf) GELU, PyTorch's fused scaled_dot_product_attention. Each trains as a causal LM
on the same batch of random token ids with the same AdamW settings: minilm with
`causal_lm_loss(model(ids), ids)`, GPT-2 with its own `model(ids, labels=ids).loss` (the same shifted
cross-entropy). One training step is forward + loss + backward + AdamW step + zero_grad.

Precision: `fp32` runs in float32; `bf16` wraps forward and loss in `torch.autocast(device, bfloat16)`
(weights, gradients and AdamW state stay float32: mixed precision). Optimizer: `foreach` is
`torch.optim.AdamW`'s default multi-tensor path, `fused` is `AdamW(fused=True)`.

Timing: every (model, precision, optimizer) variant of a config is built and warmed up, then the
timed steps go round-robin over the variants (so a slow patch of a shared machine hits all of them),
and each variant's ms/step is the median of its timed steps.

MFU (model FLOPs utilisation) = achieved model FLOP/s / peak FLOP/s, with

    model FLOPs per token = 6 N + 12 L T d        (forward + backward, as in the PaLM paper, App. B)

    N = L (12 d^2 + 13 d) + V d: the parameters that take part in a matmul per token: every block's
        weights and biases (4 d^2 + 4 d attention, 8 d^2 + 5 d feed-forward, LayerNorms)
        plus the tied output projection V d; the token and position lookups do no FLOPs and are
        left out. 12 L T d counts Q K^T and P V over all T keys (causal masking's skipped half
        is counted too, by convention).

Peak is *measured* in the same run, on the same device and threads: the FLOP/s of a large square
matmul (2 n^3 FLOPs, n = --peak-size) in float32 and in bfloat16, the fastest of 10 runs after a second of warm-up; \
fp32 rows
are divided by the fp32 peak and bf16 rows by the bf16 peak. Both models do the same model FLOPs,
so the ratio column (minilm tokens/s / GPT-2 tokens/s at the same precision and optimizer) is also
the MFU ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from minilm import ModelConfig, Transformer, causal_lm_loss
from minilm.model.layers import LayerNorm, layer_norm

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Size:
    """One benchmark configuration: L layers x d wide x T context."""

    n_layers: int
    d_model: int
    context: int
    head_dim: int
    vocab_size: int

    @property
    def n_heads(self) -> int:
        return max(1, self.d_model // self.head_dim)

    @property
    def name(self) -> str:
        return f"{self.n_layers}x{self.d_model}x{self.context}"

    def matmul_params(self) -> int:
        """N = L (12 d^2 + 13 d) + V d (see the module docstring)."""
        L, d, V = self.n_layers, self.d_model, self.vocab_size
        return L * (12 * d * d + 13 * d) + V * d

    def flops_per_token(self) -> int:
        """6 N + 12 L T d: forward + backward model FLOPs of one token."""
        return 6 * self.matmul_params() + 12 * self.n_layers * self.context * self.d_model


def parse_size(text: str, head_dim: int, vocab_size: int) -> Size:
    try:
        n_layers, d_model, context = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--configs: {text!r} is not LAYERSxWIDTHxCONTEXT (e.g. 4x128x64)") from None
    return Size(n_layers, d_model, context, head_dim, vocab_size)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure_peak(device: str, dtype: torch.dtype, n: int, repeats: int = 10, warmup_s: float = 1.0) -> float:
    """FLOP/s of an n x n @ n x n matmul (2 n^3 FLOPs): the fastest of `repeats` runs after `warmup_s`
    seconds of the same matmul (the first runs are slow while clocks and the thread pool wake up)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=generator).to(dtype)
    b = torch.randn(n, n, device=device, generator=generator).to(dtype)
    synchronize(device)
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        a @ b
        synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def build_minilm(size: Size) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    config = ModelConfig(
        vocab_size=size.vocab_size,
        d_model=size.d_model,
        n_heads=size.n_heads,
        n_layers=size.n_layers,
        d_ff=4 * size.d_model,
        max_len=size.context,
        dropout=0.0,
        causal=True,
        attention="sdpa",
    )
    model = Transformer(config, seed=0)
    return model, lambda ids: causal_lm_loss(model(ids), ids)


def build_gpt2(size: Size) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()

    config = GPT2Config(
        vocab_size=size.vocab_size,
        n_positions=size.context,
        n_embd=size.d_model,
        n_layer=size.n_layers,
        n_head=size.n_heads,
        n_inner=4 * size.d_model,
        activation_function="gelu",  # exact erf GELU, as minilm (GPT-2's default is the tanh approximation)
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        use_cache=False,
        bos_token_id=None,  # GPT-2's 50256 is outside a small vocabulary; the ids are unused here
        eos_token_id=None,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    return model, lambda ids: model(input_ids=ids, labels=ids).loss


def build_minilm_written_out_layer_norm(size: Size) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """minilm with every LayerNorm computed by the written-out `layer_norm` instead of the fused kernel
    (how the library ran before; kept to measure that lever)."""
    model, loss_fn = build_minilm(size)
    for module in model.modules():
        if isinstance(module, LayerNorm):
            module.forward = lambda x, ln=module: layer_norm(x, ln.gamma, ln.beta, ln.eps)
    return model, loss_fn


BUILDERS = {"minilm": build_minilm, "gpt2": build_gpt2, "minilm-written-ln": build_minilm_written_out_layer_norm}


class Variant:
    """One (model, precision, optimizer) combination, ready to take training steps."""

    def __init__(self, model_name: str, size: Size, precision: str, optimizer: str, device: str) -> None:
        self.model_name, self.size, self.precision, self.optimizer_name = model_name, size, precision, optimizer
        self.device = device
        model, self.loss_fn = BUILDERS[model_name](size)
        self.model = model.to(device).train()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=optimizer == "fused"
        )
        self.times: list[float] = []

    def autocast(self):
        dtype = DTYPES[self.precision]
        return torch.autocast(self.device, dtype=dtype) if dtype is not None else nullcontext()

    def step(self, ids: torch.Tensor) -> float:
        """One training step; returns its wall time in seconds."""
        synchronize(self.device)
        start = time.perf_counter()
        with self.autocast():
            loss = self.loss_fn(ids)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["4x128x64", "6x384x256"], help="LAYERSxWIDTHxCONTEXT")
    parser.add_argument("--batch", nargs="+", type=int, default=[32, 8], help="batch size per config (one value: all)")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--head-dim", type=int, default=64, help="heads = width / head-dim")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--optimizer", nargs="+", default=["foreach", "fused"], choices=["foreach", "fused"])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["minilm", "gpt2"],
        choices=list(BUILDERS),
        help="minilm-written-ln: minilm with the op-by-op LayerNorm instead of the fused kernel",
    )
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n x n matmul that measures peak FLOP/s")
    args = parser.parse_args()

    if "gpt2" in args.models:
        try:
            import transformers
        except ImportError:
            sys.exit(
                "bench/train_throughput.py needs Hugging Face transformers for the GPT-2 peer:\n"
                '    pip install -e ".[bench]"\n'
                "(or pass --models minilm to time minilm alone)"
            )
        peer_version = f" transformers={transformers.__version__}"
    else:
        peer_version = ""
    if args.threads:
        torch.set_num_threads(args.threads)
    if len(args.batch) not in (1, len(args.configs)):
        sys.exit(f"--batch: give one value or one per config ({len(args.configs)}), got {len(args.batch)}")
    batches = args.batch * len(args.configs) if len(args.batch) == 1 else args.batch

    peaks = {name: measure_peak(args.device, dtype or torch.float32, args.peak_size) for name, dtype in DTYPES.items()}
    print(
        f"# device={args.device} torch={torch.__version__}{peer_version} threads={torch.get_num_threads()} "
        f"vocab={args.vocab} head_dim={args.head_dim} warmup={args.warmup} steps={args.steps} (median)"
    )
    if hasattr(os, "getloadavg"):  # other work on the machine slows every row; check before trusting a table
        print(f"# load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print(
        "# measured peak: "
        + ", ".join(f"{name} {flops / 1e9:,.1f} GFLOP/s" for name, flops in peaks.items())
        + f" ({args.peak_size}^3 matmul)"
    )

    rows = []
    for text, batch in zip(args.configs, batches):
        size = parse_size(text, args.head_dim, args.vocab)
        ids = torch.randint(0, size.vocab_size, (batch, size.context), generator=torch.Generator().manual_seed(0))
        ids = ids.to(args.device)
        variants = [
            Variant(model, size, precision, optimizer, args.device)
            for precision in args.dtype
            for optimizer in args.optimizer
            for model in args.models
        ]
        counts = {v.model_name: v.n_params for v in variants}
        print(
            f"# {size.name}: batch {batch}, {size.n_heads} heads, parameters {counts}, "
            f"model FLOPs/token 6N + 12LTd = {size.flops_per_token() / 1e6:.2f} M (N = {size.matmul_params():,})"
        )
        for variant in variants:
            for _ in range(args.warmup):
                variant.step(ids)
        for _ in range(args.steps):
            for variant in variants:
                variant.times.append(variant.step(ids))
        for variant in variants:
            seconds = statistics.median(variant.times)
            tokens_per_s = batch * size.context / seconds
            mfu = tokens_per_s * size.flops_per_token() / peaks[variant.precision]
            rows.append((variant, batch, seconds, tokens_per_s, mfu))

    if hasattr(os, "getloadavg"):
        print(f"# load average after: {os.getloadavg()[0]:.2f} (1 min)")
    print()
    print("| model | config | precision | optimizer | ms/step | tokens/s | MFU | ratio minilm/peer |")
    print("|---|---|---|---|---|---|---|---|")
    speed = {(v.model_name, v.size.name, v.precision, v.optimizer_name): tps for v, _, _, tps, _ in rows}
    for variant, batch, seconds, tokens_per_s, mfu in rows:
        key = (variant.size.name, variant.precision, variant.optimizer_name)
        peer = speed.get(("gpt2", *key))
        ratio = f"{tokens_per_s / peer:.2f}x" if variant.model_name.startswith("minilm") and peer else ""
        print(
            f"| {variant.model_name} | {variant.size.name} b{batch} | {variant.precision} | {variant.optimizer_name} | "
            f"{seconds * 1e3:.1f} | {tokens_per_s:,.0f} | {mfu:.1%} | {ratio} |"
        )

    baseline = ("fp32", "foreach")  # the peer as most people run it: float32, AdamW's default
    if "gpt2" in args.models and baseline[0] in args.dtype and baseline[1] in args.optimizer:
        print()
        for size_name in dict.fromkeys(v.size.name for v, *_ in rows):
            peer = speed[("gpt2", size_name, *baseline)]
            best = max((k for k in speed if k[0] == "minilm" and k[1] == size_name), key=speed.get, default=None)
            if best is not None:
                print(
                    f"# {size_name}: fastest minilm ({best[2]}, {best[3]}) is {speed[best] / peer:.2f}x "
                    f"GPT-2 at fp32 + foreach AdamW"
                )

    print()  # each lever alone: the same model and config with one setting changed
    for (model, size_name, precision, optimizer), tokens_per_s in speed.items():
        if precision == "bf16" and (model, size_name, "fp32", optimizer) in speed:
            print(
                f"# {model} {size_name} {optimizer}: bf16 autocast / fp32 = "
                f"{tokens_per_s / speed[(model, size_name, 'fp32', optimizer)]:.2f}x"
            )
        if optimizer == "fused" and (model, size_name, precision, "foreach") in speed:
            print(
                f"# {model} {size_name} {precision}: fused / foreach AdamW = "
                f"{tokens_per_s / speed[(model, size_name, precision, 'foreach')]:.2f}x"
            )


if __name__ == "__main__":
    main()
