"""The exercises, one module per layer of the library: each holds its exercises with their mutants.

Docs: docs/course.md (the exercises).
"""
