"""The shakespeare_plays task folder: rebuilt byte for byte by its script; lines unique, balanced, from their play."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

from minilm.tuning.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "data" / "shakespeare_plays"
SOURCE = ROOT / "data" / "tinyshakespeare.txt"
SPLITS = ("train", "dev", "test")
SPANS = {"coriolanus": (0.0, 0.14), "shrew": (0.86, 0.97)}  # where each play lies in the source, as a share of it


def read_split(split: str) -> list[tuple[str, str]]:
    """(sentence, label) rows of a shipped TSV, split on tabs as load_task does."""
    lines = (FOLDER / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sentence\tlabel"
    return [tuple(line.split("\t")) for line in lines[1:]]


def speech_lines_at() -> dict[str, list[float]]:
    """Each stripped line of the source that is inside a speech (not a speaker line) -> where it occurs (0..1)."""
    text = SOURCE.read_text(encoding="utf-8")
    where: dict[str, list[float]] = {}
    offset, previous = 0, ""
    for line in text.split("\n"):
        if previous.strip():  # the line above is the speaker or an earlier line of the same speech
            where.setdefault(line.strip(), []).append(offset / len(text))
        offset, previous = offset + len(line) + 1, line
    return where


def test_the_shipped_files_are_what_make_task_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_task", FOLDER / "make_task.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    counts = make.build(SOURCE, tmp_path)
    for name in ("train.tsv", "dev.tsv", "test.tsv", "task.json"):
        assert (tmp_path / name).read_bytes() == (FOLDER / name).read_bytes(), name
    assert counts == {split: dict(Counter(label for _, label in read_split(split))) for split in SPLITS}


def test_no_line_is_in_two_splits_or_twice_in_one():
    seen: dict[str, str] = {}
    for split in SPLITS:
        for sentence, _ in read_split(split):
            assert sentence not in seen, f"{sentence!r} is in {seen[sentence]} and {split}"
            seen[sentence] = split


def test_each_split_is_balanced_within_one_line_and_splits_are_about_70_15_15():
    sizes = {}
    for split in SPLITS:
        counts = Counter(label for _, label in read_split(split))
        assert set(counts) == set(SPANS), split
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)
        sizes[split] = sum(counts.values())
    total = sum(sizes.values())
    assert total >= 3000
    for split, share in zip(SPLITS, (0.70, 0.15, 0.15), strict=True):
        assert abs(sizes[split] / total - share) < 0.03, (split, sizes)


def test_every_line_has_five_words_and_is_a_speech_line_of_its_play_only():
    where = speech_lines_at()
    for split in SPLITS:
        for sentence, label in read_split(split):
            assert len(sentence.split()) >= 5 and sentence == sentence.strip(), sentence
            assert sentence in where, f"{sentence!r} ({split}) is not a line of a speech in the source"
            for play, (low, high) in SPANS.items():
                inside = any(low <= at < high for at in where[sentence])
                assert inside == (play == label), f"{sentence!r} labelled {label}: in {play}'s part = {inside}"


def test_the_task_loads_with_its_labels_label_words_and_template():
    task = load_task(FOLDER)
    assert task.labels == ["coriolanus", "shrew"]
    assert task.label_words == {"coriolanus": " Rome", "shrew": " Padua"}
    assert {split: len(task.split(split)) for split in SPLITS} == {split: len(read_split(split)) for split in SPLITS}
    assert task.template == "{text} This is spoken in"  # causal: the label word follows the end


def test_each_label_word_is_one_word_frequent_in_its_own_play_and_rare_in_the_other():
    text = SOURCE.read_text(encoding="utf-8")
    task = json.loads((FOLDER / "task.json").read_text(encoding="utf-8"))
    for label, word in task["label_words"].items():
        assert re.fullmatch(r" [A-Z][a-z]+", word), word
        per_play = {
            play: len(re.findall(rf"\b{word.strip()}\b", text[int(low * len(text)) : int(high * len(text))]))
            for play, (low, high) in SPANS.items()
        }
        assert text.count(word) >= 20 and per_play[label] >= 20, (word, per_play)
        assert all(per_play[label] >= 10 * max(n, 1) for play, n in per_play.items() if play != label), per_play
