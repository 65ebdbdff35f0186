"""Validation numbers: every token scored once, loss equal to the causal loss, bits per byte from the byte table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SAMPLE_TEXT, random_ids, tiny_model

from minilm import causal_lm_loss
from minilm.training.corpus import TokenStream, token_byte_lengths
from minilm.training.evaluate import bits_per_byte, evaluate_causal


def stream_of(ids: torch.Tensor) -> TokenStream:
    return TokenStream(ids.numpy().astype(np.uint16), np.array([0, len(ids)]), 0)


def test_evaluation_scores_every_token_once_and_equals_the_causal_loss():
    model = tiny_model(seed=1)  # max_len 64
    ids = random_ids(1, 64, seed=2)[0]
    bytes_per_token = np.full(300, 2)
    one_window = evaluate_causal(model, stream_of(ids), bytes_per_token)
    assert one_window["tokens"] == 63 and one_window["bytes"] == 126
    assert one_window["loss"] == pytest.approx(causal_lm_loss(model(ids[None]), ids[None]).item(), rel=1e-5)
    # a stream longer than the context: windows overlap by one token, each token after the first scored once
    long_ids = random_ids(1, 200, seed=3)[0]
    many = evaluate_causal(model, stream_of(long_ids), bytes_per_token, batch_size=2)
    assert many["tokens"] == 199 and many["bytes"] == 398
    total = 0.0
    for s in range(0, 199, 63):
        window = long_ids[s : s + 64][None]
        total += causal_lm_loss(model(window), window).item() * (window.size(1) - 1)
    assert many["loss"] == pytest.approx(total / 199, rel=1e-5)
    assert many["perplexity"] == pytest.approx(math.exp(many["loss"]))


def test_a_uniform_model_costs_log2_vocab_bits_per_token(tokenizer):
    model = tiny_model(vocab_size=tokenizer.vocab_size)
    with torch.no_grad():
        model.tok_emb.weight.zero_()  # all logits 0: p = 1/V for every token
    ids = torch.tensor(tokenizer.encode("".join(SAMPLE_TEXT[:3])))
    lengths = token_byte_lengths(tokenizer)
    result = evaluate_causal(model, stream_of(ids), lengths)
    scored_bytes = int(lengths[ids[1:].numpy()].sum())
    assert result["loss"] == pytest.approx(math.log(tokenizer.vocab_size))
    assert result["bytes"] == scored_bytes
    assert result["bits_per_byte"] == pytest.approx(math.log2(tokenizer.vocab_size) * len(ids[1:]) / scored_bytes)


def test_bits_per_byte_converts_nats_to_bits_and_needs_bytes():
    assert bits_per_byte(math.log(2) * 12, 4) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="at least one scored byte"):
        bits_per_byte(1.0, 0)
