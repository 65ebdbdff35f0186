"""Prefix tuning started from a real text: the frozen base's own keys and values of that text, the input behind it.

At step 0 a causal base with the prefix of text t computes exactly base(t + x) at x's positions (and generates what
the base generates after t); zero init gives keys and values 0; every start is exact with or without the
reparameterisation MLP, moves when trained, and saves, loads and folds without changing outputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cli_support import fails
from conftest import random_ids, tiny_config

from minilm import Transformer, generate
from minilm.model import KVCache
from minilm.tuning import ClassificationHead, TunedModel, build_method
from minilm.tuning.methods.prefix import split_layers, text_keys_values

TEXT = "To be, or not to be"
SIZES = {"prefix_len": 3, "d_prime": 8, "hidden": 16}


def right_padded(B: int = 3, T: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = random_ids(B, T, seed=seed)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - 3 :] = 0
    mask[2, 2:] = 0
    return ids, mask


def text_tuned(tokenizer, init: str = f"text:{TEXT}", reparameterize: bool = True, **config) -> TunedModel:
    base = Transformer(tiny_config(**config), seed=0)
    method = build_method("prefix", base, tokenizer, **SIZES, init=init, reparameterize=reparameterize)
    return TunedModel(base, method, ClassificationHead(base.config.d_model, 2))


def train_steps(model: TunedModel, steps: int = 3) -> None:
    optimizer = torch.optim.AdamW(list(model.trainable().values()), lr=1e-2)
    for step in range(steps):
        ids, mask = right_padded(seed=step)
        F.cross_entropy(model(ids, mask), torch.tensor([0, 1, 1])).backward()
        optimizer.step()
        optimizer.zero_grad()


# ---- the start: base(text + input) ----------------------------------------------------------------------------------
@pytest.mark.parametrize("reparameterize", [True, False], ids=["mlp", "direct"])
def test_a_prefix_initialised_from_a_text_prompt_gives_the_logits_of_that_prompt_followed_by_the_input_at_step_0(
    tokenizer, reparameterize
):
    model = text_tuned(tokenizer, reparameterize=reparameterize).eval()
    text = torch.tensor(tokenizer.encode(TEXT))
    n = text.numel()
    assert model.method.position_offset == n and model.method.settings.prefix_len == n
    ids, mask = right_padded()
    h, _ = model.hidden_states(ids, mask)
    tuned = model.lm_logits(h)

    B = ids.size(0)
    both = torch.cat([text.expand(B, n), ids], dim=1)
    both_mask = torch.cat([torch.ones(B, n, dtype=torch.long), mask], dim=1)
    expected = Transformer(tiny_config(), seed=0).eval()(both, attention_mask=both_mask)[:, n:]
    real = mask.bool()
    torch.testing.assert_close(tuned[real], expected[real], rtol=1e-5, atol=1e-5)


def test_a_text_prefix_holds_the_keys_and_values_a_kv_cache_of_that_text_holds_without_dropout(tokenizer):
    base = Transformer(tiny_config(dropout=0.3), seed=0).train()
    text = torch.tensor(tokenizer.encode(TEXT))
    P_0 = text_keys_values(base, text)
    assert base.training, "the base's mode is given back"
    cache = KVCache(base.config.n_layers)
    base.eval()(text[None], cache=cache)
    for layer, (prefix_k, prefix_v) in enumerate(split_layers(P_0, base.config.n_heads)):
        torch.testing.assert_close(prefix_k, cache.layers[layer].k, rtol=0, atol=1e-6)
        torch.testing.assert_close(prefix_v, cache.layers[layer].v, rtol=0, atol=1e-6)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_a_tuned_model_with_a_text_prefix_generates_what_the_base_generates_after_the_text(tokenizer, use_cache):
    model = text_tuned(tokenizer).eval()
    text = torch.tensor(tokenizer.encode(TEXT))
    n = text.numel()
    ids = random_ids(2, 5, seed=3)
    tuned = model.generate(ids, 8, temperature=0.0, eos_id=None, use_cache=use_cache)
    base = Transformer(tiny_config(), seed=0).eval()
    after_text = generate(base, torch.cat([text.expand(2, n), ids], dim=1), 8, temperature=0.0, eos_id=None)
    assert torch.equal(tuned, after_text[:, n:])
    with pytest.raises(ValueError, match=f"after {n} offset positions"):
        model.generate(ids, 64 - n - 4)


def test_text_completion_from_a_text_prefixed_model_counts_the_text_against_the_context(tokenizer):
    model = text_tuned(tokenizer, max_len=24).eval()
    n = model.method.position_offset
    text = model.complete(tokenizer, "To be", 4, temperature=0.0)
    assert text.startswith("To be")
    long_prompt = " ".join(["question"] * 24)
    with pytest.raises(ValueError, match=f"the model's context is {24 - n}"):
        model.complete(tokenizer, long_prompt, 4)


# ---- zero, and the two ways to the same start ---------------------------------------------------------------------
@pytest.mark.parametrize("reparameterize", [True, False], ids=["mlp", "direct"])
def test_zero_init_gives_every_prefix_key_and_value_zero_at_step_0_and_takes_no_positions(reparameterize):
    base = Transformer(tiny_config(), seed=0)
    method = build_method("prefix", base, **SIZES, init="zero", reparameterize=reparameterize)
    assert torch.equal(method.prefixes(), torch.zeros(2, 2, 3, 32))
    assert method.position_offset == 0 and method.mixable
    if reparameterize:  # the same tensors as a random start: folders of either load the same way
        random = build_method("prefix", base, **SIZES)
        assert method.reparameterization_state().keys() == random.reparameterization_state().keys()
        assert torch.equal(method.mlp.W_1.weight, random.mlp.W_1.weight)


def test_the_reparameterised_and_direct_text_inits_start_at_the_same_prefix(tokenizer):
    with_mlp, direct = (text_tuned(tokenizer, reparameterize=r).method for r in (True, False))
    assert torch.equal(with_mlp.prefixes(), direct.prefixes())
    assert direct.mlp is None and with_mlp.prefix is None
    assert not with_mlp.prefixes().eq(0).all()


@pytest.mark.parametrize("init", ["zero", f"text:{TEXT}"])
def test_training_moves_the_prefix_and_reaches_the_mlp_through_its_last_layer_after_one_step(tokenizer, init):
    model = text_tuned(tokenizer, init=init)
    mlp = model.method.mlp
    start = model.method.prefixes().detach().clone()
    P_0 = None if mlp.P_0 is None else mlp.P_0.clone()
    ids, mask = right_padded()
    F.cross_entropy(model(ids, mask), torch.tensor([0, 1, 1])).backward()
    assert mlp.W_2.weight.grad.abs().sum() > 0, "W_2 = 0 still gets a gradient"
    assert mlp.W_1.weight.grad.abs().sum() == 0 and mlp.P_prime.grad.abs().sum() == 0, "nothing passes W_2 = 0"
    model.zero_grad()
    train_steps(model, steps=1)
    F.cross_entropy(model(ids, mask), torch.tensor([0, 1, 1])).backward()
    assert mlp.W_1.weight.grad.abs().sum() > 0 and mlp.P_prime.grad.abs().sum() > 0
    assert not torch.allclose(model.method.prefixes(), start)
    if P_0 is not None:
        assert torch.equal(mlp.P_0, P_0) and "method.mlp.P_0" not in model.trainable(), "P_0 is fixed"


def test_a_directly_trained_text_prefix_moves_from_its_start(tokenizer):
    model = text_tuned(tokenizer, reparameterize=False)
    start = model.method.prefix.detach().clone()
    train_steps(model, steps=2)
    assert not torch.allclose(model.method.prefix, start)


# ---- save, load, fold -----------------------------------------------------------------------------------------------
def test_a_text_initialised_tuned_model_loads_with_its_position_offset_and_folds_with_the_same_outputs(
    tmp_path, tokenizer
):
    model = text_tuned(tokenizer)
    train_steps(model)
    model.eval()
    n = len(tokenizer.encode(TEXT))
    ids, mask = right_padded(seed=9)
    expected = model(ids, mask)
    model.save(tmp_path)
    hp = TunedModel.load(tmp_path, Transformer(tiny_config(), seed=0)).method.hyperparameters()
    assert hp["init"] == f"text:{TEXT}" and hp["prefix_len"] == n

    loaded = TunedModel.load(tmp_path, Transformer(tiny_config(), seed=0)).eval()  # no tokenizer needed
    assert loaded.method.folded and loaded.method.position_offset == n
    torch.testing.assert_close(loaded(ids, mask), expected, rtol=0, atol=0)
    resumed = TunedModel.load(tmp_path, Transformer(tiny_config(), seed=0), for_training=True).eval()
    assert not resumed.method.folded and resumed.method.position_offset == n
    assert torch.equal(resumed.method.mlp.P_0, model.method.mlp.P_0)
    torch.testing.assert_close(resumed(ids, mask), expected, rtol=0, atol=0)

    model.method.fold()
    assert model.method.folded and model.method.position_offset == n
    torch.testing.assert_close(model(ids, mask), expected, rtol=0, atol=0)


# ---- positions that start later -----------------------------------------------------------------------------------
def test_a_position_offset_is_kept_by_a_kv_cache_and_may_differ_by_row():
    base = Transformer(tiny_config(), seed=0).eval()
    ids = random_ids(2, 6, seed=4)
    whole = base(ids, position_offset=5)
    cache = KVCache(base.config.n_layers)
    chunks = torch.cat([base(ids[:, :4], cache=cache, position_offset=5), base(ids[:, 4:], cache=cache)], dim=1)
    torch.testing.assert_close(chunks, whole, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(whole, base(ids)), "the positions matter"
    per_row = base(ids, position_offset=torch.tensor([5, 2]))
    torch.testing.assert_close(per_row[1], base(ids[1:], position_offset=2)[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_row[0], whole[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="first chunk only"):
        base(ids[:, :1], cache=cache, position_offset=5)
    with pytest.raises(ValueError, match="after a position offset of 60"):
        base(ids, position_offset=60)
    with pytest.raises(ValueError, match="must be >= 0"):
        base(ids, position_offset=-1)


# ---- mistakes -------------------------------------------------------------------------------------------------------
def test_a_prefix_text_needs_a_tokenizer_and_must_leave_room_for_the_input(tokenizer):
    base = Transformer(tiny_config(max_len=8), seed=0)
    with pytest.raises(ValueError, match="needs the base's tokenizer"):
        build_method("prefix", base, None, init="text:hello")
    with pytest.raises(ValueError, match=r"the words are \d+ tokens; the base's context is 8"):
        build_method("prefix", base, tokenizer, init="text:" + " ".join(["question"] * 8))
    model = TunedModel(base, build_method("prefix", base, tokenizer, init="text:be"), ClassificationHead(32, 2))
    assert model.max_text_tokens() == 8 - len(tokenizer.encode("be"))


@pytest.mark.parametrize("value", ["bogus", "text:", "text:  ", "Text:hi", "zeros"])
def test_a_bad_prefix_init_is_a_one_line_error(capsys, tmp_path, value):
    argv = ["tune", "--base", str(tmp_path), "--task", str(tmp_path), "--method", "prefix", "--out", str(tmp_path)]
    fails(capsys, [*argv, "--prefix-init", value], "--prefix-init", "unknown prefix initialisation", repr(value))


def test_prefix_init_is_a_setting_of_prefix_tuning_only(capsys, tmp_path):
    argv = [
        "tune",
        "--base",
        str(tmp_path),
        "--task",
        str(tmp_path),
        "--method",
        "prompt",
        "--out",
        str(tmp_path / "t"),
    ]
    fails(capsys, [*argv, "--prefix-init", "zero"], "--prefix-init does not apply to --method prompt")
