"""Swapping a function for the learner's, wherever the library (and the tests) call it.

    for every module m of minilm and of the tests, every name n with m.n is f_ref:   m.n <- f_learner

A method is replaced on its class (a static method stays static). While grading, nothing else changes: the
whole model, the KV cache and the tuning methods run as usual around the learner's function. Everything is put
back at the end.

Docs: docs/course.md (how an exercise is graded).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from minilm.exercises.exercise import resolve


def call_sites(target: str, folders: Sequence[Path]) -> list[tuple[Any, str]]:
    """Every (owner, name) that holds the target: its class for a method, else every module under `folders` that
    imported it by name."""
    owner, name, reference = resolve(target)
    if isinstance(owner, type):
        return [(owner, name)]
    sites = []
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or not any(Path(file).resolve().is_relative_to(folder) for folder in folders):
            continue
        sites += [(module, key) for key, value in list(vars(module).items()) if value is reference]
    return sites


@contextmanager
def swapped(replacements: Sequence[tuple[str, Any]], folders: Sequence[Path]) -> Iterator[int]:
    """Within the block every call site of each target holds its replacement; yields how many sites changed."""
    saved = []
    for target, replacement in replacements:
        for owner, name in call_sites(target, folders):
            old = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            saved.append((owner, name, old))
            setattr(owner, name, staticmethod(replacement) if isinstance(old, staticmethod) else replacement)
    try:
        yield len(saved)
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def replacements_for(exercise: Any, function: Callable[..., Any]) -> list[tuple[str, Any]]:
    """The target itself, then every place the exercise routes through it (`Exercise.uses`)."""
    return [(exercise.target, function)] + [(target, adapter(function)) for target, adapter in exercise.uses]
