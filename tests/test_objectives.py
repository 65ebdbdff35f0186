"""Losses and BERT masking: the equations by hand, padding ignored, the 15% / 80-10-10 rule measured."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_ids

from minilm import IGNORE_INDEX, causal_lm_loss, mask_tokens, masked_lm_loss
from minilm.tokenizer import CLS_ID, MASK_ID, NUM_SPECIAL_TOKENS, PAD_ID, SEP_ID
from minilm.training.objectives import masked_lm_loss_on_selected


def test_causal_lm_loss_is_mean_negative_log_likelihood_of_the_next_token():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    log_p = torch.log_softmax(logits, dim=-1)
    by_hand = -sum(log_p[b, i - 1, ids[b, i]] for b in range(2) for i in range(1, 5)) / 8
    torch.testing.assert_close(causal_lm_loss(logits, ids), by_hand)


def test_causal_lm_loss_ignores_padding():
    """Right or left padding changes nothing: the loss equals the loss of the unpadded sequence."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 11, generator=g)
    ids = torch.randint(NUM_SPECIAL_TOKENS, 11, (1, 4), generator=g)
    alone = causal_lm_loss(logits, ids)
    junk = torch.randn(1, 3, 11, generator=g)
    pads = torch.full((1, 3), PAD_ID)
    right = causal_lm_loss(
        torch.cat([logits, junk], 1), torch.cat([ids, pads], 1), torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    )
    left = causal_lm_loss(
        torch.cat([junk, logits], 1), torch.cat([pads, ids], 1), torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    )
    torch.testing.assert_close(right, alone)
    torch.testing.assert_close(left, alone)


def test_causal_lm_loss_weighs_every_real_pair_the_same():
    """N counts the pairs of the whole batch: a row of 2 real tokens and a row of 6 weigh 1 pair and 5 pairs."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 11, generator=g)
    ids = torch.randint(NUM_SPECIAL_TOKENS, 11, (2, 6), generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    log_p = torch.log_softmax(logits.double(), dim=-1)
    pairs = [(0, 1)] + [(1, i) for i in range(1, 6)]
    by_hand = -sum(log_p[b, i - 1, ids[b, i]] for b, i in pairs) / len(pairs)
    torch.testing.assert_close(causal_lm_loss(logits, ids, mask).double(), by_hand, rtol=1e-5, atol=1e-6)


def test_uniform_prediction_costs_log_vocab_size():
    ids = random_ids(3, 6, vocab_size=50)
    assert math.isclose(causal_lm_loss(torch.zeros(3, 6, 50), ids).item(), math.log(50), rel_tol=1e-6)


def test_masking_statistics_follow_the_bert_rule():
    """Over many draws: 15% of eligible positions selected; of those 80% [MASK], 10% random, 10% unchanged."""
    vocab_size = 1000
    ids = torch.randint(NUM_SPECIAL_TOKENS, vocab_size, (400, 250), generator=torch.Generator().manual_seed(1))
    corrupted, labels = mask_tokens(ids, vocab_size, torch.Generator().manual_seed(2))
    selected = labels != IGNORE_INDEX
    n = selected.sum().item()
    became_mask = (corrupted == MASK_ID) & selected
    unchanged = (corrupted == ids) & selected
    became_random = selected & ~became_mask & ~unchanged  # a random draw can hit the original token (1/993)
    assert abs(n / ids.numel() - 0.15) < 0.005
    assert abs(became_mask.sum().item() / n - 0.8) < 0.01
    assert abs(became_random.sum().item() / n - 0.1) < 0.01
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(corrupted[~selected], ids[~selected]), "unselected positions are never changed"
    assert corrupted[became_random].ge(NUM_SPECIAL_TOKENS).all(), "random replacements are ordinary tokens"


def test_special_and_padding_tokens_are_never_selected():
    vocab_size = 100
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(NUM_SPECIAL_TOKENS, vocab_size, (200, 40), generator=g)
    ids[:, 0], ids[:, 20] = CLS_ID, SEP_ID
    ids[:, 30:] = PAD_ID
    attention_mask = (ids != PAD_ID).long()
    ids[:, 25] = 50  # an ordinary token that the attention mask marks as padding
    attention_mask[:, 25] = 0
    corrupted, labels = mask_tokens(ids, vocab_size, g, attention_mask=attention_mask, mask_prob=0.5)
    never = torch.zeros_like(ids, dtype=torch.bool)
    never[:, [0, 20, 25]] = True
    never[:, 30:] = True
    assert labels[never].eq(IGNORE_INDEX).all()
    assert torch.equal(corrupted[never], ids[never])
    assert labels[~never].ne(IGNORE_INDEX).float().mean() > 0.4


def test_masking_is_reproducible_from_the_seed():
    ids = random_ids(8, 30)
    first = mask_tokens(ids, 300, torch.Generator().manual_seed(7))
    again = mask_tokens(ids, 300, torch.Generator().manual_seed(7))
    other = mask_tokens(ids, 300, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_masked_lm_loss_counts_only_selected_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 20, generator=g)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 1], labels[1, 4] = 9, 13
    log_p = torch.log_softmax(logits, dim=-1)
    by_hand = -(log_p[0, 1, 9] + log_p[1, 4, 13]) / 2
    torch.testing.assert_close(masked_lm_loss(logits, labels), by_hand)
    changed = logits.clone()
    changed[0, 0] += 100.0  # an unselected position
    torch.testing.assert_close(masked_lm_loss(changed, labels), by_hand)


def test_masked_lm_loss_with_nothing_selected_is_zero_not_nan():
    logits = torch.randn(1, 3, 10, requires_grad=True)
    loss = masked_lm_loss(logits, torch.full((1, 3), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.eq(0).all()


def test_bad_mask_probability_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mask_prob must be in \(0, 1\)"):
        mask_tokens(random_ids(1, 4), 300, torch.Generator(), mask_prob=1.5)


def test_masked_loss_on_selected_positions_equals_the_loss_over_the_full_output_layer():
    torch.manual_seed(0)
    hidden = torch.randn(3, 10, 16, requires_grad=True)
    E = torch.randn(50, 16, requires_grad=True)
    labels = torch.full((3, 10), IGNORE_INDEX)
    labels[0, 2], labels[1, 5], labels[2, 9], labels[2, 0] = 7, 8, 9, 49
    full = masked_lm_loss(hidden @ E.T, labels)
    selected = masked_lm_loss_on_selected(hidden, E, labels)
    torch.testing.assert_close(selected, full)
    g_full = torch.autograd.grad(full, (hidden, E))
    g_sel = torch.autograd.grad(selected, (hidden, E))
    for a, b in zip(g_full, g_sel):
        torch.testing.assert_close(a, b)
