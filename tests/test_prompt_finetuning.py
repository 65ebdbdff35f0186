"""Prompt-based fine-tuning: a template + verbalizer readout that any tuning method trains through the LM head."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from minilm import Transformer
from minilm.prompting import Template, Verbalizer, base_logits, label_scores
from minilm.tuning import LayerFreezing, SoftPrompt, TunedModel, VerbalizerReadout, build_method
from minilm.tuning.methods import FreezeSettings, PromptSettings

TEXTS = ["to be or not", "that is the question", "whether tis nobler in the mind"]
WORDS = [[" be", " not"], " question"]


@pytest.mark.parametrize(
    "causal,template",
    [(True, "Line: {text}\nAnswer:"), (False, "Line: {text} Answer: [MASK].")],
    ids=["causal", "masked"],
)
def test_the_template_readout_scores_exactly_what_zero_shot_prompting_scores(tokenizer, causal, template):
    base = Transformer(tiny_config(causal=causal), seed=0).eval()
    model = TunedModel(
        base,
        LayerFreezing(FreezeSettings("last", 0), tiny_config()),
        VerbalizerReadout.from_template(tokenizer, template, WORDS),
    ).eval()
    batch = model.encode(tokenizer, TEXTS)
    with torch.no_grad():
        scores = model(batch["input_ids"], batch["attention_mask"])
    expected = label_scores(
        base_logits(base),
        tokenizer,
        Template(template),
        Verbalizer.from_words(tokenizer, WORDS),
        [{"text": t} for t in TEXTS],
        causal,
        max_len=64,
    )
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


def test_a_soft_prompt_trains_through_the_template_readout(tokenizer):
    base = Transformer(tiny_config(), seed=0)
    readout = VerbalizerReadout.from_template(tokenizer, "Line: {text}\nAnswer:", WORDS)
    model = TunedModel(base, SoftPrompt.for_base(base, PromptSettings(3, "random")), readout)
    batch = model.encode(tokenizer, TEXTS)
    loss = torch.nn.functional.cross_entropy(
        model(batch["input_ids"], batch["attention_mask"]), torch.tensor([0, 1, 0])
    )
    loss.backward()
    assert model.method.P.grad is not None and model.method.P.grad.abs().sum() > 0
    assert all(p.grad is None for p in base.parameters())


@pytest.mark.parametrize(
    "method,hp", [("prefix", {"prefix_len": 2, "d_prime": 8, "hidden": 16}), ("lora", {"rank": 2})]
)
def test_a_template_tuned_model_saves_and_loads_exactly_without_a_tokenizer(tmp_path, tokenizer, method, hp):
    base = Transformer(tiny_config(causal=False), seed=0)
    readout = VerbalizerReadout.from_template(tokenizer, "Line: {text} Answer: [MASK].", WORDS, length_normalized=True)
    model = TunedModel(base, build_method(method, base, **hp), readout)
    with torch.no_grad():
        for p in model.trainable().values():
            p.add_(0.1)
    model.eval()
    batch = model.encode(tokenizer, TEXTS)
    expected = model(batch["input_ids"], batch["attention_mask"])
    model.save(tmp_path)
    loaded = TunedModel.load(tmp_path, Transformer(tiny_config(causal=False), seed=0)).eval()
    torch.testing.assert_close(loaded(batch["input_ids"], batch["attention_mask"]), expected, rtol=0, atol=0)


def test_a_causal_template_must_end_at_its_slot(tokenizer):
    base = Transformer(tiny_config(), seed=0)
    model = TunedModel(
        base,
        LayerFreezing(FreezeSettings("last", 0), tiny_config()),
        VerbalizerReadout.from_template(tokenizer, "{text} is [MASK] here", WORDS),
    )
    batch = model.encode(tokenizer, TEXTS)
    with pytest.raises(ValueError, match="cannot see"):
        model(batch["input_ids"], batch["attention_mask"])
    with pytest.raises(ValueError, match="exactly one field"):
        VerbalizerReadout.from_template(tokenizer, "{premise} [MASK] {hypothesis}", WORDS)


def test_prompt_based_fine_tuning_learns_the_synthetic_task(sentiment_base, sentiment_task, tmp_path):
    from synthetic_task import LABEL_WORDS

    from minilm.tuning.tasks import load_task
    from minilm.tuning.trainer import TuneConfig, TuneTrainer, evaluate

    state, config, tokenizer = sentiment_base
    base = Transformer(config)
    base.load_state_dict(state)
    task = load_task(sentiment_task)
    readout = VerbalizerReadout.from_template(tokenizer, "{text}", [[w] for w in LABEL_WORDS])
    model = TunedModel(base, build_method("lora", base, rank=4), readout, task.labels)
    before = evaluate(model, tokenizer, task.split("dev"))
    TuneTrainer(
        model,
        tokenizer,
        task,
        TuneConfig(lr=0.01, max_steps=200, eval_every=100, patience=0, warmup_steps=5, precision="fp32"),
        tmp_path,
        log=lambda _: None,
    ).fit()
    after = evaluate(model, tokenizer, task.split("dev"))
    assert after["loss"] < before["loss"] - 0.1 and after["accuracy"] >= 0.85, (before, after)
