"""train.py compare --quick: every row of the comparison on a tiny base, the table and its files; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import fails, pretrain_tiny, train

MERRY = [
    "O happy day, my heart is merry",
    "Sweet love doth fill my soul with joy",
    "What a gentle and a gracious lord",
    "Good friends, rejoice, for peace is come",
]
SAD = [
    "Alas, my heart is heavy with grief",
    "Foul murder stalks the night",
    "O wretched day, curse on thee",
    "Sorrow and woe upon this house",
]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory, context=96, chars=20000)


def write_task(folder: Path, words: bool = True) -> Path:
    folder.mkdir(parents=True)
    rows = "".join(f"{t}\t1\n" for t in MERRY) + "".join(f"{t}\t0\n" for t in SAD)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    if words:
        (folder / "task.json").write_text(
            json.dumps({"labels": ["0", "1"], "label_words": {"0": " sad", "1": " merry"}})
        )
    return folder


def test_quick_compare_writes_a_table_with_every_row(tmp_path, base_run, capsys):
    task = write_task(tmp_path / "merry")
    out = tmp_path / "cmp"
    assert (
        train.main(
            [
                "compare",
                "--base",
                str(base_run),
                "--task",
                str(task),
                "--out",
                str(out),
                "--quick",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    table = (out / "results.md").read_text()
    assert (
        "| method | readout | trainable (% of base) | dev accuracy | dev macro-F1 | test accuracy | s/step | peak MiB |"
        in table
    )
    names = [
        "zero-shot",
        "few-shot (1 per label)",
        "prompt tuning",
        "prompt encoder",
        "prefix tuning",
        "first-k freezing (k=1)",
        "BitFit",
        "LoRA (r=8)",
        "full fine-tuning",
    ]
    for name in names:
        assert f"| {name} |" in table, name
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 2 + 7 * 2
    tuned = [r for r in rows if r["step_s"] is not None]
    assert all(len(r["dev_accuracy"]) == 1 and len(r["test_accuracy"]) == 1 and r["peak_mib"] > 0 for r in tuned)
    full = next(r for r in rows if r["method"] == "full fine-tuning" and r["readout"] == "verbalizer")
    prompt = next(r for r in rows if r["method"] == "prompt tuning" and r["readout"] == "verbalizer")
    assert prompt["trainable"] == 8 * 32 and full["trainable"] == full["base"]
    assert "| zero-shot |" in capsys.readouterr().out


def test_compare_needs_label_words(tmp_path, base_run, capsys):
    task = write_task(tmp_path / "nowords", words=False)
    fails(capsys, ["compare", "--base", str(base_run), "--task", str(task), "--quick"], "no label words")
