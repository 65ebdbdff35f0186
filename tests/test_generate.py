"""Generation with a KV cache (same logits as recomputing), sampling filters, stopping, and fill-mask."""

from __future__ import annotations

import pytest
import torch
from conftest import random_ids, tiny_config, tiny_model

from minilm import KVCache, Transformer, fill_mask, generate, mask_tokens, masked_lm_loss
from minilm.model.sampling import sample_next_token, top_k_filter, top_p_filter
from minilm.tokenizer import CLS_ID, NUM_SPECIAL_TOKENS, PAD_ID, SEP_ID


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_kv_cache_decoding_gives_the_same_logits_as_recomputing(backend):
    """Greedy decoding step by step: the cached step's logits equal a full forward over the whole sequence."""
    model = tiny_model(attention=backend)
    ids = random_ids(2, 5)
    cache = KVCache(model.config.n_layers)
    logits = model(ids, cache=cache)[:, -1]
    for _ in range(10):
        recomputed = model(ids)[:, -1]
        torch.testing.assert_close(logits, recomputed, rtol=1e-5, atol=1e-5)
        token = logits.argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        logits = model(token, cache=cache)[:, -1]


@pytest.mark.parametrize(
    "sampling", [dict(temperature=0.0), dict(temperature=0.9, top_k=20, top_p=0.9)], ids=["greedy", "sampled"]
)
def test_cached_and_uncached_generation_agree(sampling):
    model = tiny_model()
    ids = random_ids(3, 4)
    cached = generate(model, ids, 12, seed=3, **sampling)
    uncached = generate(model, ids, 12, seed=3, use_cache=False, **sampling)
    assert cached.shape == (3, 16)
    assert torch.equal(cached, uncached)


def test_greedy_generation_is_deterministic():
    model = tiny_model()
    ids = random_ids(2, 4)
    assert torch.equal(
        generate(model, ids, 10, temperature=0.0, seed=1), generate(model, ids, 10, temperature=0.0, seed=2)
    )


def test_sampling_is_reproducible_from_the_seed():
    model = tiny_model()
    ids = random_ids(2, 4)
    assert torch.equal(generate(model, ids, 15, seed=5), generate(model, ids, 15, seed=5))
    assert not torch.equal(generate(model, ids, 15, seed=5), generate(model, ids, 15, seed=6))


def test_temperature_zero_is_argmax():
    logits = torch.randn(4, 30)
    assert torch.equal(sample_next_token(logits, 0.0, None, None, torch.Generator()), logits.argmax(-1))


def test_top_k_keeps_exactly_the_k_largest_logits():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    filtered = top_k_filter(logits, 2)
    assert torch.isfinite(filtered).tolist() == [[False, True, False, True, False]]
    assert torch.equal(filtered[torch.isfinite(filtered)], logits[torch.isfinite(filtered)])


def test_top_k_keeps_exactly_k_tokens_when_logits_tie_breaking_ties_by_id():
    logits = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5], [5.0, 5.0, 5.0, 5.0, 5.0]])
    kept = torch.isfinite(top_k_filter(logits, 2)).tolist()
    assert kept == [[False, True, True, False, False], [True, True, False, False, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [False, True, False, False]
    assert kept(0.79) == [False, True, False, True]
    assert kept(0.81) == [False, True, True, True]
    assert kept(1.0) == [True, True, True, True]


def test_sampling_never_draws_a_filtered_token():
    logits = torch.zeros(1, 50)
    logits[0, :3] = torch.tensor([5.0, 4.0, 3.0])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next_token(logits, 1.0, 2, None, g)) for _ in range(200)}
    assert draws == {0, 1}


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampled_frequencies_follow_the_softmax_of_the_logits_over_the_temperature(temperature):
    """50,000 draws (one per row): each token's frequency is within 0.01 (4.5 standard errors) of softmax(z / tau)."""
    z = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    n = 50_000
    draws = sample_next_token(z.expand(n, -1), temperature, None, None, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=z.numel()).double() / n
    expected = torch.softmax(z.double() / temperature, dim=-1)
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.01)


def test_generation_stops_each_row_at_eos_and_pads_after():
    model = tiny_model()
    ids = random_ids(2, 4, seed=4)
    free = generate(model, ids, 8, temperature=0.0, eos_id=None)
    eos = int(free[0, 6])  # make row 0's third new token the end-of-sequence token
    row0_eos_at = (free[0, 4:] == eos).nonzero()[0].item() + 4
    stopped = generate(model, ids, 8, temperature=0.0, eos_id=eos)
    assert stopped[0, row0_eos_at] == eos
    assert stopped[0, row0_eos_at + 1 :].eq(PAD_ID).all()
    row1_hits = (free[1, 4:] == eos).nonzero()
    row1_end = row1_hits[0].item() + 4 + 1 if len(row1_hits) else free.size(1)
    assert torch.equal(stopped[1, :row1_end], free[1, :row1_end])
    assert stopped.size(1) == max(row0_eos_at + 1, row1_end)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_prompts_generate_what_each_prompt_generates_alone(side, tokenizer):
    model = tiny_model()
    texts = ["to be or not", "the quick brown fox jumps"]
    batch = tokenizer.encode_batch(texts, side=side)
    out = generate(model, batch["input_ids"], 6, attention_mask=batch["attention_mask"], temperature=0.0, eos_id=None)
    for row, text in enumerate(texts):
        alone = generate(model, torch.tensor([tokenizer.encode(text)]), 6, temperature=0.0, eos_id=None)
        assert out[row, -6:].tolist() == alone[0, -6:].tolist()


def test_generation_with_a_prefix_uses_it_in_the_cache_and_changes_the_output():
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    shape = (1, model.config.n_heads, 4, model.config.head_dim)
    prefix = [
        (2 * torch.randn(shape, generator=g), 2 * torch.randn(shape, generator=g)) for _ in range(model.config.n_layers)
    ]
    ids = random_ids(1, 3)
    cached = generate(model, ids, 10, prefix=prefix, temperature=0.0, eos_id=None)
    uncached = generate(model, ids, 10, prefix=prefix, temperature=0.0, eos_id=None, use_cache=False)
    plain = generate(model, ids, 10, temperature=0.0, eos_id=None)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, plain)


def test_asking_for_more_tokens_than_max_len_is_a_clear_error():
    model = tiny_model(max_len=16)
    with pytest.raises(
        ValueError,
        match=r"prompt has 10 tokens and max_new_tokens=7, but the model's max_len is 16: .*at most 6 new tokens",
    ):
        generate(model, random_ids(1, 10), 7)


def test_generate_restores_training_mode():
    model = tiny_model().train()
    generate(model, random_ids(1, 3), 2)
    assert model.training


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-1.0), "temperature must be >= 0"),
        (dict(top_k=0), "top_k must be >= 1"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_sampling_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model(), random_ids(1, 3), 2, **kwargs)


def test_generate_rejects_a_bidirectional_model():
    with pytest.raises(ValueError, match="generate needs a causal model"):
        generate(tiny_model(causal=False), random_ids(1, 3), 2)


# ---- fill-mask --------------------------------------------------------------------------------
def test_fill_mask_returns_the_model_probabilities_of_each_mask(tokenizer):
    model = tiny_model(causal=False)
    text = "to [MASK] or not to [MASK]"
    result = fill_mask(model, tokenizer, text, top_k=4)
    ids = torch.tensor([[CLS_ID, *tokenizer.encode(text), SEP_ID]])
    logits = model(ids)[0, ids[0] == tokenizer.mask_id]
    logits[:, :NUM_SPECIAL_TOKENS] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    assert len(result) == 2
    for row, candidates in zip(probs, result):
        top = torch.topk(row, 4)
        assert [token for token, _ in candidates] == [tokenizer.decode([i]) for i in top.indices.tolist()]
        assert [p for _, p in candidates] == pytest.approx(top.values.tolist())


def test_fill_mask_predicts_the_word_a_trained_masked_model_learned(tokenizer):
    sentence = "to be or not to be that is the question"
    ids = torch.tensor([[CLS_ID, *tokenizer.encode(sentence), SEP_ID]] * 8)
    model = Transformer(tiny_config(causal=False), seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        corrupted, labels = mask_tokens(ids, model.config.vocab_size, g, mask_prob=0.3)
        loss = masked_lm_loss(model(corrupted), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert len(tokenizer.encode(" be")) == 1, "the masked word must be one token for one [MASK]"
    best_token, best_p = fill_mask(model, tokenizer, "to be or not to[MASK] that is the question", top_k=1)[0][0]
    assert best_token == " be"
    assert best_p > 0.5


def test_fill_mask_errors_are_clear(tokenizer):
    with pytest.raises(ValueError, match="the text has no \\[MASK\\] token"):
        fill_mask(tiny_model(causal=False), tokenizer, "no mask here")
    with pytest.raises(ValueError, match="fill_mask needs a masked \\(bidirectional\\) model"):
        fill_mask(tiny_model(causal=True), tokenizer, "a [MASK]")
