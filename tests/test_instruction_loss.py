"""The instruction-tuning loss: L = L_LM + alpha * L_align, by hand from per-token losses, and output-only mode."""

from __future__ import annotations

import pytest
import torch

from minilm.training.objectives import instruction_loss


def per_token_nll(logits, ids):
    """-log p(x_{t+1} | x_<=t) for t = 0 .. T-2, shape (B, T-1)."""
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


def example():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 11, generator=g, requires_grad=True)
    ids = torch.randint(0, 11, (2, 7), generator=g)
    output = torch.tensor(
        [[0, 0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0]], dtype=torch.bool
    )  # row 2: padding after the output
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    return logits, ids, output, mask


def test_instruction_loss_equals_the_hand_computed_mix_of_whole_sequence_and_output_losses():
    logits, ids, output, mask = example()
    nll = per_token_nll(logits, ids)
    real_pairs = (mask[:, 1:] & mask[:, :-1]).bool()
    L_lm = nll[real_pairs].mean()
    L_align = nll[output[:, 1:]].mean()  # target x_{t+1} is an output token
    for alpha in (0.0, 0.5, 2.0):
        got = instruction_loss(logits, ids, output, alpha=alpha, attention_mask=mask)
        torch.testing.assert_close(got, L_lm + alpha * L_align)
    torch.testing.assert_close(instruction_loss(logits, ids, output, output_only=True, attention_mask=mask), L_align)


def test_output_only_loss_gives_no_gradient_to_predictions_of_instruction_tokens():
    logits, ids, output, mask = example()
    instruction_loss(logits, ids, output, output_only=True, attention_mask=mask).backward()
    predicts_output = torch.cat(
        [output[:, 1:], torch.zeros(2, 1, dtype=torch.bool)], dim=1
    )  # position t predicts x_{t+1}
    grad_norm = logits.grad.abs().sum(dim=-1)
    assert (grad_norm[~predicts_output] == 0).all(), "a position predicting an instruction token got a gradient"
    assert (grad_norm[predicts_output] > 0).all()


def test_with_alpha_the_instruction_tokens_are_learned_too():
    logits, ids, output, mask = example()
    instruction_loss(logits, ids, output, alpha=1.0, attention_mask=mask).backward()
    assert logits.grad[0, 0].abs().sum() > 0  # position 0 predicts an instruction token


def test_a_bad_output_mask_or_alpha_is_an_error():
    logits, ids, output, _ = example()
    with pytest.raises(ValueError, match="does not match"):
        instruction_loss(logits, ids, output[:, :3])
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        instruction_loss(logits, ids, output, alpha=-1)
