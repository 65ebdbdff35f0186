"""The files of a task folder: which file holds a split, and the (line, text, label) rows in it.

    TASK/train.tsv | train.jsonl     TASK/dev.tsv | dev.jsonl     TASK/test.tsv | test.jsonl

A TSV has a header line naming its columns (`label` and a text column, `sentence` or `text`); fields are split on
tabs only (no quoting: a sentence may begin with a quote mark). A JSONL file has one object per line with the same
keys. This is the raw reading that both a labelled task (minilm.tuning.tasks) and a pretraining corpus that takes a
task's unlabelled train texts (minilm.training.corpus) share.

Docs: docs/tuning.md (task folders), docs/training.md (a task folder in --data).
"""

from __future__ import annotations

from pathlib import Path

from minilm.files import read_jsonl, read_utf8_lines

SPLITS = ("train", "dev", "test")
TEXT_FIELDS = ("sentence", "text")


def is_task_folder(path: Path) -> bool:
    """A folder with a train split file (train.tsv or train.jsonl)."""
    return path.is_dir() and any((path / f"train{suffix}").is_file() for suffix in (".tsv", ".jsonl"))


def split_file(folder: Path, split: str) -> Path | None:
    """TASK/<split>.tsv or .jsonl, None when there is neither; both is an error."""
    found = [folder / f"{split}{suffix}" for suffix in (".tsv", ".jsonl") if (folder / f"{split}{suffix}").is_file()]
    if len(found) > 1:
        raise ValueError(f"{folder} has both {found[0].name} and {found[1].name}: keep one file per split")
    return found[0] if found else None


def read_rows(path: Path) -> list[tuple[int, str, str]]:
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


def split_texts(folder: Path, split: str) -> list[str]:
    """The texts of one split of a task folder (no labels), [] when the folder has no such split."""
    path = split_file(folder, split)
    return [text for _, text, _ in read_rows(path)] if path is not None else []
