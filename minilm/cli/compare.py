"""`train.py compare`: zero-shot, few-shot and every tuning method on one base and task, as a table.

Docs: docs/results.md, docs/prompting.md (the comparison command), docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import shlex

from minilm.cli.flags import add_settings, command, given
from minilm.experiments.compare import CompareConfig, compare_run

HELP = "compare zero-shot, few-shot and every tuning method on one base and task"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "compare", run, HELP)
    p.add_argument("--base", required=True, metavar="RUN_DIR", help="the pretrained run")
    p.add_argument(
        "--task", required=True, metavar="DIR", help="task folder (train/dev[/test], task.json with label words)"
    )
    p.add_argument("--out", metavar="DIR", help="where results.md and results.json go (default: runs/compare-<task>)")
    add_settings(p, CompareConfig)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: one seed, 4 steps, 2 search iterations, 32 dev examples (for tests)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier compare in --out")


def command_line(args: argparse.Namespace) -> str:
    """The command as given, for the table's header."""
    words = ["python", "train.py", "compare", "--base", args.base, "--task", args.task] + (
        ["--out", args.out] if args.out else []
    )
    for key, value in given(args, "base", "task", "out", "quick").items():
        words.append("--" + key.replace("_", "-"))
        words += [
            json.dumps(v) if key == "template" else str(v) for v in (value if isinstance(value, list) else [value])
        ]
    return shlex.join(words) + (" --quick" if args.quick else "")


def run(args: argparse.Namespace) -> int:
    settings = {
        k: tuple(v) if isinstance(v, list) else v for k, v in given(args, "base", "task", "out", "quick").items()
    }
    compare_run(
        args.base,
        args.task,
        args.out,
        CompareConfig(**settings),
        quick=args.quick,
        overwrite=args.overwrite,
        command=command_line(args),
    )
    return 0
