"""`train.py eval`: loss per token, perplexity and bits per byte of a run on held-out text.

Docs: docs/training.md (evaluation), docs/cli.md.
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import add_parameter, command
from minilm.cli.generate import add_from
from minilm.training.evaluate import evaluate_run

HELP = "loss per token, perplexity and bits per byte on held-out text"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "eval", run, HELP)
    add_from(p)
    p.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="text files or folders to score whole (default: the run's validation split)",
    )
    add_parameter(p, "--batch-size", evaluate_run, "batch_size", "windows per forward pass", check="positive")


def run(args: argparse.Namespace) -> int:
    m, what, causal = evaluate_run(args.folder, args.weights, args.device, args.data, args.batch_size)
    if causal:
        print(f"{what}: {m['tokens']:,} tokens, {m['bytes']:,} bytes")
        print(
            f"loss {m['loss']:.4f} nats/token | perplexity {m['perplexity']:.2f} | "
            f"{m['bits_per_byte']:.4f} bits per byte"
        )
    else:
        print(f"{what}: {m['tokens']:,} masked tokens")
        print(
            f"masked-token loss {m['loss']:.4f} nats | perplexity {m['perplexity']:.2f} | bits per byte: not defined "
            "for a masked LM (it gives no probability of the whole text)"
        )
    return 0
