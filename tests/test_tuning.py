"""Parameter-efficient tuning: what trains, how much, that it saves/loads exactly, and that it learns.

The shared rules of docs/tuning.md, checked for every method: frozen parameters stay bitwise equal,
trainable counts match closed forms, save/load reproduces outputs exactly and refuses another base,
and a short run on the synthetic task (tests/synthetic_task.py) lowers the loss and beats chance.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_ids, tiny_config

from minilm import Transformer
from minilm.tuning import (
    METHODS,
    Adapters,
    BitFit,
    ClassificationHead,
    LayerFreezing,
    LoRA,
    TunedModel,
    VerbalizerReadout,
    build_method,
)
from minilm.tuning.methods import FreezeSettings
from minilm.tuning.trainer import TuneConfig, TuneTrainer, evaluate
from minilm.tuning.tuned import REPARAM_FILE, TUNED_FILE

HP = {
    "prompt": {"prompt_len": 4, "init": "random"},
    "prompt-encoder": {"prompt_len": 4, "hidden": 16},
    "prefix": {"prefix_len": 3, "d_prime": 8, "hidden": 16},
    "freeze": {"recipe": "first", "k": 1},
    "bitfit": {},
    "lora": {"rank": 2, "alpha": 4.0},
    "adapter": {"size": 4},
    "full": {},
}


def tuned(method: str, causal: bool = True, readout: str = "head", seed: int = 0, **overrides) -> TunedModel:
    base = Transformer(tiny_config(causal=causal, **overrides), seed=seed)
    hp = HP[method]
    m = build_method(method, base, **hp)
    head = (
        ClassificationHead(base.config.d_model, 2)
        if readout == "head"
        else VerbalizerReadout.from_ids([[10], [11, 12]])
    )
    return TunedModel(base, m, head)


def batch(B: int = 3, T: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = random_ids(B, T, seed=seed)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, T - 2 :] = 0  # one padded row
    return ids, mask


def train_steps(model: TunedModel, steps: int = 3, lr: float = 1e-2) -> None:
    optimizer = torch.optim.AdamW(list(model.trainable().values()), lr=lr, weight_decay=0.1)
    for step in range(steps):
        ids, mask = batch(seed=step)
        loss = torch.nn.functional.cross_entropy(model(ids, mask), torch.tensor([0, 1, 1]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


# ---- frozen means unchanged -----------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "masked"])
@pytest.mark.parametrize("method", METHODS)
def test_training_leaves_every_frozen_parameter_bitwise_equal(method, causal):
    model = tuned(method, causal=causal)
    trainable = set(model.trainable())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "training changed nothing"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:3]}"
    if method != "full":
        assert len(trainable) < len(before)


def test_only_trainable_parameters_reach_the_optimizer(sentiment_task, tmp_path):
    from minilm.tuning.tasks import load_task

    model = tuned("prompt")
    trainer = TuneTrainer(model, None, load_task(sentiment_task), TuneConfig(), tmp_path, log=lambda _: None)
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(model.method.P), id(model.readout.W_c.weight), id(model.readout.W_c.bias)}


@pytest.mark.parametrize("method", ["full", "freeze", "prompt", "prefix", "lora"])
def test_tuning_never_decays_embeddings_or_a_method_s_own_vectors(method, sentiment_task, tmp_path):
    """One weight-decay rule for every loop: only the weight matrices of linear layers are decayed."""
    from minilm.tuning.tasks import load_task

    model = tuned(method)
    config = TuneConfig(weight_decay=0.1, precision="fp32")
    trainer = TuneTrainer(model, None, load_task(sentiment_task), config, tmp_path, log=lambda _: None)
    decay = {id(p) for group in trainer.optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[i] for i in decay)
    assert decayed and all(n.endswith(".weight") and ("W_" in n) for n in decayed), decayed
    never = (
        "tok_emb",
        "pos_emb",
        "ln_",
        "method.P",
        "method.prefix",
        "P_prime",
        "method.mlp.P_prime",
        ".A",
        ".B",
        "bias",
    )
    assert not [n for n in decayed if any(part in n for part in never)]
    if method in ("full", "freeze"):
        assert id(model.base.tok_emb.weight) not in decay and model.base.tok_emb.weight.requires_grad


# ---- parameter counts in closed form --------------------------------------------------------------------
def test_trainable_counts_match_the_closed_forms():
    c = tiny_config()
    L, d, f, V, N = c.n_layers, c.d_model, c.d_ff, c.vocab_size, c.max_len
    n, P, r, m = 4, 3, 2, 4
    expected_tuned = {
        "prompt": n * d,
        "prompt-encoder": n * d,  # folded: the vectors only
        "prefix": L * 2 * P * d,  # folded: L x 2 x n x d
        "freeze": V * d + N * d + 1 * (4 * d * d + 2 * d * f + 9 * d + f),
        "bitfit": L * (7 * d + f) + d,
        "lora": 2 * L * 2 * r * d,  # W_Q and W_V: 2 r d each per layer
        "adapter": L * 2 * (2 * d * m + m + d) + L * 4 * d + 2 * d,  # two adapters per block; every LayerNorm
        "full": Transformer(c).num_parameters(),
    }
    for method, value in expected_tuned.items():
        counts = tuned(method, readout="verbalizer").counts()
        assert counts["tuned"] == value, method
        assert counts["readout"] == 0
    assert LayerFreezing.expected_count(c, "first", 1) == expected_tuned["freeze"]
    assert BitFit.expected_count(c) == expected_tuned["bitfit"]
    assert LoRA.expected_count(c, r) == expected_tuned["lora"]
    assert Adapters.expected_count(c, m) == expected_tuned["adapter"]
    adapted = tuned("adapter", readout="verbalizer").counts()
    assert adapted["base"] == Transformer(c).num_parameters()  # the adapters are not counted as the base's
    # while training, the reparameterisation networks train instead of the vectors they produce
    prefix = tuned("prefix", readout="verbalizer").counts()
    assert prefix["trainable"] == P * 8 + (8 * 16 + 16) + (16 * L * 2 * d + L * 2 * d)
    head = tuned("prompt").counts()
    assert head["readout"] == d * 2 + 2 and head["tuned"] == n * d + d * 2 + 2


def test_last_k_freezing_trains_the_last_blocks_and_the_final_layernorm():
    base = Transformer(tiny_config())
    model = TunedModel(
        base, LayerFreezing(FreezeSettings("last", 1), base.config), VerbalizerReadout.from_ids([[10], [11]])
    )
    names = set(model.trainable())
    assert names == {n for n, _ in model.named_parameters() if n.startswith(("base.blocks.1.", "base.ln_f."))}
    assert model.counts()["tuned"] == LayerFreezing.expected_count(base.config, "last", 1)


# ---- save / load --------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "masked"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("readout", ["head", "verbalizer"])
def test_save_then_load_reproduces_outputs_exactly(tmp_path, method, readout, causal):
    model = tuned(method, causal=causal, readout=readout)
    train_steps(model)
    model.eval()
    ids, mask = batch(seed=9)
    expected = model(ids, mask)
    model.save(tmp_path)
    fresh = Transformer(tiny_config(causal=causal), seed=0).eval()
    loaded = TunedModel.load(tmp_path, fresh).eval()
    torch.testing.assert_close(loaded(ids, mask), expected, rtol=0, atol=0)
    assert loaded.counts()["tuned"] == model.counts()["tuned"]
    assert (tmp_path / REPARAM_FILE).exists() == (method in ("prefix", "prompt-encoder"))


@pytest.mark.parametrize("layout", ["verbalizer", "template"])
def test_a_tuned_folder_with_a_readout_of_the_earlier_layouts_still_loads(tmp_path, layout):
    """Before there was one verbalizer readout, tuned.json held {"kind": "verbalizer", "label_token_ids"} (words read
    after the text) or {"kind": "template", ...}; both load as today's VerbalizerReadout with the same scores."""
    model = tuned("prompt", readout="verbalizer").eval()
    ids, mask = batch(seed=4)
    expected = model(ids, mask)
    model.save(tmp_path)
    meta = json.loads((tmp_path / "tuned.json").read_text())
    r = meta["readout"]
    if layout == "verbalizer":
        meta["readout"] = {"kind": "verbalizer", "n_classes": 2, "label_token_ids": [w[0] for w in r["words"]]}
    else:
        meta["readout"] = {**r, "kind": "template"}
    (tmp_path / "tuned.json").write_text(json.dumps(meta))
    loaded = TunedModel.load(tmp_path, Transformer(tiny_config(), seed=0)).eval()
    torch.testing.assert_close(loaded(ids, mask), expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_loading_onto_a_different_base_is_a_clear_error(tmp_path, method):
    tuned(method).save(tmp_path)
    other = Transformer(tiny_config(), seed=1)
    with pytest.raises(ValueError, match="tuned from a different base model"):
        TunedModel.load(tmp_path, other)


def test_a_prompt_initialised_from_text_loads_without_a_tokenizer(tmp_path, tokenizer):
    base = Transformer(tiny_config(), seed=0)
    model = TunedModel(
        base,
        build_method("prompt", base, tokenizer, prompt_len=6, init="text:To be, or not"),
        VerbalizerReadout.from_ids([[10], [11]]),
    )
    model.save(tmp_path)
    loaded = TunedModel.load(tmp_path, Transformer(tiny_config(), seed=0))
    assert torch.equal(loaded.method.P, model.method.P)
    assert loaded.method.hyperparameters()["init"] == "text:To be, or not"


def test_saved_file_holds_only_the_tuned_tensors(tmp_path):
    import safetensors.torch

    model = tuned("prefix", readout="verbalizer")
    model.save(tmp_path)
    tensors = safetensors.torch.load_file(tmp_path / TUNED_FILE)
    c = model.base.config
    assert list(tensors) == ["method.prefix"]
    assert tensors["method.prefix"].shape == (c.n_layers, 2, 3, c.d_model)


def test_a_damaged_tuned_file_is_a_clear_error(tmp_path):
    tuned("prompt").save(tmp_path)
    (tmp_path / TUNED_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="damaged"):
        TunedModel.load(tmp_path, Transformer(tiny_config(), seed=0))


# ---- learning on the synthetic task -------------------------------------------------------------------
LEARN = {  # (hyper-parameters, lr): small, fast settings; the defaults for real tasks are in DEFAULT_LR
    "prompt": ({"prompt_len": 4, "init": "vocab"}, 0.1),
    "prompt-encoder": ({"prompt_len": 4, "hidden": 32}, 0.03),
    "prefix": ({"prefix_len": 4, "d_prime": 16, "hidden": 64}, 0.003),
    "freeze": ({"recipe": "first", "k": 1}, 0.003),
    "bitfit": ({}, 0.03),
    "lora": ({"rank": 4}, 0.01),
    "adapter": ({"size": 8}, 0.01),
    "full": ({}, 0.001),
}


@pytest.mark.parametrize("method", METHODS)
def test_a_short_tuning_run_lowers_the_loss_and_beats_chance(method, sentiment_base, sentiment_task, tmp_path):
    """The frozen base answers well only after its trigger word; every method must learn to elicit the skill."""
    from synthetic_task import LABEL_WORDS

    from minilm.tuning.tasks import load_task

    state, config, tokenizer = sentiment_base
    base = Transformer(config)
    base.load_state_dict(state)
    hp, lr = LEARN[method]
    task = load_task(sentiment_task)
    model = TunedModel(
        base,
        build_method(method, base, tokenizer, **hp),
        VerbalizerReadout.from_words(tokenizer, LABEL_WORDS),
        task.labels,
    )
    before = evaluate(model, tokenizer, task.split("dev"))
    config = TuneConfig(
        lr=lr, max_steps=300, batch_size=16, eval_every=100, patience=0, warmup_steps=5, precision="fp32"
    )
    TuneTrainer(model, tokenizer, task, config, tmp_path, log=lambda _: None).fit()
    after = evaluate(model, tokenizer, task.split("dev"))
    assert after["loss"] < before["loss"] - 0.1, (before["loss"], after["loss"])
    assert after["accuracy"] >= 0.85, (before["accuracy"], after["accuracy"])  # chance is 0.5
