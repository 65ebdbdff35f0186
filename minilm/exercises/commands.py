"""`train.py exercise list | start | check | hint`: the exercise command, one function per subcommand.

Docs: docs/course.md (the exercise command).
"""

from __future__ import annotations

import os
from pathlib import Path

from minilm.exercises import learner
from minilm.exercises.grade import Outcome, passed, run_tests
from minilm.exercises.registry import COURSE, exercise


def list_exercises(folder: str | os.PathLike[str] = learner.FOLDER) -> str:
    """One line per exercise: id, status for this learner, docs section, the function to write."""
    rows = [(e.id, learner.status(e, Path(folder)), e.docs, e.target.replace(":", ".")) for e in COURSE]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c:<{width[2]}}  {d}" for a, b, c, d in rows)


def start_exercise(exercise_id: str, file: str | os.PathLike[str] | None = None) -> str:
    """Write the stub and say what to do next."""
    e = exercise(exercise_id)
    path = learner.start(e, file)
    check = f"train.py exercise check {e.id}" + (f" --file {path}" if file else "")
    return (
        f"wrote {path}: write the body of {e.name}, {e.equation}\n"
        f"read {e.docs} for the equation; grade it with `{check}`; a hint: `train.py exercise hint {e.id}`"
    )


def describe(outcome: Outcome, hint: str) -> str:
    mark = "pass" if outcome.result == "passed" else "FAIL"
    line = f"  {mark}  {outcome.property}"
    if outcome.result == "failed":
        line += "".join(f"\n          {text}" for text in outcome.message.splitlines()) + f"\n          hint: {hint}"
    return line


def check_exercise(exercise_id: str, file: str | os.PathLike[str] | None = None) -> tuple[str, bool]:
    """Grade the learner's function with the exercise's tests: (the report, whether every property holds)."""
    e = exercise(exercise_id)
    path = Path(file) if file else learner.default_file(e)
    function = learner.load_function(e, path)
    outcomes = run_tests(e, function)
    ok = passed(outcomes)
    learner.record(e, path, ok)
    failed = [o for o in outcomes if o.result == "failed"]
    lines = [f"{e.id}: {e.name} from {path}, graded by {len(outcomes)} tests"]
    ran = [o for o in outcomes if o.result != "skipped"]
    lines += [describe(o, e.hints[0]) for o in ran]
    if len(ran) < len(outcomes):
        lines.append(f"  ({len(outcomes) - len(ran)} skipped here: they need a GPU)")
    lines.append(
        f"all {len(ran)} properties hold: {e.id} is done" if ok else f"{len(failed)} of {len(ran)} properties fail"
    )
    return "\n".join(lines), ok


def hint(exercise_id: str, n: int = 1) -> str:
    """The n-th hint (1-based); past the last one, where the reference solution is."""
    e = exercise(exercise_id)
    if n < 1:
        raise ValueError(f"hints are numbered from 1; {e.id} has {len(e.hints)}")
    module, _, name = e.target.partition(":")
    where = f"the reference solution is the library's own {name} in {module.replace('.', '/')}.py"
    if n > len(e.hints):
        return f"{e.id} has {len(e.hints)} hints; {where}"
    more = f" (hint {n + 1}: `train.py exercise hint {e.id} {n + 1}`)" if n < len(e.hints) else f"; {where}"
    return f"hint {n} of {len(e.hints)}: {e.hints[n - 1]}{more}"
