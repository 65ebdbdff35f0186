"""`train.py classify`: class probabilities for texts, or a report on a task split, from a tuned model folder.

Docs: docs/tuning.md, docs/cli.md (what classify writes).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from minilm.files import atomic_write
from minilm.outputs import check_file_output
from minilm.tuning.tasks import load_task
from minilm.tuning.trainer import evaluate, predict
from minilm.tuning.tuned import TunedRun

WRITTEN_BY = "minilm classify"
"""Every report names its writer: `classify` replaces only a report it wrote."""


def is_report(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("written_by") == WRITTEN_BY
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def classify_texts(tuned: TunedRun, texts: list[str], batch_size: int = 64) -> list[list[float]]:
    """p(y | text) for each text (in the order of tuned.model.labels); a text longer than the context is cut, with a
    warning."""
    if not texts or not all(text.strip() for text in texts):
        raise ValueError("a --text is empty: give some text to classify")
    room = tuned.model.max_text_tokens()
    for n, text in enumerate(texts, start=1):
        if len(tuned.tokenizer.encode(text)) > room:
            warnings.warn(
                f"text {n} is longer than the {room} text tokens that fit in the base's context; its end is cut",
                stacklevel=2,
            )
    return predict(tuned.model, tuned.tokenizer, texts, batch_size).tolist()


def report_split(
    tuned: TunedRun,
    folder: str | os.PathLike[str],
    task_dir: str | os.PathLike[str],
    split: str = "dev",
    report: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
) -> tuple[dict[str, Any], Path]:
    """Accuracy, macro-F1, per-class scores and the confusion matrix on a task split, written as JSON (default
    FOLDER/eval-<split>.json); returns (report, where it was written)."""
    task = load_task(task_dir)
    if task.labels != tuned.model.labels:
        raise ValueError(
            f"the task's labels ({', '.join(task.labels)}) are not the ones {folder} was tuned on "
            f"({', '.join(tuned.model.labels)}): evaluate it on the task it was tuned for"
        )
    examples = task.split(split)
    path = Path(report) if report else Path(folder) / f"eval-{split}.json"
    check_file_output(path, is_report, "report")
    result = evaluate(tuned.model, tuned.tokenizer, examples, batch_size)
    atomic_write(
        path,
        json.dumps(
            {
                "written_by": WRITTEN_BY,
                "tuned": str(Path(folder).resolve()),
                "base_run": str(Path(tuned.base_run).resolve()),
                "task": str(Path(task_dir).resolve()),
                "split": split,
                **result,
            },
            indent=2,
        )
        + "\n",
    )
    return {"task": task.name, **result}, path
