"""Writes the shakespeare_plays task: which of two plays a line comes from (deterministic: same files every run).

    python data/shakespeare_plays/make_task.py

data/tinyshakespeare.txt is several plays run together without titles: speeches "SPEAKER:\\nline\\nline" separated
by blank lines. A play is the span from its first speech to the next play's first speech (found by their speakers).
An example is one line of a speech (never the speaker's name), stripped, with at least 5 words. Lines are
deduplicated: a line said twice counts once, and a line found in both plays is dropped. Each line's split is fixed
by h(line) = sha256("seed|line") alone: h < 0.70 train, < 0.85 dev, else test. Each split then keeps the same number
of lines per play, those with the smallest h, and lists them in h order, so labels are balanced in every split.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 0
MIN_WORDS = 5
PLAYS = {  # label -> (the play's first speech, the next play's first speech) in data/tinyshakespeare.txt
    "coriolanus": ("First Citizen:\nBefore we proceed any further, hear me speak.", "GLOUCESTER:\nNow is the winter"),
    "shrew": ("SLY:\nI'll pheeze you, in faith.", "Master:\nBoatswain!"),  # the Induction, up to The Tempest
}
SPLITS = (("train", 0.70), ("dev", 0.85), ("test", 1.0))  # split -> the h below which a line falls in it
TASK = {
    "description": "Which play is this line of Shakespeare from: Coriolanus (coriolanus) "
    "or The Taming of the Shrew (shrew)?",
    "labels": list(PLAYS),
    "label_words": {"coriolanus": " Rome", "shrew": " Padua"},
    "template": "{text} This is spoken in",
    "prefix_text": " A line from a play by Shakespeare.",
}


def h(line: str) -> float:
    """h(line) = sha256("seed|line") read as a number in [0, 1)."""
    return int(hashlib.sha256(f"{SEED}|{line}".encode()).hexdigest(), 16) / 2**256


def play_text(text: str, begin: str, end: str) -> str:
    """The text from the speech `begin` up to the speech `end`; each must occur exactly once."""
    for speech in (begin, end):
        if text.count(speech) != 1:
            raise ValueError(f"the speech {speech!r} occurs {text.count(speech)} times in the source, expected once")
    return text[text.index(begin) : text.index(end)]


def speech_lines(play: str) -> set[str]:
    """The distinct stripped lines of the play's speeches (not the speaker lines) with at least MIN_WORDS words."""
    lines = set()
    for speech in re.split(r"\n\s*\n", play):
        for line in speech.strip().split("\n")[1:]:  # line 0 is "SPEAKER:"
            if len(line.split()) >= MIN_WORDS:
                lines.add(line.strip())
    return lines


def build(source: Path, out: Path) -> dict[str, dict[str, int]]:
    """Write out/{train,dev,test}.tsv and out/task.json from the source text; returns the lines per split and label."""
    text = source.read_text(encoding="utf-8")
    lines = {label: speech_lines(play_text(text, *bounds)) for label, bounds in PLAYS.items()}
    shared = set.intersection(*lines.values())
    counts: dict[str, dict[str, int]] = {}
    low = 0.0
    for split, high in SPLITS:
        by_label = {label: sorted((x for x in ls - shared if low <= h(x) < high), key=h) for label, ls in lines.items()}
        n = min(len(xs) for xs in by_label.values())
        rows = sorted(((x, label) for label, xs in by_label.items() for x in xs[:n]), key=lambda row: h(row[0]))
        with open(out / f"{split}.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("sentence\tlabel\n")
            f.writelines(f"{x}\t{label}\n" for x, label in rows)
        counts[split] = {label: n for label in PLAYS}
        low = high
    with open(out / "task.json", "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(TASK, indent=2) + "\n")
    return counts


def main() -> None:
    for split, n in build(HERE.parent / "tinyshakespeare.txt", HERE).items():
        print(split, n)


if __name__ == "__main__":
    main()
