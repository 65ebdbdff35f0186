"""Labelled task data: a folder with train / dev / test splits of (text, label) pairs.

    TASK/train.tsv | train.jsonl      required
    TASK/dev.tsv   | dev.jsonl        used for early stopping and reported
    TASK/test.tsv  | test.jsonl       optional; evaluated only when asked
    TASK/task.json                    optional: {"labels": [...], "label_words": {label: word}, "description": "..."}

A TSV has a header line naming its columns (`label` and a text column, `sentence` or `text`); fields
are split on tabs only (no quoting: a sentence may begin with a quote mark). A JSONL file has one
object per line with the same keys. The label set is task.json's `labels`, or else the labels seen in
train; any other label in any split is an error naming the file and line.

Docs: docs/tuning.md (task folders).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from minilm.files import read_jsonl, read_utf8_lines

SPLITS = ("train", "dev", "test")
TEXT_FIELDS = ("sentence", "text")


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


def _read_rows(path: Path) -> list[tuple[int, str, str]]:
    """(line number, text, label) of every row of a TSV or JSONL file."""
    rows: list[tuple[int, str, str]] = []
    if path.suffix == ".jsonl":
        for lineno, record in read_jsonl(path):
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {lineno}: expected a JSON object with a text and a label")
            text_key = next((k for k in TEXT_FIELDS if k in record), None)
            if text_key is None or "label" not in record:
                raise ValueError(f"{path} line {lineno}: each object needs a 'label' and a 'sentence' or 'text' key")
            rows.append((lineno, str(record[text_key]), str(record["label"])))
        return rows
    lines = read_utf8_lines(path)
    header = next(lines, "").rstrip("\r\n").split("\t")
    if "label" not in header or not any(f in header for f in TEXT_FIELDS):
        raise ValueError(
            f"{path}: the first line must be a header naming a 'label' column and a 'sentence' or 'text' column, "
            f"got {header}"
        )
    text_col = header.index(next(f for f in TEXT_FIELDS if f in header))
    label_col = header.index("label")
    for lineno, line in enumerate(lines, start=2):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path} line {lineno}: {len(fields)} tab-separated fields, the header has {len(header)}")
        rows.append((lineno, fields[text_col], fields[label_col].strip()))
    return rows


def _split_file(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}{suffix}" for suffix in (".tsv", ".jsonl") if (folder / f"{split}{suffix}").is_file()]
    if len(found) > 1:
        raise ValueError(f"{folder} has both {found[0].name} and {found[1].name}: keep one file per split")
    return found[0] if found else None


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
                f"{folder / 'task.json'} must be a JSON object with labels, label_words and/or description"
            )
        unknown = sorted(set(spec) - {"labels", "label_words", "description"})
        if unknown:
            raise ValueError(
                f"{folder / 'task.json'}: unknown key(s) {', '.join(unknown)}; "
                "valid keys are labels, label_words, description"
            )
        if "labels" in spec and not isinstance(spec["labels"], list):
            raise ValueError(
                f"{folder / 'task.json'}: 'labels' must be a list of label strings, got {spec['labels']!r}"
            )
        if not isinstance(spec.get("label_words", {}), dict):
            raise ValueError(f"{folder / 'task.json'}: 'label_words' must be an object mapping each label to its word")
    files = {split: _split_file(folder, split) for split in SPLITS}
    if files["train"] is None:
        raise FileNotFoundError(f"task folder {folder} has no train.tsv or train.jsonl")
    raw = {split: _read_rows(path) for split, path in files.items() if path is not None}
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
    return Task(folder.name, labels, splits, words)
