"""Labelled task data: a folder with train / dev / test splits of (text, label) pairs.

    TASK/train.tsv | train.jsonl      required
    TASK/dev.tsv   | dev.jsonl        used for early stopping and reported
    TASK/test.tsv  | test.jsonl       optional; evaluated only when asked
    TASK/task.json                    optional: {"labels": [...], "label_words": {label: word}, "description": "...",
                                                 "template": "... {text} ...", "prefix_text": "..."}

The split files are read by minilm.task_files (a TSV with a header naming a `label` and a `sentence` or `text`
column, split on tabs only; or JSONL objects with the same keys). The label set is task.json's `labels`, or else
the labels seen in train; any other label in any split is an error naming the file and line. task.json's
`template` is the prompt the verbalizer reads the label words from when none is given on the command line
(`compare`, `tune`). Its `prefix_text` is the real text prompt a prefix starts from by default (--prefix-init
task: the frozen base's own keys and values of those words).

Docs: docs/tuning.md (task folders).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from minilm.prompting.template import FIELD, SLOT
from minilm.task_files import SPLITS, read_rows, split_file


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    """Index into Task.labels."""


@dataclass
class Task:
    name: str
    labels: list[str]
    splits: dict[str, list[Example]]
    label_words: dict[str, str] = field(default_factory=dict)
    """label -> the word a verbalizer scores for it (e.g. " good"); empty when task.json gives none."""
    template: str | None = None
    """The prompt around the text ({text} where it goes), from task.json; None when it gives none."""
    prefix_text: str | None = None
    """Words that set the task up, read before the input: where prefix tuning starts (--prefix-init task)."""

    def split(self, name: str) -> list[Example]:
        if name not in self.splits:
            have = ", ".join(self.splits)
            raise ValueError(
                f"task {self.name!r} has no {name} split (it has {have}): add {name}.tsv or {name}.jsonl to its folder"
            )
        return self.splits[name]

    def balance(self, split: str) -> dict[str, int]:
        """Examples per label in a split."""
        counts = Counter(e.label for e in self.split(split))
        return {label: counts.get(i, 0) for i, label in enumerate(self.labels)}


def load_task(folder: str | os.PathLike[str]) -> Task:
    """Read a task folder (see the module docstring); every problem is a ValueError naming file and line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"task folder {folder} does not exist: give a folder with train.tsv (and dev.tsv)")
    spec: dict = {}
    if (folder / "task.json").is_file():
        try:
            spec = json.loads((folder / "task.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{folder / 'task.json'} is not valid JSON ({e})") from None
        if not isinstance(spec, dict):
            raise ValueError(
                f"{folder / 'task.json'} must be a JSON object with labels, label_words, description, template "
                "and/or prefix_text"
            )
        unknown = sorted(set(spec) - {"labels", "label_words", "description", "template", "prefix_text"})
        if unknown:
            raise ValueError(
                f"{folder / 'task.json'}: unknown key(s) {', '.join(unknown)}; "
                "valid keys are labels, label_words, description, template, prefix_text"
            )
        if "labels" in spec and not isinstance(spec["labels"], list):
            raise ValueError(
                f"{folder / 'task.json'}: 'labels' must be a list of label strings, got {spec['labels']!r}"
            )
        if not isinstance(spec.get("label_words", {}), dict):
            raise ValueError(f"{folder / 'task.json'}: 'label_words' must be an object mapping each label to its word")
        if "template" in spec:
            check_template(spec["template"], folder / "task.json")
        if "prefix_text" in spec and not (isinstance(spec["prefix_text"], str) and spec["prefix_text"].strip()):
            raise ValueError(
                f"{folder / 'task.json'}: 'prefix_text' must be a non-empty string (the words a prefix starts from), "
                f"got {spec['prefix_text']!r}"
            )
    files = {split: split_file(folder, split) for split in SPLITS}
    if files["train"] is None:
        raise FileNotFoundError(f"task folder {folder} has no train.tsv or train.jsonl")
    raw = {split: read_rows(path) for split, path in files.items() if path is not None}
    if not raw["train"]:
        raise ValueError(f"{files['train']} has no examples")
    if "labels" in spec:
        labels = [str(label) for label in spec["labels"]]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"{folder / 'task.json'}: 'labels' lists {', '.join(map(repr, repeated))} more than once")
        source = f"listed in {folder / 'task.json'}"
    else:
        labels = sorted({label for _, _, label in raw["train"]})
        source = f"seen in {files['train'].name}"
    if len(labels) < 2:
        raise ValueError(
            f"task {folder} has {len(labels)} label(s) ({', '.join(labels)}): a classification task needs at least 2"
        )
    index = {label: i for i, label in enumerate(labels)}
    splits: dict[str, list[Example]] = {}
    for split, rows in raw.items():
        examples = []
        for lineno, text, label in rows:
            if label not in index:
                raise ValueError(
                    f"{files[split]} line {lineno}: label {label!r} is not one of the task's labels "
                    f"({', '.join(labels)}) {source}; fix the label or the label list"
                )
            if not text.strip():
                raise ValueError(f"{files[split]} line {lineno}: the text is empty")
            examples.append(Example(text, index[label]))
        splits[split] = examples
    words = {str(k): v for k, v in spec.get("label_words", {}).items()}
    missing = [label for label in labels if words and label not in words]
    if missing or set(words) - set(labels):
        raise ValueError(f"{folder / 'task.json'}: label_words must give one word for each label ({', '.join(labels)})")
    return Task(folder.name, labels, splits, words, spec.get("template"), spec.get("prefix_text"))


def check_template(template: object, path: Path) -> None:
    """A task template is a string with the one field {text} and at most one [MASK]; else a ValueError naming path."""
    fields = FIELD.findall(template) if isinstance(template, str) else []
    if not isinstance(template, str):
        problem = "not a string"
    elif fields != ["text"]:
        problem = f"its fields are {', '.join(fields)}" if fields else "it has no {text}"
    elif template.count(SLOT) > 1:
        problem = f"it has {template.count(SLOT)} {SLOT} answer slots, at most one is allowed"
    else:
        return
    raise ValueError(
        f"{path}: 'template' must be a string with the one field {{text}} where the input goes, "
        f'e.g. "{{text}} It was" ({problem}), got {template!r}'
    )
