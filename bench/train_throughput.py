"""Training tokens/s and MFU of minilm against Hugging Face GPT-2 built at the same size, in one process.

    pip install -e ".[bench]"                                   # transformers, for the peer
    python bench/train_throughput.py --threads 2                # 4x128x64 (batch 32) and 6x384x256 (batch 8)
    python bench/train_throughput.py --configs 6x384x256 --batch 8 --dtype bf16 --optimizer fused
    python bench/train_throughput.py --device cuda --configs 12x768x1024 --vocab 50257 --batch 8 --dtype bf16 \
        --optimizer fused --compile eager compile --peak-size 8192      # GPT-2 small on a GPU

Both models are built from a config (nothing is downloaded) at identical sizes: L layers, width d,
d / head_dim heads, d_ff = 4 d, context T, vocabulary V, output matrix tied to the token embedding,
dropout 0, exact (erf) GELU, PyTorch's fused scaled_dot_product_attention. Each trains as a causal LM
on the same batch of random token ids with the same AdamW settings: minilm with
`causal_lm_loss(model(ids), ids)`, GPT-2 with its own `model(ids, labels=ids).loss` (the same shifted
cross-entropy). One training step is forward + loss + backward + AdamW step + zero_grad.

Precision: `fp32` runs in float32; `bf16` wraps forward and loss in `torch.autocast(device, bfloat16)`
(weights, gradients and AdamW state stay float32: mixed precision). Optimizer: `foreach` is
`torch.optim.AdamW`'s default multi-tensor path, `fused` is `AdamW(fused=True)`.

Compilation (`--compile eager compile`): a `compile` variant wraps its loss function (minilm's
`causal_lm_loss(model(ids), ids)`, GPT-2's `model(ids, labels=ids).loss`) in `torch.compile`; it compiles
during its warm-up steps, whose total time is reported separately (`warm-up s`: count it in a short run).

Timing: every (model, precision, optimizer, compile) variant of a config is built and warmed up, then the
timed steps go round-robin over the variants (so a slow patch of a shared machine hits all of them),
and each variant's ms/step is the median of its timed steps. `benchmark` returns the rows as dicts (`main`
prints them; bench/gpu_check.py imports it); a variant that fails to build, compile or step (out of memory,
say) gets a row with its `error` and the others go on.

MFU (model FLOPs utilisation) = achieved model FLOP/s / peak FLOP/s, with

    model FLOPs per token = 6 N + 12 L T d        (forward + backward, as in the PaLM paper, App. B)

    N = L (12 d^2 + 13 d) + V d: the parameters that take part in a matmul per token: every block's
        weights and biases (4 d^2 + 4 d attention, 8 d^2 + 5 d feed-forward, LayerNorms)
        plus the tied output projection V d; the token and position lookups do no FLOPs and are
        left out. 12 L T d counts Q K^T and P V over all T keys (causal masking's skipped half
        is counted too, by convention).

Peak is *measured* in the same run, on the same device and threads: the FLOP/s of a large square
matmul (2 n^3 FLOPs, n = --peak-size) in each precision of the run (float32, bfloat16), the fastest of 10 runs after \
a second of warm-up; fp32 rows
are divided by the fp32 peak and bf16 rows by the bf16 peak. Both models do the same model FLOPs,
so the ratio column (minilm tokens/s / GPT-2 tokens/s at the same precision, optimizer and compile mode) is
also the MFU ratio. On CUDA, bf16 rows also get an MFU against the GPU's datasheet dense bf16 peak where it is
known (`datasheet_peak`: H100 and H200 SXM, 989.5 TFLOP/s).
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
from typing import Any

import torch

from minilm import ModelConfig, Transformer, causal_lm_loss
from minilm.model.layers import LayerNorm, layer_norm

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
MODES = ("eager", "compile")

# Dense bf16 tensor-core peak of the SXM parts, from NVIDIA's datasheets ("H100 Tensor Core GPU" and "H200 Tensor
# Core GPU", both list BF16 Tensor Core 1,979 TFLOPS "with sparsity"; dense is half of that, 989.5 TFLOP/s).
# The PCIe and NVL parts run at lower clocks and power and have other figures; they get none here.
SXM_DENSE_BF16_FLOPS = 989.5e12


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


def datasheet_peak(device_name: str, precision: str) -> float | None:
    """The datasheet's dense peak FLOP/s for `precision` on the GPU called `device_name`, where known: bf16 on an
    H100 or H200 SXM (989.5e12), else None."""
    name = device_name.upper()
    if precision != "bf16" or not ("H100" in name or "H200" in name) or "PCIE" in name or "NVL" in name:
        return None
    return SXM_DENSE_BF16_FLOPS


def build_minilm(size: Size, attention: str = "sdpa") -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    config = ModelConfig(
        vocab_size=size.vocab_size,
        d_model=size.d_model,
        n_heads=size.n_heads,
        n_layers=size.n_layers,
        d_ff=4 * size.d_model,
        max_len=size.context,
        dropout=0.0,
        causal=True,
        attention=attention,
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


BUILDERS = {
    "minilm": build_minilm,
    "gpt2": build_gpt2,
    "minilm-written-ln": build_minilm_written_out_layer_norm,
    # minilm with its own Triton FlashAttention kernel (CUDA; elsewhere it falls back to sdpa with a warning)
    "minilm-triton": lambda size: build_minilm(size, attention="triton"),
}


@dataclass(frozen=True)
class Spec:
    """What one variant is: model, precision, optimizer and compile mode."""

    model: str
    precision: str
    optimizer: str
    mode: str = "eager"


def specs(models: list[str], precisions: list[str], optimizers: list[str], modes: list[str]) -> list[Spec]:
    """Every combination, grouped as the table reads: precision, then optimizer, then mode, then model."""
    return [
        Spec(model, precision, optimizer, mode)
        for precision in precisions
        for optimizer in optimizers
        for mode in modes
        for model in models
    ]


class Variant:
    """One (model, precision, optimizer, compile mode) combination, ready to take training steps."""

    def __init__(
        self,
        model_name: str,
        size: Size,
        precision: str,
        optimizer: str,
        device: str,
        mode: str = "eager",
        compile_backend: str = "inductor",
    ) -> None:
        self.model_name, self.size, self.precision, self.optimizer_name = model_name, size, precision, optimizer
        self.device, self.mode = device, mode
        model, loss_fn = BUILDERS[model_name](size)
        self.loss_fn = torch.compile(loss_fn, backend=compile_backend) if mode == "compile" else loss_fn
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


def measure_peaks(device: str, precisions: list[str], n: int) -> dict[str, float]:
    """The measured matmul peak FLOP/s of each precision (`measure_peak`; fp32 is float32, bf16 bfloat16)."""
    return {name: measure_peak(device, DTYPES[name] or torch.float32, n) for name in precisions}


def benchmark(
    size: Size,
    batch: int,
    variant_specs: list[Spec],
    device: str,
    steps: int,
    warmup: int,
    peaks: dict[str, float],
    compile_backend: str = "inductor",
) -> list[dict[str, Any]]:
    """Train every variant on one batch of random ids: warm-up steps, then `steps` timed steps round-robin.

    One row (dict) per spec: model, config, batch, precision, optimizer, mode, n_params, flops_per_token, warmup_s
    (the warm-up steps' total time, compilation included), ms_per_step (median), tokens_per_s, mfu (against
    `peaks[precision]`), mfu_datasheet (against `datasheet_peak`, or None) and ratio (minilm-family rows: tokens/s
    over GPT-2's at the same precision, optimizer and mode, or None). A variant that raises while it is built or
    warmed up (out of memory, a compile error) gets `error` (type: first line) instead, and the others go on.
    """
    ids = torch.randint(0, size.vocab_size, (batch, size.context), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    device_name = torch.cuda.get_device_name() if device == "cuda" else ""
    rows: list[dict[str, Any]] = []
    ready: list[tuple[Variant, dict[str, Any]]] = []
    for spec in variant_specs:
        row: dict[str, Any] = dict(
            model=spec.model,
            config=size.name,
            batch=batch,
            precision=spec.precision,
            optimizer=spec.optimizer,
            mode=spec.mode,
            flops_per_token=size.flops_per_token(),
        )
        rows.append(row)
        try:
            variant = Variant(spec.model, size, spec.precision, spec.optimizer, device, spec.mode, compile_backend)
            row["n_params"] = variant.n_params
            row["warmup_s"] = sum(variant.step(ids) for _ in range(warmup))
        except Exception as error:  # one variant's failure is its row's result, not the run's
            row["error"] = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
            if device == "cuda":
                torch.cuda.empty_cache()
            continue
        ready.append((variant, row))
    for _ in range(steps):
        for variant, _row in ready:
            variant.times.append(variant.step(ids))
    for variant, row in ready:
        seconds = statistics.median(variant.times)
        tokens_per_s = batch * size.context / seconds
        achieved = tokens_per_s * size.flops_per_token()
        sheet = datasheet_peak(device_name, variant.precision) if device == "cuda" else None
        row.update(
            ms_per_step=seconds * 1e3,
            tokens_per_s=tokens_per_s,
            mfu=achieved / peaks[variant.precision],
            mfu_datasheet=achieved / sheet if sheet else None,
        )
    speed = {(r["model"], r["precision"], r["optimizer"], r["mode"]): r.get("tokens_per_s") for r in rows}
    for row in rows:
        peer = speed.get(("gpt2", row["precision"], row["optimizer"], row["mode"]))
        own = row.get("tokens_per_s")
        row["ratio"] = own / peer if row["model"].startswith("minilm") and own and peer else None
    return rows


TABLE_HEADER = [
    "| model | config | precision | optimizer | mode | ms/step | tokens/s | MFU | MFU (datasheet) | "
    "ratio minilm/peer | warm-up s |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def table_row(row: dict[str, Any]) -> str:
    """One markdown table line of a `benchmark` row."""
    head = f"| {row['model']} | {row['config']} b{row['batch']} | {row['precision']} | {row['optimizer']} |"
    head += f" {row['mode']} |"
    if "error" in row:
        return f"{head} {row['error']} |"
    sheet = f"{row['mfu_datasheet']:.1%}" if row["mfu_datasheet"] is not None else "-"
    ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
    return (
        f"{head} {row['ms_per_step']:.1f} | {row['tokens_per_s']:,.0f} | {row['mfu']:.1%} | {sheet} | {ratio} | "
        f"{row['warmup_s']:.1f} |"
    )


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
        "--compile",
        nargs="+",
        default=["eager"],
        choices=list(MODES),
        help="compile: the loss function wrapped in torch.compile (its warm-up steps include the compilation)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["minilm", "gpt2"],
        choices=list(BUILDERS),
        help="minilm-written-ln: minilm with the op-by-op LayerNorm instead of the fused kernel; "
        "minilm-triton: minilm with its Triton attention kernel (CUDA)",
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

    peaks = measure_peaks(args.device, args.dtype, args.peak_size)
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
    variant_specs = specs(args.models, args.dtype, args.optimizer, args.compile)
    for text, batch in zip(args.configs, batches):
        size = parse_size(text, args.head_dim, args.vocab)
        print(
            f"# {size.name}: batch {batch}, {size.n_heads} heads, "
            f"model FLOPs/token 6N + 12LTd = {size.flops_per_token() / 1e6:.2f} M (N = {size.matmul_params():,})"
        )
        size_rows = benchmark(size, batch, variant_specs, args.device, args.steps, args.warmup, peaks)
        counts = {row["model"]: row["n_params"] for row in size_rows if "n_params" in row}
        print(f"# {size.name}: parameters {counts}")
        rows += size_rows

    if hasattr(os, "getloadavg"):
        print(f"# load average after: {os.getloadavg()[0]:.2f} (1 min)")
    print()
    print("\n".join(TABLE_HEADER))
    for row in rows:
        print(table_row(row))

    speed = {
        (r["model"], r["config"], r["precision"], r["optimizer"], r["mode"]): r["tokens_per_s"]
        for r in rows
        if "tokens_per_s" in r
    }
    baseline = ("fp32", "foreach", "eager")  # the peer as most people run it: float32, AdamW's default, eager
    if "gpt2" in args.models:
        print()
        for size_name in dict.fromkeys(r["config"] for r in rows):
            peer = speed.get(("gpt2", size_name, *baseline))
            best = max((k for k in speed if k[0] == "minilm" and k[1] == size_name), key=speed.get, default=None)
            if peer and best is not None:
                print(
                    f"# {size_name}: fastest minilm ({', '.join(best[2:])}) is {speed[best] / peer:.2f}x "
                    f"GPT-2 at fp32 + foreach AdamW, eager"
                )

    print()  # each lever alone: the same model and config with one setting changed
    levers = (  # (position in the key, the setting, the one it is compared with, what the line says)
        (2, "bf16", "fp32", "bf16 autocast / fp32"),
        (3, "fused", "foreach", "fused / foreach AdamW"),
        (4, "compile", "eager", "torch.compile / eager"),
    )
    for key, tokens_per_s in speed.items():
        for index, lever, base, text in levers:
            other = key[:index] + (base,) + key[index + 1 :]
            if key[index] == lever and other in speed:
                rest = " ".join(part for i, part in enumerate(key) if i != index)
                print(f"# {rest}: {text} = {tokens_per_s / speed[other]:.2f}x")


if __name__ == "__main__":
    main()
