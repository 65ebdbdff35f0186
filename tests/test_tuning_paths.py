"""Tuning methods inside the model's machinery: attention backends, folding, mixed-task batches, generation,
gradient checkpointing, resuming, initialisation, LoRA merging, verbalizer scores and bad settings."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import random_ids, tiny_config

from minilm import Transformer, generate
from minilm.files import save_state
from minilm.tokenizer import CLS_ID, MASK_ID, SEP_ID
from minilm.tuning import (
    METHODS,
    Adapters,
    ClassificationHead,
    LayerFreezing,
    LoRA,
    PrefixTuning,
    PromptEncoder,
    SoftPrompt,
    TaskBank,
    TunedModel,
    VerbalizerReadout,
    build_method,
)
from minilm.tuning.methods import (
    AdapterSettings,
    FreezeSettings,
    LoRASettings,
    PrefixSettings,
    PromptEncoderSettings,
    PromptSettings,
)
from minilm.tuning.methods.adapter import Adapter
from minilm.tuning.methods.lora import LoRALinear
from minilm.tuning.trainer import TuneConfig, TuneTrainer


def padded_batch(seed: int = 0):
    ids = random_ids(3, 8, seed=seed)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return ids, mask


def trained_prefix(base: Transformer, **kwargs) -> PrefixTuning:
    prefix = PrefixTuning.for_base(base, PrefixSettings(3, d_prime=8, hidden=16), **kwargs)
    if prefix.mlp is not None:
        with torch.no_grad():
            prefix.mlp.W_2.bias.normal_(0, 1, generator=torch.Generator().manual_seed(5))  # as after training
    return prefix


# ---- prefix tuning through every attention backend -------------------------------------------------------
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_prefix_tuning_gives_the_same_outputs_and_gradients_through_math_and_sdpa(causal):
    ids, mask = padded_batch()
    results = {}
    for backend in ("math", "sdpa"):
        base = Transformer(tiny_config(causal=causal, attention=backend), seed=0)
        model = TunedModel(base, trained_prefix(base), ClassificationHead(32, 2))
        h, full_mask = model.hidden_states(ids, mask)
        h = h * full_mask[..., None]  # padding positions carry no meaning
        h.square().sum().backward()
        results[backend] = (h.detach(), model.method.mlp.P_prime.grad.clone())
    torch.testing.assert_close(results["sdpa"][0], results["math"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["sdpa"][1], results["math"][1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_a_padded_row_with_a_prefix_or_soft_prompt_equals_the_row_alone(causal, method):
    base = Transformer(tiny_config(causal=causal), seed=0).eval()
    m = trained_prefix(base) if method == "prefix" else SoftPrompt.for_base(base, PromptSettings(3, "random"))
    model = TunedModel(base, m, VerbalizerReadout.from_ids([[10], [11]])).eval()
    ids, mask = padded_batch()
    h, _full_mask = model.hidden_states(ids, mask)
    alone, _ = model.hidden_states(ids[2:, :2], mask[2:, :2])
    n = m.prompt_length
    torch.testing.assert_close(h[2, : n + 2], alone[0], rtol=1e-5, atol=1e-5)


def test_real_tokens_see_every_prefix_position_and_causally_each_other():
    base = Transformer(tiny_config(), seed=0).eval()
    model = TunedModel(base, trained_prefix(base), VerbalizerReadout.from_ids([[10], [11]])).eval()
    ids = random_ids(1, 6)
    mask = torch.ones(1, 6, dtype=torch.long)
    h, _ = model.hidden_states(ids, mask)
    changed = ids.clone()
    changed[0, 4] = (changed[0, 4] + 1) % 290 + 7
    h2, _ = model.hidden_states(changed, mask)
    assert torch.equal(h[0, :4], h2[0, :4]), "a later token changed an earlier position"
    assert not torch.allclose(h[0, 4:], h2[0, 4:])
    base_only, _ = TunedModel(
        Transformer(tiny_config(), seed=0).eval(),
        LayerFreezing(FreezeSettings("last", 0), tiny_config()),
        VerbalizerReadout.from_ids([[10], [11]]),
    ).hidden_states(ids, mask)
    assert not torch.isclose(h[0], base_only[0]).all(dim=-1).any(), "every position attends to the prefix"


@pytest.mark.parametrize("method", ["prefix", "prompt-encoder"])
def test_folding_the_reparameterization_does_not_change_outputs(method):
    base = Transformer(tiny_config(), seed=0).eval()
    m = (
        trained_prefix(base)
        if method == "prefix"
        else PromptEncoder.for_base(base, PromptEncoderSettings(4, hidden=16))
    )
    model = TunedModel(base, m, ClassificationHead(32, 2)).eval()
    ids, mask = padded_batch()
    before = model(ids, mask)
    model.method.fold()
    assert model.method.folded
    torch.testing.assert_close(model(ids, mask), before, rtol=0, atol=0)
    c = base.config
    assert sum(p.numel() for p in model.method.parameters()) == (
        c.n_layers * 2 * 3 * c.d_model if method == "prefix" else 4 * c.d_model
    )


# ---- resuming a reparameterised method --------------------------------------------------------------------
@pytest.mark.parametrize("method", ["prefix", "prompt-encoder"])
def test_a_saved_tuned_model_resumes_training_with_its_reparameterization_network(tmp_path, method):
    base = Transformer(tiny_config(), seed=0)
    m = (
        trained_prefix(base)
        if method == "prefix"
        else PromptEncoder.for_base(base, PromptEncoderSettings(4, hidden=16))
    )
    model = TunedModel(base, m, VerbalizerReadout.from_ids([[10], [11]]))
    model.save(tmp_path)
    network = {k: v.clone() for k, v in m.reparameterization_state().items()}
    inference = TunedModel.load(tmp_path, Transformer(tiny_config(), seed=0))
    assert inference.method.folded
    resumed = TunedModel.load(tmp_path, Transformer(tiny_config(), seed=0), for_training=True)
    assert not resumed.method.folded
    for name, value in resumed.method.reparameterization_state().items():
        assert torch.equal(value, network[name])
    ids, mask = padded_batch()
    torch.testing.assert_close(resumed(ids, mask), inference(ids, mask), rtol=0, atol=0)
    resumed(ids, mask).sum().backward()
    network_params = [p for n, p in resumed.method.named_parameters() if "mlp." in n or "encoder." in n]
    assert network_params and all(p.grad is not None for p in network_params)


def test_an_interrupted_tuning_run_resumes_bitwise_equal(sentiment_base, sentiment_task, tmp_path):
    from synthetic_task import LABEL_WORDS

    from minilm.tuning.tasks import load_task

    state, config, tokenizer = sentiment_base
    task = load_task(sentiment_task)
    cfg = TuneConfig(
        lr=3e-3,
        max_steps=12,
        batch_size=8,
        eval_every=4,
        patience=0,
        max_eval_examples=16,
        warmup_steps=2,
        precision="fp32",
    )

    def fresh():
        base = Transformer(
            config.__class__(**{**config.to_dict(), "dropout": 0.1})
        )  # dropout on: its RNG must resume too
        base.load_state_dict(state)
        return TunedModel(
            base,
            PrefixTuning.for_base(base, PrefixSettings(3, d_prime=8, hidden=16)),
            VerbalizerReadout.from_words(tokenizer, LABEL_WORDS),
        )

    whole = fresh()
    TuneTrainer(whole, tokenizer, task, cfg, tmp_path / "whole", log=lambda _: None).fit()
    parted = fresh()
    TuneTrainer(parted, tokenizer, task, cfg, tmp_path / "parted", log=lambda _: None).fit(
        stop_at=6
    )  # a crash after step 6
    state_file = (
        tmp_path / "parted" / "train_state.pt"
    )  # written in the layout before the shared loop: it still resumes
    saved = torch.load(state_file, weights_only=True)
    old = {k: v for k, v in saved.items() if k not in ("kind", "rng_states", "seen")}
    save_state({**old, "rng_state": saved["rng_states"][0], "examples_seen": saved["seen"]}, state_file)
    TuneTrainer(fresh(), tokenizer, task, cfg, tmp_path / "parted", log=lambda _: None, resume=True).fit()
    final_whole = TunedModel.load(tmp_path / "whole" / "last", fresh().base, for_training=True)
    final_parted = TunedModel.load(tmp_path / "parted" / "last", fresh().base, for_training=True)
    for (name, a), b in zip(
        final_whole.method.reparameterization_state().items(), final_parted.method.reparameterization_state().values()
    ):
        assert torch.equal(a, b), name

    def logged(run):
        return [
            (r["step"], r["split"], r.get("loss"))
            for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "dev"
        ]

    assert logged("parted") == logged("whole")


# ---- mixed-task batches -------------------------------------------------------------------------------------
def test_a_mixed_task_batch_equals_each_row_with_its_own_prompt_or_prefix_alone(tokenizer):
    base = Transformer(tiny_config(), seed=0).eval()
    methods = {
        "text-prefix": PrefixTuning.for_base(base, PrefixSettings(init="text:To be, or not"), tokenizer=tokenizer),
        "short-prompt": SoftPrompt.for_base(base, PromptSettings(2, "random"), seed=1),
        "long-prompt": SoftPrompt.for_base(base, PromptSettings(5, "random"), seed=2),
        "encoder": PromptEncoder.for_base(base, PromptEncoderSettings(3, hidden=16), seed=3),
        "prefix": trained_prefix(base),
        "long-prefix": PrefixTuning.for_base(base, PrefixSettings(6, d_prime=8, hidden=16), seed=4),
    }
    bank = TaskBank(base, methods).eval()
    tasks = ["long-prompt", "prefix", "short-prompt", "encoder", "long-prefix", "prefix", "text-prefix"]
    assert methods["text-prefix"].position_offset > 0  # its rows' positions start behind the text
    ids = random_ids(7, 7, seed=3)
    mask = torch.ones(7, 7, dtype=torch.long)
    mask[3, 4:] = 0
    mixed = bank(ids, mask, tasks)
    for row, task in enumerate(tasks):
        alone = TunedModel(base, methods[task], VerbalizerReadout.from_ids([[10], [11]])).eval()
        h, _full_mask = alone.hidden_states(ids[row : row + 1], mask[row : row + 1])
        expected = alone.lm_logits(h)[:, h.size(1) - 7 :]
        real = mask[row].bool()
        torch.testing.assert_close(mixed[row][real], expected[0][real], rtol=1e-5, atol=1e-5)


def test_a_task_bank_refuses_methods_that_change_the_base_weights():
    base = Transformer(tiny_config(), seed=0)
    with pytest.raises(ValueError, match="only prompt, prompt-encoder and prefix"):
        TaskBank(base, {"a": LoRA(LoRASettings(rank=2))})
    with pytest.raises(ValueError, match="changes the base's weights"):  # a prompt encoder that trains the base too
        TaskBank(base, {"a": build_method("prompt-encoder", base, train_base=True)})
    TaskBank(base, {"a": build_method("prompt-encoder", base)})


# ---- generation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_generation_with_a_tuned_model_agrees_with_and_without_the_kv_cache(method):
    from test_tuning import HP

    base = Transformer(tiny_config(), seed=0).eval()
    m = build_method(method, base, **HP[method])
    model = TunedModel(base, m, VerbalizerReadout.from_ids([[10], [11]])).eval()
    with torch.no_grad():  # move every trainable tensor away from its neutral start, as training would
        g = torch.Generator().manual_seed(7)
        for p in model.trainable().values():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    ids = random_ids(2, 5, seed=1)
    cached = model.generate(ids, 12, temperature=0.0, eos_id=None)
    uncached = model.generate(ids, 12, temperature=0.0, eos_id=None, use_cache=False)
    assert torch.equal(cached, uncached)
    plain = generate(Transformer(tiny_config(), seed=0).eval(), ids, 12, temperature=0.0, eos_id=None)
    assert not torch.equal(cached, plain), "the tuned model generates exactly what the base does"


def test_generation_counts_the_soft_prompt_against_the_context():
    base = Transformer(tiny_config(max_len=16), seed=0).eval()
    model = TunedModel(base, SoftPrompt.for_base(base, PromptSettings(6)), VerbalizerReadout.from_ids([[10], [11]]))
    with pytest.raises(ValueError, match="after 6 soft-prompt vectors"):
        model.generate(random_ids(1, 5), 6)


# ---- gradient checkpointing --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["prompt", "prompt-encoder", "prefix"])
def test_gradient_checkpointing_gives_the_same_gradients(method):
    from test_tuning import HP

    grads = []
    for checkpointing in (False, True):
        base = Transformer(tiny_config(dropout=0.1), seed=0)
        model = TunedModel(base, build_method(method, base, **HP[method]), ClassificationHead(32, 2)).train()
        base.gradient_checkpointing = checkpointing
        torch.manual_seed(0)  # the same dropout masks; checkpointing replays them in the recomputation
        ids, mask = padded_batch()
        F.cross_entropy(model(ids, mask), torch.tensor([0, 1, 1])).backward()
        grads.append({n: p.grad.clone() for n, p in model.trainable().items()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7)


# ---- initialisation and LoRA ---------------------------------------------------------------------------------
def test_prompt_initialisations_come_from_the_vocabulary_the_text_or_its_scale(tokenizer):
    base = Transformer(tiny_config(), seed=0)
    E = base.tok_emb.weight.detach()
    vocab = SoftPrompt.for_base(base, PromptSettings(5, "vocab"), seed=1).P.detach()
    assert all((E[7:] == row).all(dim=1).any() for row in vocab), "every row is an ordinary token's embedding"
    text_ids = tokenizer.encode("To be, or not")
    text = SoftPrompt.for_base(
        base, PromptSettings(len(text_ids) + 2, "text:To be, or not"), tokenizer=tokenizer
    ).P.detach()
    assert torch.equal(text[: len(text_ids)], E[text_ids])
    random = SoftPrompt.for_base(base, PromptSettings(200, "random"), seed=1).P.detach()
    assert abs(random.std().item() / E.std().item() - 1) < 0.1
    with pytest.raises(ValueError, match="unknown prompt initialisation"):
        SoftPrompt.for_base(base, PromptSettings(2, "zeros"))


def test_the_labels_init_starts_the_soft_prompt_with_the_label_words_and_is_stored_as_their_text(tokenizer):
    from minilm.tuning.registry import build_method

    base = Transformer(tiny_config(), seed=0)
    E = base.tok_emb.weight.detach()
    words = [" bad", " good"]
    ids = tokenizer.encode(" bad good")
    method = build_method("prompt", base, tokenizer, seed=1, label_words=words, prompt_len=len(ids) + 3, init="labels")
    assert torch.equal(method.P.detach()[: len(ids)], E[ids])  # Lester et al.'s class-label init: the words first
    assert method.hyperparameters()["init"] == "text: bad good"  # tuned.json stores what rebuilds it
    encoder = build_method("prompt-encoder", base, tokenizer, label_words=words, init="labels")
    assert encoder.settings.init == "text: bad good"
    without = build_method("prompt", base, tokenizer, seed=1, init="labels")  # no label words known: vocab's draw
    vocab = build_method("prompt", base, tokenizer, seed=1, init="vocab")
    assert without.settings.init == "vocab" and torch.equal(without.P, vocab.P)


def test_the_default_prefix_starts_from_the_task_s_prefix_text_and_is_stored_as_that_text(tokenizer):
    """--prefix-init task (the default): text:<the task's prefix_text>; random (the MLP as drawn) when it has none."""
    from minilm.tuning.registry import build_method

    base = Transformer(tiny_config(), seed=0)
    from_task = build_method("prefix", base, tokenizer, seed=1, prefix_text=" a review:")
    given = build_method("prefix", base, tokenizer, seed=1, init="text: a review:")
    assert from_task.hyperparameters()["init"] == "text: a review:"
    assert torch.equal(from_task.computed(), given.computed())  # the frozen base's keys and values of the words
    assert from_task.position_offset == len(tokenizer.encode(" a review:"))
    without = build_method("prefix", base, tokenizer, seed=1)
    drawn = build_method("prefix", base, tokenizer, seed=1, init="random")
    assert without.settings.init == "random" and torch.equal(without.computed(), drawn.computed())
    assert without.position_offset == 0


def test_lora_starts_at_the_base_and_merging_keeps_its_outputs():
    ids, mask = padded_batch()
    base = Transformer(tiny_config(), seed=0).eval()
    reference, _ = TunedModel(
        Transformer(tiny_config(), seed=0).eval(),
        LayerFreezing(FreezeSettings("last", 0), tiny_config()),
        VerbalizerReadout.from_ids([[10], [11]]),
    ).hidden_states(ids, mask)
    lora = LoRA(LoRASettings(rank=2, alpha=4.0))
    model = TunedModel(base, lora, VerbalizerReadout.from_ids([[10], [11]])).eval()
    h, _ = model.hidden_states(ids, mask)
    torch.testing.assert_close(h, reference, rtol=0, atol=0)  # B = 0: the update is exactly zero
    with torch.no_grad():
        for p in model.trainable().values():
            p.normal_(0, 0.3)
    tuned_h, _ = model.hidden_states(ids, mask)
    lora.merge(base)
    assert not any(n.endswith((".A", ".B")) for n, _ in base.named_parameters())
    merged_h, _ = model.hidden_states(ids, mask)
    torch.testing.assert_close(merged_h, tuned_h, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(tuned_h, reference)


def test_a_lora_layer_adds_alpha_over_r_times_the_low_rank_update_to_the_frozen_layer():
    """h = x W^T + b + (alpha / r) x A^T B^T, against the float64 equation (rank 2, alpha 6: alpha / r = 3)."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.Linear(6, 5)
    with torch.no_grad():
        base.bias.normal_(0, 1, generator=g)  # a bias that is not zero
    layer = LoRALinear(base, 2, 6.0, g)
    with torch.no_grad():
        layer.B.normal_(0, 1, generator=g)  # as after training
    x = torch.randn(3, 4, 6, generator=g)
    W, b, A, B = (t.detach().double() for t in (base.weight, base.bias, layer.A, layer.B))
    expected = x.double() @ W.T + b + 3.0 * (x.double() @ A.T @ B.T)
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_adapters_start_at_the_base_and_train_only_themselves_and_the_layernorms():
    """W_down, W_up ~ N(0, 1e-3^2): logits within 1e-5 of the base's; phi = the adapters + every LayerNorm."""
    ids, mask = padded_batch()
    reference = Transformer(tiny_config(), seed=0).eval()
    base = Transformer(tiny_config(), seed=0).eval()
    model = TunedModel(base, Adapters(AdapterSettings(size=4), seed=1), VerbalizerReadout.from_ids([[10], [11]]))
    h, _ = model.eval().hidden_states(ids, mask)
    torch.testing.assert_close(model.lm_logits(h), reference(ids, attention_mask=mask), rtol=0, atol=1e-5)
    trainable = set(model.trainable())
    assert all(".post_attn." in n or ".post_ffn." in n or ".ln_" in n for n in trainable), sorted(trainable)
    assert {n for n in trainable if ".ln_" in n} == {n for n, _ in model.named_parameters() if ".ln_" in n}
    assert sum(".post_" in n for n in trainable) == 2 * 2 * 4  # L = 2 blocks, 2 adapters each, 4 tensors each
    assert not torch.allclose(model.lm_logits(h), reference(ids, attention_mask=mask), rtol=0, atol=0)


def test_an_adapter_adds_its_bottleneck_update_to_its_input():
    """A(h) = h + W_up GELU(W_down h + b_down) + b_up, against the float64 equation (exact GELU)."""
    g = torch.Generator().manual_seed(0)
    adapter = Adapter(6, 3, g)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 1, generator=g)  # as after training: weights and biases far from their start
    h = torch.randn(2, 4, 6, generator=g)
    W_d, b_d, W_u, b_u = (
        t.detach().double()
        for t in (adapter.W_down.weight, adapter.W_down.bias, adapter.W_up.weight, adapter.W_up.bias)
    )
    z = h.double() @ W_d.T + b_d
    expected = h.double() + (0.5 * z * (1 + torch.erf(z / 2**0.5))) @ W_u.T + b_u
    torch.testing.assert_close(adapter(h).double(), expected, rtol=1e-5, atol=1e-5)


# ---- verbalizer scores by hand ---------------------------------------------------------------------------------
def test_causal_verbalizer_scores_are_summed_log_probabilities_of_the_label_tokens():
    base = Transformer(tiny_config(), seed=0).eval()
    words = [[10], [11, 12, 13]]
    model = TunedModel(
        base, LayerFreezing(FreezeSettings("last", 0), tiny_config()), VerbalizerReadout.from_ids(words)
    ).eval()
    ids, mask = padded_batch()
    scores = model(ids, mask)
    for row in range(3):
        text = ids[row][mask[row].bool()].tolist()
        for y, word in enumerate(words):
            seq = torch.tensor([text + word])
            logp = torch.log_softmax(base(seq)[0], dim=-1)
            expected = sum(logp[len(text) - 1 + j, word[j]] for j in range(len(word)))
            torch.testing.assert_close(scores[row, y], expected, rtol=1e-5, atol=1e-5)


def test_masked_verbalizer_scores_each_token_at_its_own_mask_slot():
    base = Transformer(tiny_config(causal=False), seed=0).eval()
    words = [[10, 20], [11, 12], [13]]
    model = TunedModel(
        base, LayerFreezing(FreezeSettings("last", 0), tiny_config()), VerbalizerReadout.from_ids(words)
    ).eval()
    ids, mask = padded_batch()
    scores = model(ids, mask)
    for row in range(3):
        text = ids[row][mask[row].bool()].tolist()
        for y, word in enumerate(words):
            seq = torch.tensor([[CLS_ID, *text, *[MASK_ID] * len(word), SEP_ID]])
            logp = torch.log_softmax(base(seq)[0], dim=-1)
            expected = sum(logp[1 + len(text) + j, word[j]] for j in range(len(word)))
            torch.testing.assert_close(scores[row, y], expected, rtol=1e-5, atol=1e-5)


DRAWN = (".A", ".W_down.weight", ".W_up.weight")
"""The tensors LoRA and adapters draw from their seed when attached to a base."""


# ---- bad settings ------------------------------------------------------------------------------------------------
def test_bad_tuning_settings_are_clear_errors():
    base = Transformer(tiny_config(), seed=0)
    with pytest.raises(ValueError, match="--prompt-len must be a positive integer"):
        SoftPrompt.for_base(base, PromptSettings(0))
    with pytest.raises(ValueError, match="the base has 2 layers"):
        LayerFreezing(FreezeSettings("first", 3), tiny_config())
    with pytest.raises(ValueError, match="--lora-rank must be a positive integer"):
        LoRA(LoRASettings(rank=0))
    with pytest.raises(ValueError, match="larger than the model width"):
        TunedModel(base, LoRA(LoRASettings(rank=64)), VerbalizerReadout.from_ids([[10], [11]]))
    with pytest.raises(ValueError, match="unknown tuning method 'dora'"):
        build_method("dora", base)
    with pytest.raises(ValueError, match="--adapter-size must be a positive integer"):
        Adapters(AdapterSettings(size=0))
    with pytest.raises(ValueError, match="--adapter-size 33 is larger than the model width d_model=32"):
        TunedModel(base, Adapters(AdapterSettings(size=33)), VerbalizerReadout.from_ids([[10], [11]]))
    short = Transformer(tiny_config(max_len=8))
    long_prompt = TunedModel(short, SoftPrompt.for_base(short, PromptSettings(8)), ClassificationHead(32, 2))
    with pytest.raises(ValueError, match="no room for text"):
        long_prompt.encode(None, ["hello"])


@pytest.mark.parametrize("method", ["prompt", "prompt-encoder", "prefix", "lora", "adapter"])
def test_a_method_that_draws_is_reproducible_from_its_seed_and_records_it(method):
    base = Transformer(tiny_config(), seed=0)

    def drawn(seed: int) -> torch.Tensor:
        m = build_method(method, base, seed=seed)
        if method in ("lora", "adapter"):  # drawn when the method is attached to the base
            attached = Transformer(tiny_config(), seed=0)
            m.setup(attached)
            return torch.cat([p.detach().flatten() for n, p in attached.named_parameters() if n.endswith(DRAWN)])
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    assert build_method(method, base, seed=3).hyperparameters()["seed"] == 3
    assert torch.equal(drawn(1), drawn(1)) and not torch.equal(drawn(1), drawn(2))


# ---- what each method puts where, against its equation -------------------------------------------------------
def test_a_soft_prompt_is_put_before_the_token_embeddings_with_a_mask_of_ones():
    """embed gives [P; E[x]] in every row and the mask [1 .. 1; m]: the n virtual tokens come first, never padding."""
    base = Transformer(tiny_config(), seed=0)
    method = SoftPrompt.for_base(base, PromptSettings(3, "random"))
    ids, mask = padded_batch()
    embeds, full_mask = method.embed(base, ids, mask.bool())
    assert embeds.shape == (3, 3 + 8, base.config.d_model)
    for row in range(3):
        assert torch.equal(embeds[row, :3], method.P), "rows 0..n-1 must be the soft prompt P"
        assert torch.equal(embeds[row, 3:], base.tok_emb(ids[row])), "the token embeddings must follow P"
    assert torch.equal(full_mask, torch.cat([torch.ones(3, 3, dtype=torch.bool), mask.bool()], dim=1))


def test_prefix_mlp_row_i_is_position_i_of_every_layer_s_keys_and_values():
    """MLP(P') = W_2 tanh(W_1 P' + b_1) + b_2 in float64: row i is [P_k^1, P_v^1, .., P_k^L, P_v^L] at position i,
    d numbers each, so out[l, c, i] is its (2 l + c)-th block of d (c = 0 keys, 1 values)."""
    from minilm.tuning.methods.prefix import PrefixMLP

    L, d, n = 2, 32, 3
    mlp = PrefixMLP(n, L, d, d_prime=8, hidden=16, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # biases that are not zero, as after training
        mlp.W_1.bias.normal_(0, 1, generator=g)
        mlp.W_2.bias.normal_(0, 1, generator=g)
    P, W_1, b_1, W_2, b_2 = (
        t.detach().double() for t in (mlp.P_prime, mlp.W_1.weight, mlp.W_1.bias, mlp.W_2.weight, mlp.W_2.bias)
    )
    rows = torch.tanh(P @ W_1.T + b_1) @ W_2.T + b_2  # (n, L 2 d)
    out = mlp()
    assert out.shape == (L, 2, n, d)
    for layer in range(L):
        for c in range(2):
            block = rows[:, (2 * layer + c) * d : (2 * layer + c + 1) * d]
            torch.testing.assert_close(out[layer, c].double(), block, rtol=1e-5, atol=1e-5)


def test_bitfit_trains_exactly_the_linear_biases_and_the_layernorm_shifts():
    """phi = every b of the linear layers and every beta of the LayerNorms (LN_f's too); no weight, gain or
    embedding."""
    from minilm.tuning import BitFit

    base = Transformer(tiny_config(), seed=0)
    BitFit().setup(base)
    trainable = {name for name, p in base.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in base.named_parameters() if name.endswith((".bias", ".beta"))}
    assert {"ln_f.beta", "blocks.0.ln_1.beta", "blocks.0.attn.W_q.bias"} <= trainable


def test_a_merged_lora_layer_computes_the_unmerged_layer_bias_included_and_is_frozen():
    """merged(): W' = W + (alpha / r) B A with the base's bias, checked against the float64 equation; nothing trains."""
    g = torch.Generator().manual_seed(5)
    base = torch.nn.Linear(6, 6)
    with torch.no_grad():
        base.bias.normal_(generator=g)
    layer = LoRALinear(base, r=2, alpha=6.0, generator=g)
    with torch.no_grad():
        layer.B.normal_(generator=g)
    x = torch.randn(3, 6, generator=g)
    merged = layer.merged()
    W, b, A, B = (t.detach().double() for t in (base.weight, base.bias, layer.A, layer.B))
    expected = x.double() @ (W + 3.0 * B @ A).T + b
    torch.testing.assert_close(merged(x).double(), expected, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in merged.parameters())
