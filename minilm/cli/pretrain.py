"""`train.py pretrain` (also `python train.py` with no command): pretrain a model on text files.

Docs: docs/training.md, docs/cli.md.
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import SUPPRESS, add_settings, command, given
from minilm.model import ModelConfig
from minilm.training import CorpusConfig, TrainConfig, pretrain
from minilm.training.presets import PRESETS

HELP = "pretrain a model on text files (the default command)"
DESCRIPTION = "Pretrain a model; flags left out keep their defaults, or the saved run's values with --resume."


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "pretrain", run, HELP, DESCRIPTION)
    p.add_argument(
        "--preset",
        default=SUPPRESS,
        choices=list(PRESETS),
        help="start from a named set of settings, each described in docs/training.md#presets; flags given beside "
        "it override it (default: default)",
    )
    add_settings(p.add_argument_group("data"), CorpusConfig)
    g = p.add_argument_group("model")
    g.add_argument("--config", metavar="FILE.json", help="a model config.json; flags given here override it")
    add_settings(g, ModelConfig)
    g = p.add_argument_group("training")
    add_settings(g, TrainConfig)
    g.add_argument("--out", default=SUPPRESS, metavar="DIR", help="run directory (default: runs/<objective>)")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out exactly where it stopped")
    g.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run (replaces only its run files)"
    )


def run(args: argparse.Namespace) -> int:
    pretrain(given(args, "config"), resume=args.resume, overwrite=args.overwrite, config_file=args.config)
    return 0
