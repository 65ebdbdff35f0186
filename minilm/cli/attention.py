"""`train.py attention`: each head's attention over the tokens of a text, as a PNG (needs matplotlib).

Docs: docs/cli.md (attention), docs/attention.md (the attention map).
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import command, default_of, with_default
from minilm.cli.generate import add_from
from minilm.experiments.attention_map import draw_attention

HELP = "draw each head's attention over the tokens of a text to a PNG (needs matplotlib)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "attention", run, HELP)
    add_from(p)
    p.add_argument("--text", required=True, help='the text whose attention to draw, e.g. "To be, or not to be"')
    layer = default_of(draw_attention, "layer")
    help_layer = "the layer to draw: 1..L, last, or all (one row of heads per layer)"
    p.add_argument("--layer", default=layer, metavar="L", help=with_default(help_layer, layer))
    p.add_argument(
        "--output",
        metavar="PNG",
        help="where to write the picture; an existing file is replaced only if attention drew it "
        "(default: attention-L<layer>.png in the current folder)",
    )


def run(args: argparse.Namespace) -> int:
    path = draw_attention(args.folder, args.text, args.layer, args.output, args.weights, args.device)
    print(f"wrote {path}")
    return 0
