"""BPE merges written out: the rule `tokenizers` trains minilm's tokenizer with, in a few lines of Python.

    (a*, b*) = argmax_(a, b) sum_w c(w) n_w(a b)      n_w(a b): how often the symbols a b stand side by side in word w
    every a* b* becomes the new symbol a*b*; repeat until the most frequent pair occurs fewer than min_frequency times

Ties go to the pair with the lower ids, as in `tokenizers`: the byte alphabet is numbered in code-point order and
each merged symbol takes the next id. minilm trains its tokenizer with the Rust trainer (fast); this is the same
rule to read, and the reference of the `bpe-merges` exercise (tests/test_tokenizer.py checks they agree).

Docs: docs/tokenizer.md (bytes first, then merges).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable

from tokenizers import pre_tokenizers


def word_counts(texts: Iterable[str]) -> dict[str, int]:
    """c(w): how often each word occurs, the words as the byte-level pre-tokenizer splits them (GPT-2's alphabet)."""
    split = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return dict(Counter(word for text in texts for word, _ in split.pre_tokenize_str(text)))


def bpe_merges(words: dict[str, int], n_merges: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """(a*, b*) = argmax_(a, b) sum_w c(w) n_w(a b), merged everywhere, n_merges times (ties: the lower ids first)."""
    rank = {symbol: i for i, symbol in enumerate(sorted({ch for word in words for ch in word}))}
    segmented = [(list(word), count) for word, count in words.items()]
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in segmented:
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], rank[pair[0]], rank[pair[1]]))
        if pairs[best] < min_frequency:
            break
        merges.append(best)
        rank[best[0] + best[1]] = len(rank)
        for symbols, _ in segmented:  # left to right, so "a a a" becomes "aa a"
            i = 0
            while i < len(symbols) - 1:
                if (symbols[i], symbols[i + 1]) == best:
                    symbols[i : i + 2] = [best[0] + best[1]]
                i += 1
    return merges
