"""`train.py prompt-search`: trigger tokens for a template found by the gradient (AutoPrompt), nothing trained.

Docs: docs/prompting.md (automatic prompt search), docs/cli.md.
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import add_settings, command, given
from minilm.prompting import DEFAULT_TEMPLATES
from minilm.tuning.prompt_search import SearchConfig, prompt_search_run

HELP = "search trigger tokens [T] of a template by the gradient (AutoPrompt): a prompt with no parameters"
DESCRIPTION = (
    "Search the trigger tokens of a template on a task's train split (AutoPrompt): each iteration ranks the "
    "vocabulary for one trigger by the first-order estimate -e_w . grad, re-scores the top K on a fresh batch and "
    "keeps the best if it lowers the loss. Writes the found prompt and its dev accuracy next to the hand-written "
    "template's into --out, a folder `classify --from` and `compare` take."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "prompt-search", run, HELP, DESCRIPTION)
    p.add_argument("--base", required=True, metavar="RUN_DIR", help="the pretrained run (its best weights)")
    p.add_argument("--task", required=True, metavar="DIR", help="task folder (train, dev, task.json with label words)")
    p.add_argument(
        "--template",
        metavar="TEXT",
        help='the template with [T] where a trigger token goes, e.g. "{text} [T] [T] [T] It was" (default: the '
        f'task.json template, else "{DEFAULT_TEMPLATES[True]}" (causal) or "{DEFAULT_TEMPLATES[False]}" (masked), '
        "with --triggers [T] put right after {text})",
    )
    p.add_argument(
        "--out", metavar="DIR", help="where prompt.json and search.jsonl go (default: runs/prompt-search-<task>)"
    )
    add_settings(p, SearchConfig)
    p.add_argument("--overwrite", action="store_true", help="replace the searched prompt in --out")


def run(args: argparse.Namespace) -> int:
    settings = given(args, "base", "task", "template", "out")
    prompt_search_run(args.base, args.task, args.out, args.template, SearchConfig(**settings), overwrite=args.overwrite)
    return 0
