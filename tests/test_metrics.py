"""Classification metrics, checked against arithmetic done by hand."""

from __future__ import annotations

import json

import pytest

from minilm.tuning.metrics import classification_report

LABELS = ["cat", "dog", "bird"]


def test_hand_worked_three_class_example_matches_every_metric():
    gold = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    predicted = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
    # confusion[gold][predicted]:
    #   gold cat  (4): predicted cat, cat, dog, bird -> [2, 1, 1]
    #   gold dog  (3): predicted dog, dog, cat       -> [1, 2, 0]
    #   gold bird (3): predicted bird, bird, dog     -> [0, 1, 2]
    confusion = [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    # accuracy = diagonal / N = (2 + 2 + 2) / 10
    accuracy = 6 / 10
    # cat:  TP = 2, FP = column 0 - TP = (2+1+0) - 2 = 1, FN = row 0 - TP = 4 - 2 = 2
    #       P = 2/3, R = 2/4 = 1/2, F1 = 2 * (2/3)(1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    # dog:  TP = 2, FP = (1+2+1) - 2 = 2, FN = 3 - 2 = 1
    #       P = 2/4 = 1/2, R = 2/3, F1 = 4/7 (same P and R as cat, swapped)
    # bird: TP = 2, FP = (1+0+2) - 2 = 1, FN = 3 - 2 = 1
    #       P = 2/3, R = 2/3, F1 = 2/3
    expected = {
        "cat": {"precision": 2 / 3, "recall": 1 / 2, "f1": 4 / 7, "support": 4},
        "dog": {"precision": 1 / 2, "recall": 2 / 3, "f1": 4 / 7, "support": 3},
        "bird": {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3},
    }
    # macro-F1 = (4/7 + 4/7 + 2/3) / 3 = (12/21 + 12/21 + 14/21) / 3 = 38/63
    macro_f1 = 38 / 63

    report = classification_report(predicted, gold, LABELS)
    assert report["confusion"] == confusion
    assert report["accuracy"] == pytest.approx(accuracy)
    assert report["macro_f1"] == pytest.approx(macro_f1)
    assert list(report["per_class"]) == LABELS
    for label, values in expected.items():
        got = report["per_class"][label]
        assert got["support"] == values["support"]
        for key in ("precision", "recall", "f1"):
            assert got[key] == pytest.approx(values[key]), (label, key)
    assert report["labels"] == LABELS and report["n"] == 10


def test_confusion_rows_are_gold_and_columns_are_predicted():
    # one example of gold cat predicted as bird: row 0, column 2
    report = classification_report([2], [0], LABELS)
    assert report["confusion"] == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_perfect_predictions_give_1_everywhere_and_a_diagonal_confusion_matrix():
    gold = [0, 1, 2, 2, 1, 0, 0]
    report = classification_report(list(gold), gold, LABELS)
    assert report["accuracy"] == 1.0 and report["macro_f1"] == 1.0
    for values in report["per_class"].values():
        assert values["precision"] == values["recall"] == values["f1"] == 1.0
    assert report["confusion"] == [[3, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_class_never_predicted_gets_precision_0_without_a_division_error():
    gold = [0, 1, 2, 2]
    predicted = [0, 1, 1, 1]
    report = classification_report(predicted, gold, LABELS)
    # bird: TP = 0, FP = 0 (never predicted) -> P = 0 by convention; FN = 2 -> R = 0; F1 = 0
    assert report["per_class"]["bird"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    # dog: TP = 1, FP = 2 -> P = 1/3; FN = 0 -> R = 1; F1 = 2 (1/3)(1) / (4/3) = 1/2
    assert report["per_class"]["dog"]["f1"] == pytest.approx(1 / 2)
    # macro-F1 = (1 + 1/2 + 0) / 3 = 1/2; accuracy = 2/4
    assert report["macro_f1"] == pytest.approx(1 / 2)
    assert report["accuracy"] == pytest.approx(1 / 2)


def test_class_predicted_but_absent_from_gold_counts_in_macro_f1_with_f1_0():
    # cat: TP = 1, FP = 0, FN = 1 -> P = 1, R = 1/2, F1 = 2/3; dog: TP = 0, FP = 1, FN = 0 -> F1 = 0
    report = classification_report([0, 1], [0, 0], ["cat", "dog"])
    assert report["per_class"]["dog"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # macro-F1 = (2/3 + 0) / 2 = 1/3
    assert report["macro_f1"] == pytest.approx(1 / 3)


def test_class_neither_in_gold_nor_predicted_is_left_out_of_macro_f1():
    # bird never occurs at all: macro-F1 averages cat and dog only, (1 + 1) / 2 = 1
    report = classification_report([0, 1], [0, 1], LABELS)
    assert report["macro_f1"] == 1.0
    assert report["per_class"]["bird"]["support"] == 0


def test_report_is_json_ready():
    report = classification_report([0, 1, 2], [0, 2, 2], LABELS)
    assert json.loads(json.dumps(report)) == report


@pytest.mark.parametrize("predicted, gold", [([0, 1], [0, 1, 2]), ([0, 1, 2], [0]), ([], [])])
def test_mismatched_lengths_or_no_examples_are_an_error(predicted, gold):
    with pytest.raises(
        ValueError, match=rf"need as many predictions as gold labels.*got {len(predicted)} and {len(gold)}"
    ):
        classification_report(predicted, gold, LABELS)


@pytest.mark.parametrize("predicted, gold", [([0, 3], [0, 1]), ([0, -1], [0, 1]), ([0, 1], [0, 3]), ([0, 1], [-1, 1])])
def test_class_index_outside_the_labels_is_an_error_not_a_silent_miscount(predicted, gold):
    # -1 would otherwise index the last row / column of the confusion matrix and count as "bird"
    with pytest.raises(ValueError, match=r"class indices must lie in 0\.\.2 for 3 labels"):
        classification_report(predicted, gold, LABELS)
