"""`train.py exercise list | start ID | check ID | hint ID [N]`: learn by writing an equation and letting the tests
grade it (minilm/exercises/).

Docs: docs/course.md (the exercise command).
"""

from __future__ import annotations

import argparse

from minilm.cli.flags import command
from minilm.exercises import check_exercise, hint, list_exercises, start_exercise

HELP = "learn by doing: write an equation of the library and let its tests grade it"
DESCRIPTION = """Exercise mode: each exercise is one function of the library, graded by its tests with your version in.

    python train.py exercise list                     the exercises and your status
    python train.py exercise start attention          writes exercises/attention.py to fill in (never overwrites)
    python train.py exercise check attention          grades it: exit 0 when every property holds, 1 otherwise
    python train.py exercise hint attention 2         the second hint
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "exercise", run, HELP, DESCRIPTION)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    actions.add_parser("list", help="each exercise, its docs section and your status")
    for name, text in (("start", "write the stub file of an exercise"), ("check", "grade your function")):
        a = actions.add_parser(name, help=text)
        a.add_argument("id", metavar="ID", help="the exercise (train.py exercise list)")
        a.add_argument("--file", metavar="PATH", help="your file (default: exercises/<ID>.py)")
    a = actions.add_parser("hint", help="a hint; after the last, where the reference solution is")
    a.add_argument("id", metavar="ID", help="the exercise")
    a.add_argument("n", metavar="N", type=int, nargs="?", default=1, help="which hint (default: 1)")


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(list_exercises())
    elif args.action == "start":
        print(start_exercise(args.id, args.file))
    elif args.action == "hint":
        print(hint(args.id, args.n))
    else:
        report, passed = check_exercise(args.id, args.file)
        print(report)
        return 0 if passed else 1
    return 0
