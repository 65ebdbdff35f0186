"""Pretraining objectives: the causal LM loss, BERT's masking rule and the masked LM loss.

Both losses are cross-entropies averaged over the positions that count (the docs give them as sums;
dividing by the number of counted positions makes batches of different lengths comparable). The instruction-tuning
loss mixes the causal loss over the whole sequence with one over the output tokens only.

Docs: docs/objectives.md, docs/prompting.md (the instruction tuning loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.tokenizer import MASK_ID, NUM_SPECIAL_TOKENS

IGNORE_INDEX = -100
"""Label of a position that contributes no loss."""


def causal_lm_loss(logits: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """L = -(1/N) sum_i log p(x_i | x_<i): position i-1's logits predict token i.

    A pair (i-1, i) counts only when both tokens are real (attention_mask 1), so padding is neither
    predicted nor used as the context of a first token. N is the number of counted pairs.
    """
    if logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match input_ids {tuple(input_ids.shape)} in (batch, seq)"
        )
    targets = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)  # the label of position t is x_{t+1};
    targets[:, :-1] = input_ids[:, 1:]  # shifting the labels, not the logits, avoids copying a (B, T, V) tensor
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}"
            )
        real = attention_mask.bool()
        targets[:, :-1].masked_fill_(~(real[:, 1:] & real[:, :-1]), IGNORE_INDEX)
    return token_cross_entropy(logits, targets)


def token_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """-(1/|M|) sum_{i in M} log softmax(z_i)_{y_i} over the positions M whose label is not IGNORE_INDEX.

    With no counted position the loss is 0 (still connected to the graph), not NaN. Written without a branch on the
    labels (the sum over M divided by max(|M|, 1)), so torch.compile sees one graph and the host never waits for it.
    """
    flat_logits = logits.reshape(-1, logits.size(-1)).float()
    flat_labels = labels.reshape(-1)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (flat_labels != IGNORE_INDEX).sum().clamp(min=1)


def mask_tokens(
    input_ids: Tensor,
    vocab_size: int,
    generator: torch.Generator,
    attention_mask: Tensor | None = None,
    mask_prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """BERT's masking rule. Returns (corrupted input_ids, labels).

    Each real, non-special position is selected with probability `mask_prob` (15%); a selected
    position becomes [MASK] with probability 0.8, a uniformly random non-special token with 0.1,
    and stays unchanged with 0.1. labels hold the original token at selected positions and
    IGNORE_INDEX elsewhere. All draws come from `generator`, so a seeded generator reproduces them.
    """
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    if vocab_size <= NUM_SPECIAL_TOKENS:
        raise ValueError(
            f"vocab_size={vocab_size} leaves no ordinary tokens to draw "
            f"(the first {NUM_SPECIAL_TOKENS} ids are special)"
        )
    device = input_ids.device
    eligible = input_ids >= NUM_SPECIAL_TOKENS  # special tokens (including [PAD]) are never selected
    if attention_mask is not None:
        eligible &= attention_mask.bool()

    def uniform() -> Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=device)

    selected = eligible & (uniform() < mask_prob)
    action = uniform()  # one draw decides: < 0.8 -> [MASK], < 0.9 -> random token, else unchanged
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    random_tokens = torch.randint(NUM_SPECIAL_TOKENS, vocab_size, input_ids.shape, generator=generator, device=device)

    corrupted = torch.where(to_mask, torch.full_like(input_ids, MASK_ID), input_ids)
    corrupted = torch.where(to_random, random_tokens.to(input_ids.dtype), corrupted)
    labels = torch.where(selected, input_ids.long(), torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long))
    return corrupted, labels


def masked_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """L = -(1/|M|) sum_{i in M} log p(x_i | x_\\M), M = the selected positions (labels != IGNORE_INDEX)."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    return token_cross_entropy(logits, labels)


def masked_lm_loss_on_selected(hidden: Tensor, output_embedding: Tensor, labels: Tensor) -> Tensor:
    """The masked LM loss computing logits z_i = h_i E^T only at the selected positions i in M.

    Equal to masked_lm_loss(h E^T, labels), but the output layer costs |M| d V instead of T d V
    multiply-adds: about 15% of it at BERT's masking rate. Inside torch.compile it computes the logits everywhere
    (the same loss): picking out |M| positions gives a tensor whose shape depends on the data, which breaks the graph.
    """
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"hidden states {tuple(hidden.shape)} do not match labels {tuple(labels.shape)}")
    if torch.compiler.is_compiling():
        return masked_lm_loss(F.linear(hidden, output_embedding), labels)
    selected = labels != IGNORE_INDEX
    logits = F.linear(hidden[selected], output_embedding)
    return token_cross_entropy(logits, labels[selected])


def instruction_loss(
    logits: Tensor,
    input_ids: Tensor,
    output_mask: Tensor,
    alpha: float = 1.0,
    output_only: bool = False,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """L = L_LM + alpha * L_align, or L_align alone when `output_only`.

    L_LM    = -(1/N) sum_i log p(x_i | x_<i)      over every real token of [instruction; input; output]
    L_align = -(1/|O|) sum_{i in O} log p(y_i | y_<i, x)     over the output tokens O only
    output_mask (B, T) is True at the output tokens. Both terms are means (like the pretraining losses), so alpha
    weighs the output tokens against the whole sequence independently of their lengths.
    """
    if output_mask.shape != input_ids.shape:
        raise ValueError(f"output_mask {tuple(output_mask.shape)} does not match input_ids {tuple(input_ids.shape)}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    targets = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)  # the label of position t is x_{t+1}
    targets[:, :-1] = input_ids[:, 1:]
    is_output = output_mask.bool()
    if attention_mask is not None:
        is_output = is_output & attention_mask.bool()
    align_targets = targets.masked_fill(
        ~torch.cat([is_output[:, 1:], torch.zeros_like(is_output[:, :1])], dim=1), IGNORE_INDEX
    )
    align = token_cross_entropy(logits, align_targets)
    if output_only:
        return align
    return causal_lm_loss(logits, input_ids, attention_mask) + alpha * align
