"""The learner's side: their file (a stub to start from), their function read from it, their results so far.

    exercises/<id>.py         the learner's function, started from `start` (never overwritten)
    exercises/.results.json   the last check of each exercise, with the SHA-256 of the file it graded

Docs: docs/course.md (the exercise command).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minilm.exercises.exercise import Exercise
from minilm.files import atomic_write

FOLDER = Path("exercises")
RESULTS = ".results.json"


def default_file(exercise: Exercise) -> Path:
    return FOLDER / f"{exercise.id}.py"


def start(exercise: Exercise, file: str | os.PathLike[str] | None = None) -> Path:
    """Write the stub of `exercise` to `file` (default exercises/<id>.py); an existing file is never replaced."""
    path = Path(file) if file else default_file(exercise)
    if path.exists():
        raise ValueError(
            f"{path} already exists: it is your work, and start never overwrites it (check it with "
            f"`train.py exercise check {exercise.id} --file {path}`, or start into another --file)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, exercise.stub())
    return path


def load_function(exercise: Exercise, file: str | os.PathLike[str] | None = None) -> Callable[..., Any]:
    """The function named like the exercise's in the learner's file; one line naming the file and line on an error."""
    path = Path(file) if file else default_file(exercise)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: write it with `train.py exercise start {exercise.id}` (or give --file PATH)"
        )
    name = f"minilm_exercise_{exercise.id.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # an import error or any mistake at the top level of the learner's file
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == path.resolve()]
        line = frames[-1].lineno if frames else 0
        raise ValueError(f"{path}:{line}: {type(e).__name__}: {e}") from None
    finally:
        sys.modules.pop(name, None)
    function = getattr(module, exercise.name, None)
    if not callable(function):
        raise ValueError(f"{path} defines no function {exercise.name}: the exercise grades a function of that name")
    return function


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_results(folder: Path) -> dict[str, Any]:
    """The last check of each exercise whose file is in `folder` (empty before the first check)."""
    path = folder / RESULTS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def record(exercise: Exercise, path: Path, passed: bool) -> None:
    """Remember this check's result for `list`, beside the learner's files."""
    results = read_results(path.parent)
    results[exercise.id] = {"passed": passed, "sha256": file_hash(path), "file": path.name}
    atomic_write(path.parent / RESULTS, json.dumps(results, indent=2) + "\n")


def status(exercise: Exercise, folder: Path = FOLDER) -> str:
    """not started (no file), not checked (never, or edited since), failing or passing (the last check)."""
    path = folder / f"{exercise.id}.py"
    if not path.is_file():
        return "not started"
    last = read_results(folder).get(exercise.id)
    if not last or last.get("sha256") != file_hash(path):
        return "not checked"
    return "passing" if last["passed"] else "failing"
