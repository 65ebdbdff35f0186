"""Exercises of the training layer: the causal LM loss.

Docs: docs/course.md (the exercises), docs/objectives.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.exercises.exercise import Exercise


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
