"""Reference rows that use no language model: the majority class, and logistic regression on bags of n-grams.

    majority class     y* = argmax_c #{i in train : y_i = c}                  (ties: the lowest index)
    bag of n-grams     x = [n-gram g occurs in the text]_g  (binary, unigrams + bigrams, vocabulary of train)
                       p(y | x) = softmax(W x + b)_y,  W, b = argmin  sum_i -log p(y_i | x_i) + ||W||^2 / (2 C)

Both are fitted on the train split only; dev and test are only predicted. C is chosen on train alone: k-fold
stratified cross-validation (k = min(5, examples of the rarest train label)) over C_GRID by mean macro-F1, the
smallest C among ties; with fewer than 2 examples of some label there is nothing to cross-validate and C = 1.0.
Binary presence of unigrams and bigrams is the classic strong linear text baseline (Wang & Manning 2012, NB-SVM);
tf-idf weights would be one more statistic to fit, and the regularised weights absorb most of what they add.

Docs: docs/prompting.md (the comparison command).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
"""The regularisation strengths cross-validation chooses from (inverse: a small C is a strong penalty)."""
INSTALL = "pip install -e '.[baselines]'"


class MissingScikitLearn(ValueError):
    """The bag-of-n-grams baseline needs scikit-learn, an optional extra."""


def majority_class(train_labels: Sequence[int], n_classes: int) -> int:
    """y* = argmax_c #{i : y_i = c} over the train labels (ties: the lowest index c); predicted for every example."""
    counts = Counter(train_labels)
    return max(range(n_classes), key=lambda c: (counts.get(c, 0), -c))


@dataclass(frozen=True)
class BagOfNgrams:
    """What the fitted model predicts, how many numbers it learned (weights + intercepts) and the C chosen."""

    predictions: list[int]
    n_parameters: int
    C: float


def bag_of_ngrams_logistic_regression(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    texts: Sequence[str],
    ngram_range: tuple[int, int] = (1, 2),
    C: float | None = None,
    seed: int = 0,
) -> BagOfNgrams:
    """argmax_y softmax(W x + b)_y for each of `texts`, x the binary n-grams, W and b fitted on the train pairs only.

    C: None chooses it by cross-validation on train (see the module docstring); `seed` shuffles the folds.
    """
    try:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import f1_score, make_scorer
        from sklearn.model_selection import GridSearchCV, StratifiedKFold
        from sklearn.pipeline import make_pipeline
    except ImportError:
        raise MissingScikitLearn(f"the bag-of-n-grams baseline needs scikit-learn: {INSTALL}") from None
    seen = sorted(set(train_labels))
    if len(seen) < 2:  # one label in train: nothing to separate, the model is the constant
        return BagOfNgrams([seen[0]] * len(texts), 0, 1.0 if C is None else C)
    model = make_pipeline(
        CountVectorizer(binary=True, ngram_range=ngram_range, token_pattern=r"(?u)\b\w+\b"),  # one-letter words too
        LogisticRegression(C=1.0 if C is None else C, max_iter=1000),
    )
    folds = min(5, *Counter(train_labels).values())
    if C is None and folds >= 2:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        macro_f1 = make_scorer(f1_score, average="macro", zero_division=0)
        search = GridSearchCV(model, {"logisticregression__C": list(C_GRID)}, cv=cv, scoring=macro_f1)
        model = search.fit(list(train_texts), list(train_labels)).best_estimator_
    else:
        model.fit(list(train_texts), list(train_labels))
    regression = model[-1]
    return BagOfNgrams(
        [int(y) for y in model.predict(list(texts))] if texts else [],
        int(regression.coef_.size + regression.intercept_.size),
        float(regression.C),
    )
