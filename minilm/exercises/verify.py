"""The grader graded: every exercise must pass with its reference and its alternatives, and fail with every mutant.

    python -m minilm.exercises.verify [ID ...]      prints one JSON object: id -> {implementation: passed}

tests/test_exercises.py runs it once, in a process of its own (the tests run by pytest inside it).

Docs: docs/course.md (mutants prove the grader).
"""

from __future__ import annotations

import json
import sys

from minilm.exercises.exercise import Exercise
from minilm.exercises.grade import passed, run_batch
from minilm.exercises.registry import EXERCISES


def verify(exercises: list[Exercise]) -> dict[str, dict[str, bool]]:
    """For each exercise {"reference": passed, "alternative:<name>": passed, "mutant:<name>": passed}, all graded in one
    pytest session (a mutant stops at its first failure)."""
    jobs, keys = [], []
    for e in exercises:
        implementations = [("reference", e.reference, False)]
        implementations += [(f"alternative:{f.__name__}", f, False) for f in e.alternatives]
        implementations += [(f"mutant:{f.__name__}", f, True) for f in e.mutants]
        for key, function, stop_at_first in implementations:
            jobs.append((e, function, stop_at_first))
            keys.append((e.id, key))
    results: dict[str, dict[str, bool]] = {e.id: {} for e in exercises}
    for (exercise_id, key), outcomes in zip(keys, run_batch(jobs)):
        results[exercise_id][key] = passed(outcomes)
    return results


def main(ids: list[str]) -> int:
    print(json.dumps(verify([EXERCISES[i] for i in (ids or EXERCISES)])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
