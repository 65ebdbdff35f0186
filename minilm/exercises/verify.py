"""The grader graded: every exercise must pass with its reference and its alternatives, and fail with every mutant.

    python -m minilm.exercises.verify [ID ...]      prints one JSON object: id -> {implementation: passed}

tests/test_exercises.py runs it once, in a process of its own (the tests run by pytest inside it).

Docs: docs/course.md (mutants prove the grader).
"""

from __future__ import annotations

import json
import sys

from minilm.exercises.exercise import Exercise
from minilm.exercises.grade import passed, run_tests
from minilm.exercises.registry import EXERCISES


def verify(exercise: Exercise) -> dict[str, bool]:
    """{"reference": passed, "<alternative>": passed, "<mutant>": passed} for one exercise (a mutant stops early)."""
    results = {"reference": passed(run_tests(exercise, exercise.reference))}
    for alternative in exercise.alternatives:
        results[f"alternative:{alternative.__name__}"] = passed(run_tests(exercise, alternative))
    for mutant in exercise.mutants:
        results[f"mutant:{mutant.__name__}"] = passed(run_tests(exercise, mutant, stop_at_first=True))
    return results


def main(ids: list[str]) -> int:
    print(json.dumps({i: verify(EXERCISES[i]) for i in (ids or EXERCISES)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
