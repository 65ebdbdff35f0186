"""The Transformer: parameter count, tied output, LayerNorm and FFN equations, causality, padding, prefix, cache,
input errors."""

from __future__ import annotations

import pathlib
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import random_ids, tiny_config, tiny_model

from minilm import KVCache, Transformer, causal_lm_loss, mask_tokens, masked_lm_loss, parameter_count
from minilm.model.attention import BACKENDS as ATTENTION_BACKENDS
from minilm.model.layers import FeedForward, LayerNorm, layer_norm
from minilm.model.masks import position_ids

BACKENDS = list(ATTENTION_BACKENDS)


def random_prefix(config, batch=1, length=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, config.n_heads, length, config.head_dim)
    return [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in range(config.n_layers)]


@pytest.mark.parametrize(
    "sizes",
    [
        dict(),
        dict(vocab_size=1000, d_model=64, n_heads=8, n_layers=3, d_ff=256, max_len=128),
        dict(n_layers=1, d_ff=17),
    ],
)
def test_parameter_count_matches_closed_form(sizes):
    config = tiny_config(**sizes)
    V, N, L, d, f = config.vocab_size, config.max_len, config.n_layers, config.d_model, config.d_ff
    assert (
        Transformer(config).num_parameters()
        == parameter_count(config)
        == V * d + N * d + L * (4 * d * d + 2 * d * f + 9 * d + f) + 2 * d
    )


def test_output_projection_is_tied_to_the_token_embedding():
    model = tiny_model()
    ids = random_ids(1, 4)
    h = model.hidden_states(ids)
    torch.testing.assert_close(model(ids), h @ model.tok_emb.weight.T)
    vocab_by_width = [name for name, p in model.named_parameters() if p.shape == model.tok_emb.weight.shape]
    assert vocab_by_width == ["tok_emb.weight"], "there is no separate output matrix"


def test_layer_norm_matches_its_equation_and_torch():
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.gamma.normal_()
        ln.beta.normal_()
    x = torch.randn(3, 5, 16) * 4 + 2
    torch.testing.assert_close(ln(x), F.layer_norm(x, (16,), ln.gamma, ln.beta, ln.eps))
    y = (ln(x) - ln.beta) / ln.gamma
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(3, 5), atol=1e-3, rtol=0)


def test_layer_norm_of_a_nearly_constant_vector_is_bounded_by_eps():
    """sigma^2 far below eps: LN divides by sqrt(sigma^2 + eps) ~ sqrt(eps), as torch's layer norm (in float64)."""
    ln = LayerNorm(16)
    x = 3.0 + 1e-4 * torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(0))
    expected = F.layer_norm(x.double(), (16,), eps=ln.eps).float()
    torch.testing.assert_close(ln(x), expected, rtol=1e-4, atol=1e-4)
    assert ln(x).abs().max() < 0.1  # sqrt(eps) keeps the tiny deviations tiny


def test_layer_norm_fused_kernel_equals_the_written_out_equation_in_values_and_gradients():
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.gamma.normal_()
        ln.beta.normal_()
    x = (torch.randn(3, 5, 16) * 4 + 2).requires_grad_()
    upstream = torch.randn(3, 5, 16)
    fused = torch.autograd.grad(ln(x), (x, ln.gamma, ln.beta), upstream)
    written_out = torch.autograd.grad(layer_norm(x, ln.gamma, ln.beta, ln.eps), (x, ln.gamma, ln.beta), upstream)
    torch.testing.assert_close(ln(x), layer_norm(x, ln.gamma, ln.beta, ln.eps))
    for a, b in zip(fused, written_out):
        torch.testing.assert_close(a, b)
    with torch.autocast(
        "cpu", dtype=torch.bfloat16
    ):  # mixed precision keeps LayerNorm in float32, as the written-out form
        assert ln(x).dtype == torch.float32


def test_feed_forward_is_gelu_between_two_linear_maps():
    ffn = FeedForward(tiny_config())
    x = torch.randn(2, 3, 32)
    hidden = x @ ffn.W_1.weight.T + ffn.W_1.bias
    gelu = hidden * 0.5 * (1 + torch.erf(hidden / 2**0.5))  # z * Phi(z)
    torch.testing.assert_close(ffn(x), gelu @ ffn.W_2.weight.T + ffn.W_2.bias)


def test_feed_forward_uses_the_exact_erf_gelu_not_the_tanh_approximation():
    """In float64, over pre-activations spread across [-4, 4] (where the tanh form is off by up to ~5e-4), FFN(x)
    equals z/2 (1 + erf(z / sqrt(2))) between the two linear maps to 1e-12."""
    ffn = FeedForward(tiny_config()).double()
    x = 4 * torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hidden = x @ ffn.W_1.weight.T + ffn.W_1.bias
    assert hidden.abs().max() > 2, "the pre-activations must reach where the two GELUs differ"
    gelu = hidden / 2 * (1 + torch.erf(hidden / 2**0.5))
    torch.testing.assert_close(ffn(x), gelu @ ffn.W_2.weight.T + ffn.W_2.bias, rtol=1e-12, atol=1e-12)


def test_block_is_pre_layernorm_attention_then_feed_forward_with_residuals():
    model = tiny_model()
    block = model.blocks[0]
    with torch.no_grad():
        for ln in (block.ln_1, block.ln_2):
            ln.gamma.normal_()
            ln.beta.normal_()
    x = torch.randn(2, 5, 32)
    a = x + block.attn(block.ln_1(x))
    torch.testing.assert_close(block(x, None), a + block.ffn(block.ln_2(a)))


def test_residual_output_projections_start_with_smaller_weights():
    """W ~ N(0, 0.02^2), except W_O and W_2 ~ N(0, (0.02 / sqrt(2L))^2) so the residual stream's variance stays put."""
    config = tiny_config(d_model=128, d_ff=512, n_layers=8, n_heads=4)
    model = Transformer(config)
    residual_std = 0.02 / (2 * config.n_layers) ** 0.5
    for block in model.blocks:
        assert block.attn.W_o.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.ffn.W_2.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.attn.W_q.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.attn.W_q.bias.eq(0).all()
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_same_seed_gives_same_weights_and_other_seed_differs():
    a, b, c = Transformer(tiny_config(), seed=1), Transformer(tiny_config(), seed=1), Transformer(tiny_config(), seed=2)
    for (name, pa), pb, _pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)


def test_causal_and_bidirectional_models_share_weights_but_not_outputs():
    causal, bidirectional = tiny_model(causal=True, n_layers=1), tiny_model(causal=False, n_layers=1)
    for pa, pb in zip(causal.parameters(), bidirectional.parameters()):
        assert torch.equal(pa, pb)
    ids = random_ids(1, 6)
    out_c, out_b = causal(ids), bidirectional(ids)
    assert not torch.allclose(out_c[:, 0], out_b[:, 0]), "bidirectional position 0 sees the future, causal does not"
    # with one layer the last position sees the same inputs either way
    torch.testing.assert_close(out_c[:, -1], out_b[:, -1])


def model_for(backend: str, **overrides) -> Transformer:
    """The tiny model on `backend`; for `triton` with 2 heads of 16 (the kernel's smallest head dim) instead of 4
    of 8."""
    if backend == "triton":
        overrides.setdefault("n_heads", 2)
    return tiny_model(attention=backend, **overrides)


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_model_output_at_t_has_zero_gradient_from_later_inputs(backend):
    model = model_for(backend)
    x = model.tok_emb(random_ids(1, 7)).detach().requires_grad_(True)
    logits = model(inputs_embeds=x)
    for t in range(7):
        (grad,) = torch.autograd.grad(logits[0, t].sum(), x, retain_graph=True)
        assert grad[0, t + 1 :].eq(0).all(), f"output {t} depends on a later input"
        assert grad[0, : t + 1].abs().sum(dim=-1).gt(0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bidirectional_model_output_depends_on_later_inputs(backend):
    model = model_for(backend, causal=False)
    x = model.tok_emb(random_ids(1, 5)).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(inputs_embeds=x)[0, 0].sum(), x)
    assert grad[0, 1:].abs().sum(dim=-1).gt(0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_each_sequence_alone(backend, causal, side, tokenizer):
    model = model_for(backend, causal=causal)
    texts = ["to be or not to be", "the fox", "whether tis nobler in the mind"]
    batch = tokenizer.encode_batch(texts, side=side)
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])
    for row, text in enumerate(texts):
        alone = model(torch.tensor([tokenizer.encode(text)]))[0]
        real = batch["attention_mask"][row].bool()
        torch.testing.assert_close(logits[row, real], alone, rtol=1e-5, atol=1e-5)


def test_positions_count_only_real_tokens():
    real = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]], dtype=torch.bool)
    positions = position_ids(real, torch.tensor([0, 0, 4]), 5)
    assert positions[real].tolist() == [0, 1, 2, 0, 1, 2, 4, 5, 6]
    assert position_ids(None, torch.tensor([0, 3]), 3).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_inputs_embeds_of_the_token_embeddings_equal_input_ids():
    model = tiny_model()
    ids = random_ids(2, 5)
    torch.testing.assert_close(model(inputs_embeds=model.tok_emb(ids)), model(ids))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_prefix", [False, True], ids=["no-prefix", "prefix"])
@pytest.mark.parametrize("use_padding", [False, True], ids=["no-pad", "pad"])
def test_kv_cache_chunks_give_the_same_logits_as_one_pass(backend, use_prefix, use_padding):
    model = model_for(backend)
    ids = random_ids(2, 9)
    mask = torch.ones(2, 9, dtype=torch.long)
    if use_padding:
        mask[1, :3] = 0  # left padding in row 1
    prefix = random_prefix(model.config, batch=2) if use_prefix else None
    full = model(ids, attention_mask=mask, prefix=prefix)
    cache = KVCache(model.config.n_layers)
    chunks = [model(ids[:, :4], attention_mask=mask[:, :4], prefix=prefix, cache=cache)]
    for t in range(4, 9):
        chunks.append(model(ids[:, t : t + 1], attention_mask=mask[:, t : t + 1], cache=cache))
    real = mask.bool()
    torch.testing.assert_close(torch.cat(chunks, dim=1)[real], full[real], rtol=1e-5, atol=1e-5)
    assert len(cache) == (3 if use_prefix else 0) + 9


def test_a_kv_cache_on_a_bidirectional_model_is_a_clear_error():
    """In a masked model every key changes when a token arrives, so cached keys would be wrong (not merely slow)."""
    model = tiny_model(causal=False)
    with pytest.raises(ValueError, match="only meaningful for a causal model"):
        model(random_ids(1, 4), cache=KVCache(model.config.n_layers))


@pytest.mark.parametrize("backend", BACKENDS)
def test_prefix_changes_every_position_and_a_batch_of_one_broadcasts(backend):
    model = model_for(backend)
    ids = random_ids(2, 5)
    prefix = random_prefix(model.config, batch=1)
    with_prefix = model(ids, prefix=prefix)
    assert not torch.isclose(with_prefix, model(ids)).all(dim=-1).any(), "every position attends to the prefix"
    expanded = [(k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1)) for k, v in prefix]
    torch.testing.assert_close(model(ids, prefix=expanded), with_prefix)


def test_prefix_keys_and_values_receive_gradients():
    model = tiny_model()
    prefix = [(k.requires_grad_(), v.requires_grad_()) for k, v in random_prefix(model.config)]
    model(random_ids(1, 4), prefix=prefix).sum().backward()
    for k, v in prefix:
        assert k.grad.abs().sum() > 0 and v.grad.abs().sum() > 0


# ---- bad input is a clear ValueError ---------------------------------------------------------
def test_token_id_out_of_range_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"token id 300 is out of range for vocab_size=300"):
        model(torch.tensor([[5, 300]]))
    with pytest.raises(ValueError, match=r"token id -1 is out of range"):
        model(torch.tensor([[-1, 5]]))


def test_sequence_longer_than_max_len_is_a_clear_error():
    model = tiny_model(max_len=8)
    with pytest.raises(ValueError, match=r"sequence of 9 tokens is longer than the model's max_len=8"):
        model(random_ids(1, 9))
    cache = KVCache(model.config.n_layers)
    model(random_ids(1, 6), cache=cache)
    with pytest.raises(ValueError, match=r"sequence of 9 tokens is longer"):
        model(random_ids(1, 3), cache=cache)


def test_mismatched_attention_mask_shape_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 4\) but the input is \(2, 5\)"):
        model(random_ids(2, 5), attention_mask=torch.ones(2, 4))


def test_bad_prefix_shape_is_a_clear_error():
    model = tiny_model()
    good = random_prefix(model.config)
    with pytest.raises(ValueError, match="prefix has 1 layers but the model has n_layers=2"):
        model(random_ids(1, 3), prefix=good[:1])
    with pytest.raises(ValueError, match="prefix of layer 0 has shape"):
        model(random_ids(1, 3), prefix=[(k.transpose(1, 2), v) for k, v in good])


def test_passing_both_or_neither_input_is_a_clear_error():
    model = tiny_model()
    ids = random_ids(1, 3)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(ids, inputs_embeds=model.tok_emb(ids))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()


def test_library_writes_its_own_attention():
    """No nn.MultiheadAttention, nn.Transformer* or Hugging Face transformers anywhere in minilm/."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in pathlib.Path("minilm").rglob("*.py"))
    assert "def scaled_dot_product_attention" in source
    for forbidden in (r"MultiheadAttention", r"nn\.Transformer", r"^\s*(import|from)\s+transformers\b"):
        assert not re.search(forbidden, source, flags=re.MULTILINE), forbidden


# ---- it learns ----------------------------------------------------------------------------------
def test_causal_model_learns_to_continue_a_repeated_sequence():
    model = Transformer(tiny_config(), seed=0)
    ids = random_ids(4, 32, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = causal_lm_loss(model(ids), ids)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def test_masked_model_learns_to_fill_masked_tokens():
    model = Transformer(tiny_config(causal=False), seed=0)
    ids = random_ids(4, 32, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        corrupted, labels = mask_tokens(ids, model.config.vocab_size, generator)
        loss = masked_lm_loss(model(corrupted), labels)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
