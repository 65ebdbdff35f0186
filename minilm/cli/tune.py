"""`train.py tune`: tune a pretrained run for a task folder with any method; its flags come from the registry.

Every method setting is one flag generated from the method's settings dataclass (minilm.tuning.registry): a flag
shared by two methods (--prompt-len) is one flag, and its help names the methods it applies to and its default.

Docs: docs/tuning.md, docs/cli.md.
"""

from __future__ import annotations

import argparse
import dataclasses

from minilm.cli.flags import SUPPRESS, add_field, add_settings, checked, command, given
from minilm.tuning.registry import METHODS, setting_key
from minilm.tuning.trainer import TuneConfig
from minilm.tuning.tune import APPLIES, TuneTarget, tune


def lr_help() -> str:
    rates = ", ".join(f"{name} {spec.lr:g}" for name, spec in METHODS.items())
    return f"peak learning rate (default: per method, {rates})"


def min_lr_help() -> str:
    ends = ", ".join(
        f"{name} {'none (constant)' if spec.min_lr is None else f'{spec.min_lr:g}'}" for name, spec in METHODS.items()
    )
    return f"learning rate at the end of the cosine decay (default: per method, {ends})"


def add_method_settings(group: argparse._ArgumentGroup) -> None:
    """One flag per method setting key, once even when several methods share it."""
    done: set[str] = set()
    for spec in METHODS.values():
        flags = getattr(spec.settings, "FLAGS", None)
        if flags:  # one flag per recipe, whose value is k (layer freezing)
            recipes = group.add_mutually_exclusive_group()
            defaults = spec.settings()
            for flag, text in flags.values():
                recipes.add_argument(
                    flag,
                    type=checked(int, "non_negative"),
                    default=SUPPRESS,
                    metavar="K",
                    dest=flag.removeprefix("--").replace("-", "_"),
                    help=f"{spec.name}: {text} (default when neither is given: "
                    f"{flags[defaults.recipe][0]} {defaults.k})",
                )
            continue
        for f in dataclasses.fields(spec.settings):
            key = setting_key(f)
            if key not in done and f.metadata["cli"]:  # a field the command line does not set has no flag
                done.add(key)
                add_field(group, f, dest=key, help=f"{', '.join(APPLIES[key])}: {f.metadata['help']}")


HELP = "tune a pretrained run for a classification task (prompt, prefix, LoRA, ...)"
DESCRIPTION = (
    "Tune a pretrained run on a task folder (train.tsv, dev.tsv, optional test.tsv and task.json), with early "
    "stopping on dev. Flags left out keep their defaults, or the saved tune's values with --resume."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "tune", run, HELP, DESCRIPTION)
    add_settings(p.add_argument_group("what to tune"), TuneTarget)
    add_method_settings(p.add_argument_group("method settings"))
    g = p.add_argument_group("training")
    add_settings(g, TuneConfig, help={"lr": lr_help(), "min_lr": min_lr_help()})
    g.add_argument("--resume", action="store_true", help="continue the tune saved in --out where it stopped")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an --out that holds a tuned model (replaces only its tune files)",
    )


def run(args: argparse.Namespace) -> int:
    tune(given(args), resume=args.resume, overwrite=args.overwrite)
    return 0
