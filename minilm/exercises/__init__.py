"""Layer 5, exercise mode: learn by writing an equation of the library and letting its own tests grade it.

    python train.py exercise list                  each exercise, its docs section, your status
    python train.py exercise start attention       writes exercises/attention.py: the signature, the equation, no body
    python train.py exercise check attention       runs the exercise's tests with your function swapped in
    python train.py exercise hint attention 2      the second hint; the last says where the reference is

An exercise (minilm/exercises/exercise.py) is one library function and the tests of the normal suite that grade it;
while they run, the learner's function replaces the library's wherever it is called (minilm/exercises/swap.py), so
it runs inside the whole model. Mutants, typical mistakes, prove that the tests can tell (verify.py).

Docs: docs/course.md.
"""

from minilm.exercises.commands import check_exercise, hint, list_exercises, start_exercise
from minilm.exercises.exercise import Exercise
from minilm.exercises.registry import COURSE, EXERCISES, exercise

__all__ = [
    "COURSE",
    "EXERCISES",
    "Exercise",
    "check_exercise",
    "exercise",
    "hint",
    "list_exercises",
    "start_exercise",
]
