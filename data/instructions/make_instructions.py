"""Writes minilm's small instruction dataset from the Shakespeare text (deterministic: same files every run).

    python data/instructions/make_instructions.py

Six tasks a small model can learn from a few thousand examples, on lines of 4-9 words:
repeat, capitals, reverse the words, first word, last word, count the words. train.jsonl uses lines
from the first 90% of data/tinyshakespeare.txt, dev.jsonl and dev_new_phrasing.jsonl lines from the last
10% (never seen in training); dev_new_phrasing.jsonl asks for the same tasks in words never used in train.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = {  # task -> (train phrasing, unseen phrasing, answer)
    "repeat": ("Repeat the input.", "Say the input again.", lambda w: " ".join(w)),
    "capitals": (
        "Write the input in capital letters.",
        "Turn the input into upper case.",
        lambda w: " ".join(w).upper(),
    ),
    "reverse": ("Reverse the order of the words.", "Put the words in backward order.", lambda w: " ".join(reversed(w))),
    "first": ("Give the first word.", "Which word comes first?", lambda w: w[0]),
    "last": ("Give the last word.", "Which word comes last?", lambda w: w[-1]),
    "count": ("Count the words.", "How many words are there?", lambda w: str(len(w))),
}


def lines(text: str) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        words = re.findall(r"[A-Za-z']+", line)
        if 4 <= len(words) <= 9 and not line.rstrip().endswith(":"):
            out.append(words)
    return out


def write(path: Path, pool: list[list[str]], n: int, phrasing: int, seed: int) -> None:
    rng = random.Random(seed)
    names = sorted(TASKS)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            words = rng.choice(pool)
            task = TASKS[names[i % len(names)]]
            record = {"instruction": task[phrasing], "input": " ".join(words), "output": task[2](words)}
            f.write(json.dumps(record) + "\n")


def main() -> None:
    text = (HERE.parent / "tinyshakespeare.txt").read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    train_pool, dev_pool = lines(text[:cut]), lines(text[cut:])
    write(HERE / "train.jsonl", train_pool, 3000, 0, seed=0)
    write(HERE / "dev.jsonl", dev_pool, 300, 0, seed=1)
    write(HERE / "dev_new_phrasing.jsonl", dev_pool, 60, 1, seed=2)


if __name__ == "__main__":
    main()
