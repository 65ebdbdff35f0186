"""`train.py generate` and `train.py fill-mask`: use a pretrained (or tuned) model.

Docs: docs/generation.md, docs/cli.md.
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import add_parameter, command
from minilm.model import complete, fill_mask, generate
from minilm.model.generate import format_candidates
from minilm.training import load_run
from minilm.training.device import DEVICES
from minilm.tuning.instructions import Instruction, answer
from minilm.tuning.tuned import TunedModel, is_tuned, load_tuned


def add_from(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from",
        dest="folder",
        required=True,
        metavar="DIR",
        help="run directory written by pretrain (or a tuned folder)",
    )
    add_parameter(p, "--weights", load_run, "weights", "best validation loss or last step", choices=["best", "last"])
    add_parameter(p, "--device", load_run, "device", "auto = cuda when available", choices=list(DEVICES))


HELP_GENERATE = "continue a prompt with a causal model"
HELP_FILL_MASK = "predict the [MASK] tokens of a text with a masked model"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "generate", run_generate, HELP_GENERATE)
    add_from(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="text to continue")
    what.add_argument(
        "--instruction",
        help="an instruction for an instruction-tuned run or tuned folder: answered greedily up to [EOS] in the "
        "instruct layout (Instruction: ... Input: ... Output:)",
    )
    p.add_argument("--input", default="", help="the instruction's input (with --instruction)")
    add_parameter(
        p,
        "--max-new-tokens",
        complete,
        "max_new_tokens",
        "tokens to add; past the context the model sees the last half-context",
        check="positive",
    )
    add_parameter(p, "--temperature", complete, "temperature", "0 = greedy", kind=float, check="non_negative")
    add_parameter(p, "--top-k", generate, "top_k", "keep the k most likely tokens", check="positive")
    add_parameter(
        p,
        "--top-p",
        generate,
        "top_p",
        "keep the smallest set of tokens with probability >= p",
        kind=float,
        check="positive",
    )
    add_parameter(p, "--seed", complete, "seed", "sampling seed", check="non_negative")

    p = command(sub, "fill-mask", run_fill_mask, HELP_FILL_MASK)
    add_from(p)
    p.add_argument("--text", required=True, help='text with one or more [MASK], e.g. "To be, or not to [MASK]"')
    add_parameter(p, "--top-k", fill_mask, "top_k", "candidates per mask", check="positive")


def run_generate(args: argparse.Namespace) -> int:
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}
    if args.input and args.instruction is None:
        raise ValueError("--input goes with --instruction; to continue a text use --prompt alone")
    if is_tuned(args.folder):  # a tuned model: its base, with the tuned tensors applied
        tuned = load_tuned(args.folder, None, args.device)
        model, tokenizer = tuned.model, tuned.tokenizer
    else:
        model, tokenizer, _ = load_run(args.folder, args.weights, args.device)
    if args.instruction is not None:
        print(answer(model, tokenizer, Instruction(args.instruction, args.input, ""), args.max_new_tokens))
    elif isinstance(model, TunedModel):
        print(model.complete(tokenizer, args.prompt, args.max_new_tokens, **sampling))
    else:
        print(complete(model, tokenizer, args.prompt, args.max_new_tokens, **sampling))
    return 0


def run_fill_mask(args: argparse.Namespace) -> int:
    model, tokenizer, _ = load_run(args.folder, args.weights, args.device)
    print(format_candidates(fill_mask(model, tokenizer, args.text, top_k=args.top_k)))
    return 0
