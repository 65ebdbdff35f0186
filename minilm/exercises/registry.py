"""Every exercise, by id, in the order of the course (docs/course.md).

Docs: docs/course.md (the exercises).
"""

from __future__ import annotations

from minilm.exercises.catalog import adaptation, foundations, model, training, tuning
from minilm.exercises.exercise import Exercise

COURSE = (*model.EXERCISES, *training.EXERCISES, *foundations.EXERCISES, *tuning.EXERCISES, *adaptation.EXERCISES)
EXERCISES: dict[str, Exercise] = {exercise.id: exercise for exercise in COURSE}


def exercise(exercise_id: str) -> Exercise:
    """The exercise with this id; a one-line error listing the ids otherwise."""
    if exercise_id not in EXERCISES:
        raise ValueError(f"no exercise {exercise_id!r}: `train.py exercise list` shows them ({', '.join(EXERCISES)})")
    return EXERCISES[exercise_id]
