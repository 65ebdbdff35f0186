"""`train.py import`: a Hugging Face GPT-2 folder read back into a run folder (transformers not needed).

Docs: docs/export.md, docs/cli.md.
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import command
from minilm.training.huggingface import import_run

HELP = "read a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer.json) into a run folder"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "import", run, HELP)
    p.add_argument(
        "--from", dest="folder", required=True, metavar="HF_DIR", help="a GPT-2 folder written by save_pretrained"
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder to write (new or empty)")
    p.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run (replaces only its run files)"
    )


def run(args: argparse.Namespace) -> int:
    out = import_run(args.folder, args.out, overwrite=args.overwrite)
    print(f"wrote {out}/ (a run: generate, eval --data and tune --base read it)")
    return 0
