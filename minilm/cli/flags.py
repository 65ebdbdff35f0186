"""Flags from settings: argparse arguments built from the dataclass fields (minilm.settings) and function defaults.

A flag's default and its help's "(default: ...)" both come from the field (or the library function's parameter),
so the help can never state a default the code does not use. A flag not given is absent from the parsed arguments
(argparse.SUPPRESS), so the library fills it: from its default, or from a resumed run's saved settings.

Docs: docs/cli.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from minilm.settings import check_value, expected, flag_of, settings_fields, value_type

SUPPRESS = argparse.SUPPRESS


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (plus where to find help), exit code 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def show(value: Any) -> str:
    """A default as the help prints it."""
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def command(
    sub: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand whose `run(args) -> int` is called with its parsed arguments."""
    parser = sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".")
    parser.set_defaults(run=run)
    return parser


def with_default(help: str, default: Any) -> str:
    """The help text with "(default: X)", unless there is no default to state (None, or a switch that is off)."""
    if default is None or default is False or default == () or "(default:" in help:
        return help
    return f"{help} (default: {show(default)})"


def checked(kind: type, check: str | None) -> Callable[[str], Any]:
    """An argparse type: read `kind` from the text, then apply the setting's check; otherwise say what was expected."""
    what = expected(check, kind) if check else ("an integer" if kind is int else "a number")

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not check_value(value, kind, check):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


def from_parser(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a library parser that raises ValueError with its message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def add_field(
    group: Any, f: dataclasses.Field, *, dest: str | None = None, help: str | None = None, flag: str | None = None
) -> None:
    """One setting as a flag (absent when not given): its type, check, choices and "(default: ...)" from the field."""
    meta, kind = f.metadata, value_type(f)
    text = (
        (help or meta["help"]) if kind is bool else with_default(help or meta["help"], f.default)
    )  # a switch has none
    kwargs: dict[str, Any] = {"dest": dest or f.name, "default": SUPPRESS, "help": text}
    if kind is bool:
        kwargs["action"] = "store_false" if f.default is True else "store_true"
    else:
        if meta.get("parse"):
            kwargs["type"] = from_parser(meta["parse"])
        elif kind in (int, float):
            kwargs["type"] = checked(kind, meta.get("check"))
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if isinstance(f.default, tuple):
            kwargs["nargs"] = "+"
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
    group.add_argument(flag or flag_of(f), **kwargs)


def add_settings(group: Any, cls: type, skip: Iterable[str] = (), help: dict[str, str] | None = None) -> None:
    """Every command-line setting of dataclass `cls` as a flag (fields with cli=False and those in `skip` left out)."""
    for f in settings_fields(cls):
        if f.metadata["cli"] and f.name not in skip:
            add_field(group, f, help=(help or {}).get(f.name))


def default_of(function: Callable[..., Any], name: str) -> Any:
    """A library function's default for parameter `name`: what a flag that mirrors it defaults to."""
    return inspect.signature(function).parameters[name].default


def add_parameter(
    group: Any,
    flag: str,
    function: Callable[..., Any],
    name: str,
    help: str,
    *,
    kind: type = int,
    check: str | None = None,
    **kwargs: Any,
) -> None:
    """A flag whose default is the library function's own default for that parameter."""
    default = default_of(function, name)
    if "choices" not in kwargs and kind in (int, float):
        kwargs["type"] = checked(kind, check)
    group.add_argument(flag, dest=name, default=default, help=with_default(help, default), **kwargs)


def given(args: argparse.Namespace, *leave_out: str) -> dict[str, Any]:
    """The settings named on the command line (flags not given are absent), without the command's own switches."""
    skip = {"command", "run", "resume", "overwrite", *leave_out}
    return {k: v for k, v in vars(args).items() if k not in skip}
