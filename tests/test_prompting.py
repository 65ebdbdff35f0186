"""Prompting: templates keep their answer slot under truncation, verbalizer scores equal hand computations,
zero-shot picks the argmax, few-shot prompts are balanced and reproducible, calibration removes the prior."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from minilm import Transformer
from minilm.prompting import (
    Rendered,
    Template,
    Verbalizer,
    base_logits,
    calibrate,
    demonstration,
    few_shot_demonstrations,
    few_shot_prefixes,
    label_scores,
    word_scores,
)
from minilm.tokenizer import CLS_ID, MASK_ID, SEP_ID

CAUSAL = Template("Sentence: {text}\nAnswer:")
MASKED = Template("Sentence: {text} Answer: [MASK].")


def test_rendering_tokenizes_like_the_whole_string(tokenizer):
    r = CAUSAL.render(tokenizer, {"text": "to be or not to be"}, budget=64)
    assert r.ids == tokenizer.encode("Sentence: to be or not to be\nAnswer:")
    assert r.slot == len(r.ids)


def test_truncation_cuts_only_the_field_and_keeps_the_template_and_slot(tokenizer):
    long_text = "whether tis nobler in the mind to suffer the slings and arrows " * 5
    full = CAUSAL.render(tokenizer, {"text": long_text}, budget=1000)
    cut = CAUSAL.render(tokenizer, {"text": long_text}, budget=20, slot_tokens=2)
    assert len(cut.ids) + 2 <= 20  # room is left for a 2-token answer
    literal_start, literal_end = tokenizer.encode("Sentence:"), tokenizer.encode("\nAnswer:")
    assert cut.ids[: len(literal_start)] == literal_start and cut.ids[-len(literal_end) :] == literal_end
    assert (
        cut.ids[len(literal_start) : -len(literal_end)]
        == full.ids[len(literal_start) : len(literal_start) + len(cut.ids) - len(literal_start) - len(literal_end)]
    )
    assert cut.slot == len(cut.ids)


def test_masked_templates_put_k_masks_at_the_slot_inside_cls_and_sep(tokenizer):
    r = MASKED.render(tokenizer, {"text": "to be or not to be " * 10}, budget=24, slot_tokens=3, add_special=True)
    assert len(r.ids) <= 24 and r.ids[0] == CLS_ID and r.ids[-1] == SEP_ID
    assert r.ids[r.slot : r.slot + 3] == [MASK_ID] * 3
    assert r.ids[r.slot + 3 : -1] == tokenizer.encode(".")


def test_template_errors_are_clear(tokenizer):
    with pytest.raises(ValueError, match="2 \\[MASK\\] slots"):
        Template("{text} [MASK] [MASK]")
    with pytest.raises(ValueError, match="no field"):
        Template("Answer: [MASK]")
    with pytest.raises(ValueError, match="needs the field\\(s\\) premise"):
        Template("{premise} ? [MASK] , {hypothesis}").render(tokenizer, {"hypothesis": "x"}, 64)
    with pytest.raises(ValueError, match="no room for the input"):
        CAUSAL.render(tokenizer, {"text": "to be"}, budget=5)


def test_multi_field_templates_fill_every_field(tokenizer):
    t = Template("{premise} ? [MASK] , {hypothesis}")
    r = t.render(tokenizer, {"premise": "to be", "hypothesis": "not to be"}, 64, add_special=True)
    assert tokenizer.decode(r.ids) == "to be ?  , not to be"  # decode skips [CLS], [MASK], [SEP]
    assert r.ids[r.slot] == MASK_ID


def hand_causal_score(model, prompt_ids, word):
    logp = torch.log_softmax(model(torch.tensor([prompt_ids + word]))[0], dim=-1)
    return sum(logp[len(prompt_ids) - 1 + j, t] for j, t in enumerate(word))


def test_causal_word_scores_equal_the_summed_log_probabilities_of_their_tokens(tokenizer):
    model = Transformer(tiny_config(), seed=0).eval()
    prompts = [CAUSAL.render(tokenizer, {"text": t}, 64) for t in ("to be", "the question is long and hard")]
    words = [(10,), (11, 12, 13)]
    scores = word_scores(base_logits(model), prompts, words, causal=True)
    normalized = word_scores(base_logits(model), prompts, words, causal=True, length_normalized=True)
    for n, p in enumerate(prompts):
        for w, word in enumerate(words):
            expected = hand_causal_score(model, p.ids, list(word))
            torch.testing.assert_close(scores[n, w], expected.detach(), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(normalized[n, w], expected.detach() / len(word), rtol=1e-5, atol=1e-5)


def test_masked_word_scores_read_each_token_at_its_own_mask(tokenizer):
    model = Transformer(tiny_config(causal=False), seed=0).eval()
    p = MASKED.render(tokenizer, {"text": "to be or not"}, 64, slot_tokens=2, add_special=True)
    scores = word_scores(base_logits(model), [p], [(20, 21)], causal=False)
    logp = torch.log_softmax(model(torch.tensor([p.ids]))[0], dim=-1)
    torch.testing.assert_close(scores[0, 0], (logp[p.slot, 20] + logp[p.slot + 1, 21]).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "masked"])
def test_zero_shot_picks_the_argmax_of_hand_computed_label_scores(tokenizer, causal):
    model = Transformer(tiny_config(causal=causal), seed=1).eval()
    template = CAUSAL if causal else MASKED
    verbalizer = Verbalizer.from_words(tokenizer, [[" be", " not"], " question"])  # label 0 has two words
    examples = [{"text": t} for t in ("to be or not", "that is the", "whether tis nobler")]
    scores = label_scores(base_logits(model), tokenizer, template, verbalizer, examples, causal, max_len=64)
    for n, values in enumerate(examples):
        per_word = []
        for group in verbalizer.words:
            s = []
            for word in group:
                r = template.render(tokenizer, values, 64, slot_tokens=len(word), add_special=not causal)
                if causal:
                    s.append(hand_causal_score(model, r.ids, list(word)))
                else:
                    logp = torch.log_softmax(model(torch.tensor([r.ids]))[0], dim=-1)
                    s.append(sum(logp[r.slot + j, t] for j, t in enumerate(word)))
            per_word.append(torch.logsumexp(torch.stack(s), dim=0))
        expected = torch.stack(per_word).detach()
        torch.testing.assert_close(scores[n], expected, rtol=1e-5, atol=1e-5)
        assert scores[n].argmax() == expected.argmax()


def test_few_shot_demonstrations_are_balanced_and_reproducible():
    labels = [0] * 10 + [1] * 7 + [2] * 5
    a = few_shot_demonstrations(range(len(labels)), labels, k=2, seed=3)
    assert sorted(labels[i] for i in a) == [0, 0, 1, 1, 2, 2]
    assert a == few_shot_demonstrations(range(len(labels)), labels, k=2, seed=3)
    assert a != few_shot_demonstrations(range(len(labels)), labels, k=2, seed=4)
    with pytest.raises(ValueError, match="label 2 has 5 examples, fewer than the 6"):
        few_shot_demonstrations(range(len(labels)), labels, k=6, seed=0)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "masked"])
def test_few_shot_truncation_drops_demonstrations_and_keeps_the_query_whole(tokenizer, causal):
    template = CAUSAL if causal else MASKED
    demos = [demonstration(tokenizer, template, {"text": "to be or not to be that is"}, " yes") for _ in range(6)]
    query = {"text": "whether tis nobler in the mind"}
    (prefix,) = few_shot_prefixes(tokenizer, template, demos, [query], longest_answer=1, causal=causal, max_len=120)
    whole = template.render(tokenizer, query, 10**6, add_special=not causal)
    assert len(prefix) % len(demos[0]) == 0 and 0 < len(prefix) < sum(map(len, demos))
    assert len(prefix) + len(whole.ids) + (1 if causal else 0) <= 120
    assert tokenizer.decode(demos[0]).startswith("Sentence: to be or not to be that is") and " yes" in tokenizer.decode(
        demos[0]
    )


def test_calibration_makes_the_content_free_input_uniform():
    scores = torch.tensor([[-1.0, -3.0], [-2.0, -2.5]])
    content_free = torch.tensor([[-0.5, -2.0]])
    calibrated = calibrate(scores, content_free)
    torch.testing.assert_close(calibrate(content_free, content_free).exp(), torch.full((1, 2), 0.5))
    prior = torch.softmax(content_free, dim=-1)
    expected = torch.softmax(scores, dim=-1) / prior
    torch.testing.assert_close(calibrated.exp(), expected / expected.sum(dim=-1, keepdim=True))


def test_a_masked_prompt_without_enough_masks_is_an_error():
    with pytest.raises(ValueError, match="slot_tokens"):
        word_scores(
            lambda i, m: torch.zeros(1, i.size(1), 300),
            [Rendered([CLS_ID, MASK_ID, SEP_ID], 1)],
            [(10, 11)],
            causal=False,
        )
