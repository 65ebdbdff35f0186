"""Exercises of the objectives, sampling, schedule, evaluation and tuning equations.

Docs: docs/course.md (the exercises).
"""

from __future__ import annotations

EXERCISES: tuple = ()
