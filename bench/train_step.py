"""Tokens per second of a whole training step (forward, loss, backward, AdamW) for each attention backend.

    python bench/train_step.py                         # d 256, 4 heads, 4 layers, V 8192, causal, on CPU
    python bench/train_step.py --masked --seq-len 128  # the bidirectional model with the MLM loss

Backends run in turn in one process on the same model weights and batch; the last column is each
backend's throughput as a ratio to `math`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from minilm import ModelConfig, Transformer, causal_lm_loss, mask_tokens, masked_lm_loss
from minilm.model.attention import BACKENDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--masked", action="store_true", help="bidirectional model with the masked LM loss")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    # the sizes docs/performance.md measured (ModelConfig's defaults before the library took the default run's sizes)
    sizes = {"vocab_size": 8192, "d_model": 256, "n_heads": 4, "n_layers": 4, "d_ff": 1024}
    base = ModelConfig(**sizes, causal=not args.masked, max_len=max(args.seq_len, 256), dropout=0.0)
    ids = torch.randint(7, base.vocab_size, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0)).to(
        args.device
    )
    print(
        f"# device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"objective={'masked' if args.masked else 'causal'} batch={args.batch}x{args.seq_len} "
        f"d={base.d_model} h={base.n_heads} L={base.n_layers}"
    )
    print("| backend | ms / step | tokens/s | speed vs math |")
    print("|---|---|---|---|")
    results = {}
    for backend in BACKENDS:
        model = Transformer(dataclasses.replace(base, attention=backend), seed=0).to(args.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        generator = torch.Generator(device=args.device).manual_seed(0)

        def step(model=model, optimizer=optimizer, generator=generator) -> None:
            if args.masked:
                corrupted, labels = mask_tokens(ids, base.vocab_size, generator)
                loss = masked_lm_loss(model(corrupted), labels)
            else:
                loss = causal_lm_loss(model(ids), ids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if args.device == "cuda":
                torch.cuda.synchronize()

        step()  # warm-up
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        results[backend] = statistics.median(times)
    for backend, seconds in results.items():
        print(
            f"| {backend} | {seconds * 1e3:.1f} | {args.batch * args.seq_len / seconds:,.0f} | "
            f"{results['math'] / seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
