"""`train.py instruct`: instruction-tune a causal run on {instruction, input, output} JSONL, then answer; every weight
(--method full) or one tuning method's tensors on the frozen base, with the method flags of `tune`.

Docs: docs/prompting.md (instruction data and the instruct command), docs/cli.md.
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import add_settings, command, given
from minilm.cli.tune import add_method_settings
from minilm.tuning.instruct import DEFAULT_DATA, InstructConfig, instruct
from minilm.tuning.instructions import Instruction
from minilm.tuning.tune import APPLIES

HELP = "instruction-tune a causal run on {instruction, input, output} JSONL, then answer"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "instruct", run, HELP)
    p.add_argument("--base", required=True, metavar="RUN_DIR", help="the pretrained causal run to start from")
    p.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        metavar="DIR",
        help="folder with train.jsonl and dev.jsonl (default: data/instructions)",
    )
    p.add_argument("--out", metavar="DIR", help="where the tuned run goes (default: runs/instruct)")
    add_settings(p.add_argument_group("training"), InstructConfig, skip=("time_budget",))
    add_method_settings(p.add_argument_group("method settings (as in tune)"))
    p.add_argument(
        "--instruction", help="an instruction to answer at the end (default: one from dev_new_phrasing.jsonl)"
    )
    p.add_argument("--input", default="", help="its input")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out where it stopped")
    p.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds an instruction-tuned run"
    )


def run(args: argparse.Namespace) -> int:
    settings = given(args, "base", "data", "out", "instruction", "input")
    method_settings = {k: settings.pop(k) for k in list(settings) if k in APPLIES}
    question = Instruction(args.instruction, args.input, "") if args.instruction else None
    instruct(
        args.base,
        args.out,
        args.data,
        InstructConfig(**settings),
        method_settings=method_settings,
        question=question,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    return 0
