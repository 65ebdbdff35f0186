"""Contextual calibration (Zhao et al. 2021): divide the label probabilities by those of a content-free input.

    p_cal(y | x) ∝ p(y | x) / p(y | "N/A")

Docs: docs/prompting.md (contextual calibration).
"""

from __future__ import annotations

import torch
from torch import Tensor


def calibrate(scores: Tensor, content_free_scores: Tensor) -> Tensor:
    """log p_cal(y | x) = log softmax(s(x))_y - log softmax(s("N/A"))_y, renormalised over the labels y.

    Zhao et al.'s contextual calibration: scores (N, C), content_free_scores (1, C) or (N, C).
    """
    return torch.log_softmax(torch.log_softmax(scores, dim=-1) - torch.log_softmax(content_free_scores, dim=-1), dim=-1)
