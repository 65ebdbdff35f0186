"""`train.py sweep`: `compare` on pretrained bases of several sizes, one table and the method-vs-size picture.

    python train.py sweep --bases RUN RUN RUN --task TASK_DIR --out DIR [compare's flags]
    python train.py sweep --plot-only DIR          # redraw DIR/method_vs_size.png from DIR/sweep.json

Docs: docs/cli.md (sweep), docs/results.md (method against base size).
"""

from __future__ import annotations

import argparse
import json
import shlex

from minilm.cli.flags import add_settings, command, given
from minilm.experiments.compare import CompareConfig
from minilm.experiments.sweep import plot_sweep, size_sweep

HELP = "compare on bases of several sizes: one table and dev accuracy against base size as a PNG (needs matplotlib)"
OWN = ("bases", "task", "out", "quick", "plot_only")
"""The command's own flags; the rest are compare's settings."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "sweep", run, HELP)
    p.add_argument("--bases", nargs="+", metavar="RUN_DIR", help="the pretrained runs, at least 2, of one objective")
    p.add_argument("--task", metavar="DIR", help="task folder (train/dev[/test], task.json with label words)")
    p.add_argument(
        "--out", metavar="DIR", help="where sweep.json, sweep.md, method_vs_size.png and a compare folder per base go"
    )
    add_settings(p, CompareConfig)
    p.add_argument("--quick", action="store_true", help="a smoke run: one seed, 4 steps, 32 dev examples (for tests)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier sweep in --out")
    p.add_argument(
        "--plot-only",
        metavar="DIR",
        help="only redraw DIR/method_vs_size.png from DIR/sweep.json (an earlier sweep's --out); runs nothing",
    )


def command_line(args: argparse.Namespace) -> str:
    """The command as given, for sweep.md and each base's table."""
    words = ["python", "train.py", "sweep", "--bases", *args.bases, "--task", args.task, "--out", args.out]
    for key, value in given(args, *OWN).items():
        words.append("--" + key.replace("_", "-"))
        words += [
            json.dumps(v) if key == "template" else str(v) for v in (value if isinstance(value, list) else [value])
        ]
    return shlex.join(words) + (" --quick" if args.quick else "")


def run(args: argparse.Namespace) -> int:
    if args.plot_only:
        others = [k for k, v in given(args, "plot_only").items() if v not in (None, False)]
        if others or args.overwrite:
            flags = ", ".join("--" + k.replace("_", "-") for k in [*others, *(["overwrite"] if args.overwrite else [])])
            raise ValueError(f"--plot-only redraws an earlier sweep and takes no other flags: leave out {flags}")
        print(f"wrote {plot_sweep(args.plot_only)}")
        return 0
    missing = [f"--{k}" for k in ("bases", "task", "out") if not getattr(args, k)]
    if missing:
        raise ValueError(f"{', '.join(missing)} needed: a sweep runs on --bases, --task and --out (or --plot-only DIR)")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in given(args, *OWN).items()}
    size_sweep(
        args.bases,
        args.task,
        args.out,
        CompareConfig(**settings),
        quick=args.quick,
        overwrite=args.overwrite,
        command=command_line(args),
    )
    return 0
