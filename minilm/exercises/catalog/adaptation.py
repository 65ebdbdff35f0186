"""Exercises of the blocks, the prompting and tuning methods, and the FlashAttention recurrence.

Docs: docs/course.md (the exercises).
"""

from __future__ import annotations

EXERCISES: tuple = ()
