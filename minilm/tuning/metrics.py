"""Classification metrics: accuracy, per-class precision / recall / F1, macro-F1 and the confusion matrix.

    accuracy   = (1/N) sum_i [y*_i = y_i]
    P_c = TP_c / (TP_c + FP_c)     R_c = TP_c / (TP_c + FN_c)     F1_c = 2 P_c R_c / (P_c + R_c)
    macro-F1   = (1/C) sum_c F1_c      (over the C classes present in gold or predictions; P, R or F1 with a zero
                                     denominator is 0, so a class present but never predicted counts F1 = 0)

Docs: docs/tuning.md (what tune and classify report).
"""

from __future__ import annotations

from typing import Any


def classification_report(predicted: list[int], gold: list[int], labels: list[str]) -> dict[str, Any]:
    """All metrics as a JSON-ready dict; confusion[i][j] counts gold label i predicted as j."""
    if len(predicted) != len(gold) or not gold:
        raise ValueError(
            f"need as many predictions as gold labels (and at least one), got {len(predicted)} and {len(gold)}"
        )
    C = len(labels)
    if any(not 0 <= i < C for i in (*predicted, *gold)):
        raise ValueError(f"class indices must lie in 0..{C - 1} for {C} labels ({', '.join(labels)})")
    confusion = [[0] * C for _ in range(C)]
    for p, g in zip(predicted, gold):
        confusion[g][p] += 1
    per_class, f1s = {}, []
    for c, label in enumerate(labels):
        tp = confusion[c][c]
        fp = sum(confusion[g][c] for g in range(C)) - tp
        fn = sum(confusion[c]) - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
        if tp + fn or tp + fp:
            f1s.append(f1)
    accuracy = sum(confusion[c][c] for c in range(C)) / len(gold)
    return {
        "accuracy": accuracy,
        "macro_f1": sum(f1s) / len(f1s),
        "per_class": per_class,
        "confusion": confusion,
        "labels": list(labels),
        "n": len(gold),
    }


def format_report(report: dict[str, Any], what: str) -> str:
    """Accuracy, macro-F1, the per-class table and the confusion matrix, as aligned text."""
    labels, confusion = report["labels"], report["confusion"]
    lines = [
        f"{what}: {report['n']:,} examples | accuracy {report['accuracy']:.4f} | macro-F1 {report['macro_f1']:.4f}"
        f" | loss {report['loss']:.4f}"
    ]
    w = max(5, *(len(label) for label in labels))
    lines.append(f"{'label':<{w}}  precision  recall      f1  support")
    for label in labels:
        pc = report["per_class"][label]
        lines.append(f"{label:<{w}}  {pc['precision']:9.4f}  {pc['recall']:6.4f}  {pc['f1']:6.4f}  {pc['support']:7,}")
    cw = max(*(len(label) for label in labels), *(len(str(n)) for row in confusion for n in row))
    lines.append("confusion matrix (rows: gold label, columns: predicted):")
    lines.append(" " * w + "".join(f"  {label:>{cw}}" for label in labels))
    lines += [f"{label:<{w}}" + "".join(f"  {n:>{cw}}" for n in row) for label, row in zip(labels, confusion)]
    return "\n".join(lines)
