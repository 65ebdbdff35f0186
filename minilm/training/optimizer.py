"""The optimizer every loop uses: AdamW with weight decay on weight matrices only, and a warm-up + cosine schedule.

    eta(t) = eta_max (t+1)/W                                              t < W
           = eta_min + (eta_max - eta_min) (1 + cos(pi (t-W)/(S-W))) / 2    W <= t <= S
    theta <- AdamW(theta, g, eta(t), lambda)        lambda on the weight matrices of linear layers, 0 elsewhere

W = warmup_steps, S = max_steps; eta_min = None keeps the rate at eta_max after the warm-up (a constant schedule).
The decay rule is the same for pretraining, tuning and instruction tuning: biases, LayerNorm gains and shifts,
embeddings and a tuning method's own vectors (soft prompts, prefixes, LoRA's A and B) are never decayed.

Docs: docs/training.md (learning rate; AdamW with weight decay on matrices only).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import nn


class Schedule(Protocol):
    lr: float
    min_lr: float | None
    warmup_steps: int
    max_steps: int


def learning_rate(step: int, config: Schedule) -> float:
    """eta(t) = eta_max (t+1)/W for t < W, then eta_min + (eta_max - eta_min) (1 + cos(pi (t-W)/(S-W))) / 2.

    W = warmup_steps, S = max_steps: a linear warm-up to the peak, then a cosine decay to eta_min at S
    (eta_min None: no decay, the rate stays at the peak).
    """
    W, S = config.warmup_steps, config.max_steps
    if step < W:
        return config.lr * (step + 1) / W
    min_lr = config.lr if config.min_lr is None else config.min_lr
    progress = min(1.0, (step - W) / max(1, S - W))
    return min_lr + (config.lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: decay on the weight matrices of linear layers; none on biases,
    LayerNorm, embeddings or any other tensor (a soft prompt, a prefix, LoRA's A and B)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW(betas) over `parameter_groups`; the learning rate is set every step."""
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas)
