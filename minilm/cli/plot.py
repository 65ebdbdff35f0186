"""`train.py plot`: a run's loss, learning rate and dev metrics from its metrics.jsonl, as one PNG (needs matplotlib).

Docs: docs/cli.md (plot).
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import command
from minilm.training.plot import plot_run

HELP = "draw the run's loss, learning rate and dev metrics over steps to DIR/loss.png (needs matplotlib)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "plot", run, HELP)
    p.add_argument(
        "--from", dest="folder", required=True, metavar="DIR", help="run directory (pretrain, tune or instruct)"
    )
    p.add_argument(
        "--output",
        metavar="PNG",
        help="where to write the picture; an existing file is replaced only if plot drew it (default: DIR/loss.png)",
    )


def run(args: argparse.Namespace) -> int:
    print(f"wrote {plot_run(args.folder, args.output)}")
    return 0
