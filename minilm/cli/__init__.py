"""Layer 6, the command line: one module per command group, each with add_parser(subparsers) and run(args) -> int.

    python train.py [pretrain] ...    python -m minilm ...    minilm ...       (the same commands)

A command parses its flags and calls one library function; every mistake in the input ends with one line saying
what is wrong, exit code 2, and no traceback.

Docs: docs/cli.md.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from minilm.cli import (
    attention,
    classify,
    compare,
    evaluate,
    exercise,
    export,
    generate,
    import_run,
    instruct,
    plot,
    pretrain,
    prompt_search,
    sweep,
    tune,
)
from minilm.cli.flags import Parser

COMMANDS = (
    pretrain,
    generate,
    evaluate,
    plot,
    attention,
    tune,
    classify,
    prompt_search,
    compare,
    sweep,
    instruct,
    export,
    import_run,
    exercise,
)
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
DESCRIPTION = """minilm's command line: pretrain a model, then generate, fill masks, evaluate and plot; \
tune it for a task and classify.

    python train.py                                   # pretrain the default causal model on data/, then sample
    python train.py pretrain --objective masked       # the masked-LM variant, ending with a fill-mask demo
    python train.py generate --from runs/causal --prompt "ROMEO:"
    python train.py fill-mask --from runs/masked --text "To be, or not to [MASK]"
    python train.py eval --from runs/causal           # loss, perplexity and bits per byte
    python train.py plot --from runs/causal           # loss, lr (and dev metrics) to runs/causal/loss.png
    python train.py attention --from runs/causal --text "To be, or not to be"   # each head's map (attention-L4.png)
    torchrun --nproc_per_node=2 train.py pretrain     # data parallel (gloo on CPU, NCCL on CUDA)
    python train.py tune --base runs/causal --method prompt --task TASK_DIR     # tune for a classification task
    python train.py classify --from runs/tune-TASK-prompt --text "..."          # or --task TASK_DIR --split dev
    python train.py prompt-search --base runs/causal --task TASK_DIR     # trigger tokens by the gradient (AutoPrompt)
    python train.py instruct --base runs/causal      # instruction tuning, then an answer to an unseen instruction
    python train.py compare --base RUN_DIR --task TASK_DIR                      # every method side by side
    python train.py export --from runs/causal --to runs/causal-hf               # a GPT-2 folder transformers loads
    python train.py import --from runs/causal-hf --out runs/from-hf             # a GPT-2 folder back into a run

Every mistake in the input ends with one line saying what is wrong, exit code 2, and no traceback.
"""


def build_parser(prog: str = "train.py") -> Parser:
    parser = Parser(prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    """Run one command; returns its exit code (2 for a mistake in the input, 130 when interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["pretrain", *argv]  # `python train.py [flags]` means pretrain
    args = build_parser(prog).parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
            return args.run(args)
    except USER_ERRORS as e:
        print(f"{prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def console() -> int:
    """The `minilm` console script ([project.scripts] in pyproject.toml)."""
    return main(prog="minilm")
