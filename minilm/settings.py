"""One source for every setting: a dataclass field that carries its own help text, from which the command line is built.

    lr: float = setting(2e-3, "peak learning rate", check="positive")

The default lives once, in the dataclass; `minilm.cli` turns each field into a flag (`--lr`) whose help ends with
"(default: 2e-3)" printed from that same default, so the help can never state a default the code does not use.
A field's metadata may name the flag (`flag="--width"`), its check (`positive`, `non_negative`, `fraction`,
`probability`), its choices, a parser for text (`parse`), and a metavar.

Docs: docs/cli.md (how flags, defaults and saved settings fit together).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
"""The project folder: the default corpus is PROJECT/data, default outputs go to PROJECT/runs."""
RUNS = PROJECT / "runs"

CHECKS: dict[str, tuple[Callable[[Any], bool], str, str]] = {  # name: (test, as an integer, as a number)
    "positive": (lambda v: v > 0, "a positive integer", "a number > 0"),
    "non_negative": (lambda v: v >= 0, "an integer >= 0", "a number >= 0"),
    "fraction": (lambda v: 0 <= v < 1, "", "a number in [0, 1)"),
    "probability": (lambda v: 0 < v < 1, "", "a number in (0, 1)"),
}


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    check: str | None = None,
    choices: Sequence[Any] | None = None,
    type: type | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with its help text and how the command line reads it (see the module docstring).

    type: the value's type when the default is None (otherwise it is the default's type).
    parse: text -> value, raising ValueError with a message (for values no plain type reads).
    cli: False for a field the command line does not set itself.
    """
    if check is not None and check not in CHECKS:
        raise ValueError(f"unknown check {check!r}: use one of {', '.join(CHECKS)}")
    metadata = {
        "help": help,
        "flag": flag,
        "check": check,
        "choices": tuple(choices) if choices else None,
        "type": type,
        "parse": parse,
        "metavar": metavar,
        "cli": cli,
    }
    if isinstance(default, (list, dict, set)):
        raise ValueError("a mutable default would be shared between instances: use a tuple")
    return dataclasses.field(default=default, metadata=metadata)


def override(cls: type, name: str, default: Any, help: str | None = None) -> Any:
    """The field `name` of dataclass `cls` with another default (and help): how a subclass sets its defaults."""
    field = cls.__dataclass_fields__[name]
    metadata = dict(field.metadata)
    if metadata.get("type") is None and field.default is not None and not isinstance(field.default, tuple):
        metadata["type"] = type(field.default)  # a default of None keeps the setting's type (--lr stays a number)
    if help is not None:
        metadata["help"] = help
    return dataclasses.field(default=default, metadata=metadata)


def settings_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` that carry a help text (written with `setting`)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def value_type(f: dataclasses.Field) -> type | None:
    """The type of a setting's values: the declared `type`, else the default's (a tuple's: its items')."""
    if f.metadata.get("type"):
        return f.metadata["type"]
    if isinstance(f.default, tuple):
        return type(f.default[0]) if f.default else str
    return type(f.default) if f.default is not None else None


def expected(check: str, kind: type | None) -> str:
    """What a check asks for, in words: "a positive integer", "a number in [0, 1)"."""
    _, as_int, as_number = CHECKS[check]
    return as_int if kind is int and as_int else as_number


def check_value(value: Any, kind: type | None, check: str | None) -> bool:
    """Whether `value` has the setting's type and passes its check."""
    if value is None:
        return True
    if kind in (bool, str):
        return isinstance(value, kind)
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return False
    if kind is int and not isinstance(value, int):
        return False
    return check is None or CHECKS[check][0](value)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a setting: its `flag`, else --name-with-dashes."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def check_fields(instance: Any) -> None:
    """Apply every field's type, check and choices to a dataclass instance: one line naming the flag on failure."""
    for f in settings_fields(type(instance)):
        value, kind, check, choices = (
            getattr(instance, f.name),
            value_type(f),
            f.metadata["check"],
            f.metadata["choices"],
        )
        items = value if isinstance(f.default, tuple) and isinstance(value, (tuple, list)) else [value]
        for item in items:
            if not check_value(item, kind, check):
                what = expected(check, kind) if check else ("an integer" if kind is int else f"a {kind.__name__}")
                raise ValueError(f"{flag_of(f)} must be {what}, got {item!r}")
            if choices and item is not None and item not in choices:
                raise ValueError(f"{flag_of(f)} must be one of {', '.join(map(str, choices))}, got {item!r}")
