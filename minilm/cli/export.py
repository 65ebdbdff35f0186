"""`train.py export`: a causal run as a Hugging Face GPT-2 folder that transformers loads (transformers not needed).

Docs: docs/export.md, docs/cli.md.
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import add_parameter, command
from minilm.training.huggingface import export_run

HELP = "write a causal run as a Hugging Face GPT-2 folder (AutoModelForCausalLM, AutoTokenizer)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "export", run, HELP)
    p.add_argument(
        "--from", dest="folder", required=True, metavar="RUN_DIR", help="a causal run written by pretrain or instruct"
    )
    p.add_argument("--to", required=True, metavar="DIR", help="the Hugging Face folder to write (new or empty)")
    add_parameter(p, "--weights", export_run, "weights", "best validation loss or last step", choices=["best", "last"])
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export in --to (only the files export writes)"
    )


def run(args: argparse.Namespace) -> int:
    to = export_run(args.folder, args.to, args.weights, overwrite=args.overwrite)
    print(f"wrote {to}/ as GPT2LMHeadModel: AutoModelForCausalLM.from_pretrained({str(to)!r}) loads it")
    return 0
