"""`train.py classify`: classify texts, or report on a task split, with a tuned model folder.

Docs: docs/tuning.md, docs/cli.md.
"""

from __future__ import annotations

import argparse
import json

from minilm.cli.flags import add_parameter, command
from minilm.training.device import DEVICES
from minilm.tuning.classify import classify_texts, report_split
from minilm.tuning.metrics import format_report
from minilm.tuning.prompt_search import load_classifier

HELP = "classify texts, or evaluate a task split, with a tuned model"
DESCRIPTION = "Classify texts with a model written by `tune`, or score it on a split of a task folder."


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "classify", run, HELP, DESCRIPTION)
    p.add_argument("--from", dest="tuned", required=True, metavar="DIR", help="tuned model folder written by tune")
    p.add_argument("--base", metavar="RUN_DIR", help="the base run (default: the base_run recorded in DIR/tuned.json)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", action="append", metavar="TEXT", help="a text to classify; repeat for several")
    what.add_argument(
        "--task", metavar="DIR", help="a task folder: report accuracy, macro-F1 and the confusion matrix on --split"
    )
    add_parameter(p, "--split", report_split, "split", "which split of --task", choices=["dev", "test"])
    p.add_argument(
        "--report",
        metavar="FILE",
        help="where the report JSON goes; an existing file is replaced only if "
        "classify wrote it (default: DIR/eval-<split>.json)",
    )
    add_parameter(p, "--batch-size", report_split, "batch_size", "texts per forward pass", check="positive")
    add_parameter(p, "--device", load_classifier, "device", "auto = cuda when available", choices=list(DEVICES))


def run(args: argparse.Namespace) -> int:
    tuned = load_classifier(args.tuned, args.base, args.device)
    labels = tuned.model.labels
    if args.text is not None:
        for text, p in zip(args.text, classify_texts(tuned, args.text, args.batch_size)):
            best = max(range(len(p)), key=p.__getitem__)
            print(
                f"{labels[best]} | "
                + "  ".join(f"p({label})={q:.3f}" for label, q in zip(labels, p))
                + f" | {json.dumps(text, ensure_ascii=False)}"
            )
        return 0
    report, path = report_split(tuned, args.tuned, args.task, args.split, args.report, args.batch_size)
    print(format_report(report, f"{report['task']} {args.split}"))
    print(f"report: {path}")
    return 0
