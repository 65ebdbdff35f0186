"""Every exercise, by id, in the order of the course (docs/course.md).

Docs: docs/course.md (the exercises).
"""

from __future__ import annotations

from minilm.exercises.catalog import adaptation, budget_and_utf8, foundations, model, training, tuning
from minilm.exercises.exercise import Exercise

ORDER = (
    "bpe-merges",
    "position-ids",
    "attention-mask",
    "attention",
    "split-heads",
    "merge-heads",
    "layer-norm",
    "feed-forward",
    "kv-cache",
    "causal-lm-loss",
    "mask-tokens",
    "masked-lm-loss",
    "learning-rate",
    "time-budget",
    "bits-per-byte",
    "temperature",
    "top-k",
    "top-p",
    "utf8-step",
    "verbalizer",
    "calibration",
    "instruction-loss",
    "soft-prompt",
    "prefix-mask",
    "prefix-mlp",
    "prefix-from-text",
    "bitfit",
    "lora",
    "lora-merge",
    "adapter",
    "prompt-candidates",
    "online-softmax",
)
"""The course: from the tokenizer through the model, its objectives and decoding, to prompting, tuning and the
FlashAttention recurrence."""
CATALOG = {
    e.id: e for part in (training, model, foundations, tuning, adaptation, budget_and_utf8) for e in part.EXERCISES
}
COURSE = tuple(CATALOG[exercise_id] for exercise_id in ORDER if exercise_id in CATALOG)
EXERCISES: dict[str, Exercise] = {exercise.id: exercise for exercise in COURSE}


def exercise(exercise_id: str) -> Exercise:
    """The exercise with this id; a one-line error listing the ids otherwise."""
    if exercise_id not in EXERCISES:
        raise ValueError(f"no exercise {exercise_id!r}: `train.py exercise list` shows them ({', '.join(EXERCISES)})")
    return EXERCISES[exercise_id]
