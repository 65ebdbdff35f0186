"""The comparison's reference rows: the baselines see the train split only, the bag-of-n-grams model learns what words
decide, a missing scikit-learn skips its row with one line, and calibrated zero-shot is `calibrate`'s argmax."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from synthetic_task import LABEL_WORDS, write_task

from minilm import Transformer
from minilm.experiments.baselines import (
    C_GRID,
    MissingScikitLearn,
    bag_of_ngrams_logistic_regression,
    majority_class,
)
from minilm.experiments.compare import NO_SKLEARN, CompareConfig, baseline_rows, compare
from minilm.prompting import Template, Verbalizer, base_logits, calibrate, label_scores
from minilm.tuning.tasks import Example, Task, load_task

compare_module = importlib.import_module("minilm.experiments.compare")  # the package's `compare` is the function
RECORD = compare_module.record


def synthetic(tmp_path: Path, n_train: int = 120, n_dev: int = 60) -> Task:
    """Sentences whose one polar word decides the label (tests/synthetic_task.py)."""
    return load_task(write_task(tmp_path / "synthetic", n_train=n_train, n_dev=n_dev))


def with_labels(task: Task, split: str, relabel) -> Task:
    """A copy of `task` whose `split` labels are relabel(label) and whose other splits are untouched."""
    splits = dict(task.splits)
    splits[split] = [Example(e.text, relabel(e.label)) for e in task.splits[split]]
    return Task(task.name, task.labels, splits, task.label_words)


def predictions(monkeypatch, task: Task) -> dict[str, list[int]]:
    """Each baseline row's dev predictions, caught where compare records them."""
    caught: dict[str, list[int]] = {}

    def spy(row, split, predicted, examples, labels):
        if split == "dev":
            caught[row.method] = list(predicted)
        RECORD(row, split, predicted, examples, labels)

    monkeypatch.setattr(compare_module, "record", spy)
    baseline_rows(task, task.split("train"), task.split("dev"), [], log=lambda _: None)
    return caught


def test_majority_class_is_the_most_frequent_train_label_and_the_lowest_index_on_a_tie():
    assert majority_class([1, 1, 0], 2) == 1
    assert majority_class([2, 0, 2, 0], 3) == 0
    assert majority_class([2, 1, 2, 1, 0], 3) == 1
    assert majority_class([2, 2], 3) == 2


def test_majority_row_follows_the_train_majority_even_where_dev_has_another(tmp_path):
    train = [Example(f"train {i}", 1) for i in range(3)] + [Example("train 3", 0)]
    dev = [Example("dev 0", 1)] + [Example(f"dev {i}", 0) for i in range(1, 4)]
    task = Task("t", ["0", "1"], {"train": train, "dev": dev})
    majority = baseline_rows(task, train, dev, [], log=lambda _: None)[0]
    assert (majority.method, majority.kind, majority.trainable) == ("majority class", "baseline", 0)
    assert majority.dev_accuracy == [0.25]  # label 1 for all: right on the one dev example of label 1


def test_baseline_predictions_do_not_change_when_the_dev_labels_are_flipped_or_all_made_one_label(
    tmp_path, monkeypatch
):
    pytest.importorskip("sklearn")
    task = synthetic(tmp_path)
    original = predictions(monkeypatch, task)
    flipped = predictions(monkeypatch, with_labels(task, "dev", lambda y: 1 - y))
    all_zero = predictions(monkeypatch, with_labels(task, "dev", lambda y: 0))
    assert set(original) == {"majority class", "bag-of-n-grams logistic regression"}
    assert original == flipped == all_zero


def test_baseline_predictions_follow_the_train_labels(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    task = synthetic(tmp_path)
    original = predictions(monkeypatch, task)
    flipped = predictions(monkeypatch, with_labels(task, "train", lambda y: 1 - y))
    for method in original:
        assert flipped[method] != original[method], method
    ngrams = "bag-of-n-grams logistic regression"
    assert flipped[ngrams] == [1 - y for y in original[ngrams]]  # the words now mean the other label


def test_bag_of_ngrams_beats_the_majority_class_where_words_decide_the_label(tmp_path):
    pytest.importorskip("sklearn")
    task = synthetic(tmp_path)
    majority, ngrams = baseline_rows(task, task.split("train"), task.split("dev"), [], log=lambda _: None)
    assert ngrams.kind == "baseline" and ngrams.trainable > 0
    assert ngrams.dev_accuracy[0] > 0.9 > majority.dev_accuracy[0] + 0.3
    assert len(ngrams.dev_accuracy) == len(ngrams.dev_macro_f1) == 1  # deterministic: one value


def test_bag_of_ngrams_learns_one_weight_per_train_ngram_plus_an_intercept_with_c_from_the_grid():
    pytest.importorskip("sklearn")
    texts = ["good film", "bad film", "good plot", "bad plot", "a good one", "a bad one"]
    labels = [1, 0, 1, 0, 1, 0]
    fitted = bag_of_ngrams_logistic_regression(texts, labels, ["good", "bad", "unseen words"])
    ngrams = {w for t in texts for w in t.split()} | {" ".join(p) for t in texts for p in zip(t.split(), t.split()[1:])}
    assert fitted.n_parameters == len(ngrams) + 1
    assert fitted.C in C_GRID and fitted.predictions[:2] == [1, 0]
    fixed = bag_of_ngrams_logistic_regression(texts, labels, ["good"], C=0.5)
    assert fixed.C == 0.5


def test_with_one_example_of_a_label_there_is_nothing_to_cross_validate_and_c_is_one():
    pytest.importorskip("sklearn")
    fitted = bag_of_ngrams_logistic_regression(["good", "good film", "bad"], [1, 1, 0], ["bad"])
    assert fitted.C == 1.0 and fitted.predictions == [0]


def test_without_scikit_learn_the_row_is_skipped_with_one_line_saying_how_to_install(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")] + ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)  # every import of scikit-learn now fails
    with pytest.raises(MissingScikitLearn, match=r"pip install -e '\.\[baselines\]'"):
        bag_of_ngrams_logistic_regression(["good", "bad"], [1, 0], ["good"])
    task = synthetic(tmp_path, n_train=20, n_dev=10)
    lines: list[str] = []
    rows = baseline_rows(task, task.split("train"), task.split("dev"), [], log=lines.append)
    assert [r.method for r in rows] == ["majority class"]
    assert NO_SKLEARN in lines
    assert NO_SKLEARN == (
        "bag-of-words logistic regression: skipped, scikit-learn is not installed (pip install -e '.[baselines]')"
    )


def test_calibrated_zero_shot_predicts_the_argmax_of_calibrate_of_zero_shot_and_content_free_scores(
    tmp_path, tokenizer, monkeypatch
):
    folder = write_task(tmp_path / "synthetic", n_train=8, n_dev=24)
    (folder / "task.json").write_text('{"labels": ["0", "1"], "label_words": {"0": " no", "1": " yes"}}')
    task = load_task(folder)
    model = Transformer(tiny_config(vocab_size=tokenizer.vocab_size), seed=3).eval()
    caught: dict[str, list[int]] = {}

    def spy(row, split, predicted, examples, labels):
        caught[row.method] = list(predicted)
        RECORD(row, split, predicted, examples, labels)

    monkeypatch.setattr(compare_module, "record", spy)
    config = CompareConfig(methods=(), seeds=(0,), shots=1, device="cpu", precision="fp32")
    rows = compare(lambda: model, tokenizer, task, config, log=lambda _: None)
    names = [(r.method, r.kind) for r in rows]  # without scikit-learn there is one baseline row fewer before them
    at = names.index(("zero-shot", "prompted"))
    assert names[at + 1] == ("calibrated zero-shot", "prompted")

    def scores(texts: list[str]) -> torch.Tensor:
        verbalizer = Verbalizer.from_words(tokenizer, LABEL_WORDS)
        values = [{"text": t} for t in texts]
        return label_scores(base_logits(model), tokenizer, Template("{text} It was"), verbalizer, values, True, 64)

    zero_shot = scores([e.text for e in task.split("dev")])
    expected = calibrate(zero_shot, scores(["N/A"])).argmax(dim=-1).tolist()
    assert caught["zero-shot"] == zero_shot.argmax(dim=-1).tolist()
    assert caught["calibrated zero-shot"] == expected
    assert expected != caught["zero-shot"]  # calibration changes some answers here, so the check can fail


def test_with_a_single_label_in_train_the_model_predicts_it_and_learns_nothing():
    pytest.importorskip("sklearn")
    fitted = bag_of_ngrams_logistic_regression(["good", "fine"], [1, 1], ["bad", "good"])
    assert (fitted.predictions, fitted.n_parameters) == ([1, 1], 0)
