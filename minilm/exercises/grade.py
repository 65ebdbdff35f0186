"""Grading: an exercise's tests run by pytest with a function swapped in; each test's outcome and first failure.

    passed(f) = every test of the exercise passes with f in place of the reference (skips, e.g. CUDA-only, aside)

The tests are the normal suite's own functions (one suite, no copy): in the normal run they test the library's
function, here the learner's. pytest runs in this process, quietly, once for any number of (exercise, function)
pairs (`run_batch`), and reports come back as `Outcome`s.

Docs: docs/course.md (how an exercise is graded).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minilm.exercises.exercise import Exercise
from minilm.exercises.swap import replacements_for, swapped
from minilm.settings import PROJECT

TESTS = PROJECT / "tests"


@dataclass(frozen=True)
class Outcome:
    test: str
    """The pytest node id."""
    result: str
    """passed, failed or skipped."""
    message: str = ""
    """For a failure: the first lines of what the test said (shape, which element, expected vs got)."""

    @property
    def property(self) -> str:
        """The property the test proves, in words: its name without test_ and underscores (and its case)."""
        name = self.test.rpartition("::")[2]
        case = re.search(r"\[(.*)\]$", name)
        words = re.sub(r"\[.*\]$", "", name).removeprefix("test_").replace("_", " ")
        return f"{words} [{case.group(1)}]" if case else words


def first_lines(report: Any, n: int = 6) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return "\n".join(text.strip().splitlines()[:n])


def outcome_of(report: Any) -> Outcome | None:
    """A test's outcome from its call report (or from a setup that failed or skipped); None for the other phases."""
    if report.when == "call" or (report.when == "setup" and not report.passed):
        result = "skipped" if report.skipped else "passed" if report.passed else "failed"
        return Outcome(report.nodeid, result, first_lines(report) if report.failed else "")
    return None


def run_tests(exercise: Exercise, function: Callable[..., Any], stop_at_first: bool = False) -> list[Outcome]:
    """Run the exercise's tests with `function` swapped in; raises ValueError when the tests cannot be found or run."""
    outcomes = run_batch([(exercise, function, stop_at_first)])[0]
    if not outcomes:
        raise ValueError(f"no test of {exercise.id} ran: its test ids ({', '.join(exercise.tests)}) are wrong")
    return outcomes


class BatchGrader:
    """A pytest plugin that grades several (exercise, function) pairs in one session: the tests are collected once,
    then each pair runs its tests with its function swapped in (what verify needs: one session, not one per pair)."""

    def __init__(self, jobs: list[tuple[Exercise, Callable[..., Any], bool]]) -> None:
        self.jobs, self.results = jobs, []
        self.errors: list[str] = []

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.errors.append(f"{report.nodeid}: {first_lines(report)}")

    def pytest_runtestloop(self, session: Any) -> bool:
        from _pytest.runner import runtestprotocol

        for exercise, function, stop_at_first in self.jobs:
            items = [item for item in session.items if selected(item.nodeid, exercise.tests)]
            outcomes: list[Outcome] = []
            with swapped(replacements_for(exercise, function), [PROJECT / "minilm", TESTS]):
                for i, item in enumerate(items):
                    nextitem = items[i + 1] if i + 1 < len(items) else None
                    reports = runtestprotocol(item, nextitem=nextitem, log=False)
                    outcomes += [o for o in map(outcome_of, reports) if o is not None]
                    if stop_at_first and any(o.result == "failed" for o in outcomes):
                        session._setupstate.teardown_exact(None)  # what is set up for the next item goes too
                        break
            self.results.append(outcomes)
        return True


def selected(nodeid: str, tests: tuple[str, ...]) -> bool:
    """Whether a collected test is one of an exercise's: the same id, or a case of a test named without its case."""
    return any(nodeid == test or nodeid.startswith(test + "[") for test in tests)


def run_batch(jobs: list[tuple[Exercise, Callable[..., Any], bool]]) -> list[list[Outcome]]:
    """Each job's outcomes: (exercise, function, stop at the first failure), all graded in one pytest session."""
    try:
        import pytest
    except ImportError:
        raise ValueError('exercise mode runs minilm\'s tests: pip install -e ".[test]" (pytest)') from None
    if not TESTS.is_dir():
        raise ValueError(f"exercise mode needs minilm's tests in {TESTS}: work in a clone of the project")

    grader = BatchGrader(jobs)
    files = sorted({node.partition("::")[0] for exercise, _, _ in jobs for node in exercise.tests})
    args = [str(PROJECT / f) for f in files]
    args += ["-p", "no:terminal", "-p", "no:cacheprovider", "-W", "ignore", "--rootdir", str(PROJECT)]
    pytest.main(args, plugins=[grader])
    if grader.errors:
        raise ValueError(f"the exercises' tests could not be collected: {grader.errors[0].splitlines()[0]}")
    return grader.results


def passed(outcomes: list[Outcome]) -> bool:
    """All ran tests passed (skipped ones aside) and at least one ran."""
    ran = [o for o in outcomes if o.result != "skipped"]
    return bool(ran) and all(o.result == "passed" for o in ran)
