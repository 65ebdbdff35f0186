"""Presets resolve and flags override them; a task folder feeds pretraining its train texts only, and --hold-out keeps
a task's dev and test texts out of the corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import ROOT, fails, train

from minilm.task_files import split_texts
from minilm.training.corpus import prepare_corpus, read_corpus
from minilm.training.presets import PRESETS, preset
from minilm.training.pretrain import pretrain_settings


def test_a_preset_sets_its_values_and_a_flag_given_beside_it_overrides_that_value(tmp_path):
    s = pretrain_settings({"preset": "tiny", "out": str(tmp_path / "a")})
    tiny = PRESETS["tiny"].settings
    assert all(s[k] == v for k, v in tiny.items())
    assert s["preset"] == "tiny" and s["time_budget"] is None
    s = pretrain_settings({"preset": "tiny", "d_model": 48, "time_budget": "20s", "out": str(tmp_path / "b")})
    assert s["d_model"] == 48 and s["d_ff"] == 4 * 48 and s["n_layers"] == tiny["n_layers"]
    assert s["time_budget"] == "20s" and s["max_steps"] is None  # a budget given clears the preset's step count


def test_no_preset_is_the_default_preset_and_the_default_preset_changes_nothing(tmp_path):
    plain = pretrain_settings({"out": str(tmp_path / "a")})
    named = pretrain_settings({"preset": "default", "out": str(tmp_path / "a")})
    assert plain == named and plain["preset"] == "default" and plain["vocab_size"] == 1024


def test_the_sentiment_base_preset_names_shipped_data_by_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a preset works from any folder
    s = pretrain_settings({"preset": "sentiment-base", "out": str(tmp_path / "a")})
    assert all(Path(p).is_absolute() and Path(p).exists() for p in s["data"] + s["hold_out"])
    assert str(ROOT / "data" / "sentiment_rt") in s["data"]


def test_an_unknown_preset_is_a_one_line_error(capsys, tmp_path):
    fails(capsys, ["pretrain", "--preset", "huge", "--out", str(tmp_path / "x")], "invalid choice", "tiny")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")


@pytest.mark.slow
def test_preset_tiny_trains_in_seconds_and_records_itself_and_a_resume_keeps_it(capsys, tmp_path):
    out = tmp_path / "tiny"
    assert train.main(["pretrain", "--preset", "tiny", "--width", "48", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("preset tiny: ") and "given beside it: --width" in printed
    args = json.loads((out / "train_args.json").read_text())
    assert args["preset"] == "tiny" and args["max_steps"] == 30 and args["d_model"] == 48
    assert json.loads((out / "config.json").read_text())["n_layers"] == 2
    fails(capsys, ["pretrain", "--resume", "--preset", "default", "--out", str(out)], "--preset tiny, not default")


def _task(folder: Path, splits: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True)
    for split, texts in splits.items():
        rows = "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(texts))
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    return folder


def test_a_task_folder_in_data_gives_its_train_texts_without_labels_and_never_dev_or_test(tmp_path):
    task = _task(
        tmp_path / "task",
        {"train": [f"train sentence {i}" for i in range(20)], "dev": ["a dev sentence"], "test": ["a test one"]},
    )
    text = read_corpus([task], val_fraction=0.1)
    whole = "".join(text.train + text.val)
    assert whole.splitlines() == [f"train sentence {i}" for i in range(20)]
    assert "dev" not in whole and "test" not in whole and "\t" not in whole


def test_hold_out_removes_every_line_equal_to_a_dev_or_test_text_and_changes_the_cache_key(tmp_path, tokenizer):
    task = _task(tmp_path / "task", {"train": ["kept"], "dev": ["To be, or not to be"], "test": ["Ay, my lord."]})
    book = tmp_path / "book.txt"
    lines = ["HAMLET:", "To be, or not to be", "  Ay, my lord.  ", "that is the question", "To be, or not to be"]
    book.write_text("\n".join(lines * 10) + "\n", encoding="utf-8")
    held = read_corpus([book], 0.1, hold_out=[task])
    assert held.removed_lines == 30
    kept = "".join(held.train + held.val).splitlines()
    assert kept == ["HAMLET:", "that is the question"] * 10
    plain = prepare_corpus([book], tokenizer, tmp_path / "cache", 0.1)
    without = prepare_corpus([book], tokenizer, tmp_path / "cache", 0.1, hold_out=[task])
    assert plain.cache_dir != without.cache_dir and len(without.train) < len(plain.train)
    with pytest.raises(FileNotFoundError, match="is not a task folder"):
        read_corpus([book], 0.1, hold_out=[tmp_path])


def test_the_sentiment_base_corpus_holds_no_dev_or_test_text_of_either_task(tmp_path):
    s = pretrain_settings({"preset": "sentiment-base", "out": str(tmp_path / "a")})
    text = read_corpus(s["data"], s["val_fraction"], hold_out=s["hold_out"])
    corpus = {line.strip() for part in text.train + text.val for line in part.splitlines()}
    for task in (ROOT / "data" / "sentiment_rt", ROOT / "data" / "shakespeare_plays"):
        judged = {t.strip() for split in ("dev", "test") for t in split_texts(task, split)}
        assert judged and not corpus & judged, task.name
    train_sentences = {t.strip() for t in split_texts(ROOT / "data" / "sentiment_rt", "train")}
    assert len(train_sentences & corpus) > 0.99 * len(train_sentences)  # the unlabelled train sentences are there
    assert text.removed_lines > 1000  # the Shakespeare task's dev and test lines were in the play text
