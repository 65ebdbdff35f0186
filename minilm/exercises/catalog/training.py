"""Exercises of the data and training layers: BPE merges, the causal LM loss.

Docs: docs/course.md (the exercises), docs/objectives.md.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.exercises.exercise import Exercise


# ---- BPE merges -----------------------------------------------------------------------------------------------------
def merge_everywhere(symbols: list[str], best: tuple[str, str], first_only: bool = False) -> None:
    i = 0
    while i < len(symbols) - 1:
        if (symbols[i], symbols[i + 1]) == best:
            symbols[i : i + 2] = [best[0] + best[1]]
            if first_only:
                return
        i += 1


def bpe_merges_unweighted(words: dict[str, int], n_merges: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """Pairs counted once per distinct word: the word counts c(w) left out."""
    return _bpe(words, n_merges, min_frequency, weighted=False)


def bpe_merges_first_occurrence(words: dict[str, int], n_merges: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """Only the first a* b* of each word merged, not every one."""
    return _bpe(words, n_merges, min_frequency, first_only=True)


def bpe_merges_ties_high(words: dict[str, int], n_merges: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """Ties between equally frequent pairs go to the higher ids (the last pair found)."""
    return _bpe(words, n_merges, min_frequency, ties_high=True)


def _bpe(words, n_merges, min_frequency, weighted=True, first_only=False, ties_high=False):
    """bpe_merges with one of the mistakes switched on."""
    rank = {symbol: i for i, symbol in enumerate(sorted({ch for word in words for ch in word}))}
    segmented = [(list(word), count) for word, count in words.items()]
    merges = []
    while len(merges) < n_merges:
        pairs: dict[tuple[str, str], int] = {}
        for symbols, count in segmented:
            for pair in itertools.pairwise(symbols):
                pairs[pair] = pairs.get(pair, 0) + (count if weighted else 1)
        if not pairs:
            break
        sign = -1 if ties_high else 1
        best = min(pairs, key=lambda pair: (-pairs[pair], sign * rank[pair[0]], sign * rank[pair[1]]))
        if pairs[best] < min_frequency:
            break
        merges.append(best)
        rank[best[0] + best[1]] = len(rank)
        for symbols, _ in segmented:
            merge_everywhere(symbols, best, first_only)
    return merges


def bpe_merges_by_regex(words: dict[str, int], n_merges: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """Sennrich et al.'s form: each word a string of symbols joined by a separator, merged by a regular expression."""
    import re

    sep = "\x00"
    rank = {symbol: i for i, symbol in enumerate(sorted({ch for word in words for ch in word}))}
    vocab = {sep.join(word): count for word, count in words.items()}
    merges = []
    for _ in range(n_merges):
        pairs: dict[tuple[str, str], int] = {}
        for word, count in vocab.items():
            symbols = word.split(sep)
            for pair in itertools.pairwise(symbols):
                pairs[pair] = pairs.get(pair, 0) + count
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], -rank[pair[0]], -rank[pair[1]]))
        if pairs[best] < min_frequency:
            break
        merges.append(best)
        rank[best[0] + best[1]] = len(rank)
        pattern = re.compile(f"(?<![^{sep}]){re.escape(best[0] + sep + best[1])}(?![^{sep}])")
        vocab = {pattern.sub(best[0] + best[1], word): count for word, count in vocab.items()}
    return merges


def causal_loss_without_shift(logits: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """No label shift: position i's logits are scored against token i itself, not token i + 1."""
    labels = input_ids.clone()
    if attention_mask is not None:
        labels = labels.masked_fill(~attention_mask.bool(), -100)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)


def causal_loss_counting_padding(logits: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """The attention mask ignored: padding is predicted and counted in N."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())


def causal_loss_mean_of_rows(logits: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """The mean of each sequence's mean: a short sequence weighs as much as a long one (N is not the pair count)."""
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    pairs = (real[:, 1:] & real[:, :-1]).float()
    nll = -torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return ((nll * pairs).sum(dim=1) / pairs.sum(dim=1).clamp(min=1)).mean()


def causal_loss_by_gather(logits: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """The loss from log_softmax and gather, weighted by the pairs of real tokens."""
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    pairs = (real[:, 1:] & real[:, :-1]).float()
    nll = -torch.log_softmax(logits[:, :-1].double(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return ((nll * pairs).sum() / pairs.sum()).to(logits.dtype if logits.is_floating_point() else torch.float32)


EXERCISES = (
    Exercise(
        id="bpe-merges",
        target="minilm.bpe:bpe_merges",
        docs="docs/tokenizer.md#bytes-first-then-merges",
        tests=("tests/test_tokenizer.py::test_bpe_merges_written_out_are_the_merges_the_tokenizers_trainer_learns",),
        hints=(
            "Count every adjacent pair of symbols in every word, each weighted by how often the word occurs.",
            "The winner has the highest count; among equal counts, the lowest (rank of a, rank of b): the alphabet is "
            "ranked by code point, and each new symbol takes the next rank.",
            "Replace every occurrence of the pair in every word, left to right; stop when its count < min_frequency.",
        ),
        mutants=(bpe_merges_unweighted, bpe_merges_first_occurrence, bpe_merges_ties_high),
        alternatives=(bpe_merges_by_regex,),
    ),
    Exercise(
        id="causal-lm-loss",
        target="minilm.training.objectives:causal_lm_loss",
        docs="docs/objectives.md#causal-autoregressive-language-modelling",
        tests=(
            "tests/test_objectives.py::test_causal_lm_loss_is_mean_negative_log_likelihood_of_the_next_token",
            "tests/test_objectives.py::test_causal_lm_loss_ignores_padding",
            "tests/test_objectives.py::test_uniform_prediction_costs_log_vocab_size",
            "tests/test_objectives.py::test_causal_lm_loss_weighs_every_real_pair_the_same",
        ),
        hints=(
            "Position i - 1's logits predict token i: compare logits[:, :-1] with input_ids[:, 1:].",
            "A pair counts only when both tokens are real: attention_mask[:, 1:] & attention_mask[:, :-1].",
            "N is the number of counted pairs over the whole batch: sum the losses, divide by N once.",
        ),
        mutants=(causal_loss_without_shift, causal_loss_counting_padding, causal_loss_mean_of_rows),
        alternatives=(causal_loss_by_gather,),
    ),
)
