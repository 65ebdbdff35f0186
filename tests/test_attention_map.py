"""The attention map: the probabilities are the ones the model applies, and `train.py attention` draws them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from cli_support import ROOT, fails, fast_tune, tiny_run, train
from conftest import random_ids, tiny_model

from minilm.experiments.attention_map import SOFTWARE, attention_map, drawn_by_attention, token_pieces
from minilm.model.attention_probs import layer_probs
from minilm.tokenizer import Tokenizer
from minilm.training.plot import drawn_by_plot
from minilm.tuning.tuned import load_tuned

TEXT = "To be, or not to be"
PROMPT_LEN = 4


def applied_attention(model, run_forward) -> list[tuple[torch.Tensor, torch.Tensor, tuple | None]]:
    """(LN_1 output x, attention output, prefix) of every layer during `run_forward()`, a normal forward pass."""
    seen = []

    def keep(module, args, output):
        seen.append((args[0], output, args[2]))

    hooks = [block.attn.register_forward_hook(keep) for block in model.blocks]
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def assert_model_applies(model, probs: list[torch.Tensor], run_forward) -> None:
    """MultiHead output = Concat_h(probs_h V_h) W_O in every layer, V written out from the layer's W_V (and prefix)."""
    layers = applied_attention(model, run_forward)
    assert len(layers) == len(probs) == model.config.n_layers
    h, d_k = model.config.n_heads, model.config.head_dim
    for (x, output, prefix), p, block in zip(layers, probs, model.blocks):
        B, T, d = x.shape
        v = block.attn.W_v(x).view(B, T, h, d_k).transpose(1, 2)  # (B, h, T, d_k)
        if prefix is not None:
            v = torch.cat([prefix[1].expand(B, -1, -1, -1), v], dim=2)
        heads = (p @ v).transpose(1, 2).reshape(B, T, d)
        torch.testing.assert_close(block.attn.W_o(heads), output, rtol=1e-4, atol=1e-5)


def random_prefix(model, P: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shape = (1, model.config.n_heads, P, model.config.head_dim)
    return [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in model.blocks]


# ---- the probabilities ------------------------------------------------------------------------------------
def test_probabilities_sum_to_one_per_query_and_are_zero_above_the_diagonal_of_a_causal_model():
    model = tiny_model()
    probs = layer_probs(model, random_ids(2, 9))
    assert len(probs) == model.config.n_layers
    for p in probs:
        assert p.shape == (2, model.config.n_heads, 9, 9)
        torch.testing.assert_close(p.sum(-1), torch.ones(2, model.config.n_heads, 9))
        assert p.triu(diagonal=1).eq(0).all(), "a causal query never attends to a later token"
        assert p[..., torch.ones(9, 9, dtype=torch.bool).tril()].gt(0).all(), "it sees itself and every earlier one"


def test_probabilities_equal_softmax_of_the_first_layers_q_k_written_out():
    """probs = softmax(Q K^T / sqrt(d_k) + M), Q and K from LN_1(E[x] + P[pos]) and the layer's W_Q, W_K, head by
    head."""
    model = tiny_model()
    ids = random_ids(1, 7)
    block, d_k = model.blocks[0], model.config.head_dim
    probs = layer_probs(model, ids)[0]
    with torch.no_grad():
        x = block.ln_1(model.tok_emb(ids) + model.pos_emb(torch.arange(7)))
        for head in range(model.config.n_heads):
            cols = slice(head * d_k, (head + 1) * d_k)
            q = x @ block.attn.W_q.weight[cols].T + block.attn.W_q.bias[cols]
            k = x @ block.attn.W_k.weight[cols].T + block.attn.W_k.bias[cols]
            scores = (q @ k.transpose(-2, -1) / math.sqrt(d_k)).masked_fill(torch.ones(7, 7).triu(1).bool(), -math.inf)
            torch.testing.assert_close(probs[:, head], torch.softmax(scores, dim=-1))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("P", [0, 3], ids=["no-prefix", "prefix"])
def test_probabilities_are_what_every_layer_applies_to_its_values_in_a_normal_forward_pass(causal, P):
    """The model's own forward (the sdpa backend, which never forms probs) gives Concat(probs V) W_O in every layer."""
    model = tiny_model(causal=causal)
    ids, prefix = random_ids(2, 8), (random_prefix(model, P) if P else None)
    probs = layer_probs(model, ids, prefix=prefix)
    assert probs[0].shape == (2, model.config.n_heads, 8, P + 8)
    assert_model_applies(model, probs, lambda: model(ids, prefix=prefix))


def test_a_prefix_is_attended_by_every_query_and_shifts_the_causal_diagonal():
    model = tiny_model()
    P, T = 3, 6
    for p in layer_probs(model, random_ids(1, T), prefix=random_prefix(model, P)):
        assert p[..., :P].gt(0).all(), "every token sees every prefix key"
        assert p[..., P:].triu(diagonal=1).eq(0).all(), "and the tokens causally"
        torch.testing.assert_close(p.sum(-1), torch.ones(1, model.config.n_heads, T))


def test_asking_for_probabilities_leaves_the_model_and_its_forward_pass_as_they_were():
    model = tiny_model(dropout=0.1).train()
    ids = random_ids(1, 5)
    with torch.no_grad():
        before = model.eval()(ids)
    model.train()
    layer_probs(model, ids)
    assert model.training, "the model is back in training mode"
    with torch.no_grad():
        assert torch.equal(model.eval()(ids), before)


# ---- token pieces -----------------------------------------------------------------------------------------
def test_token_pieces_show_spaces_and_newlines_and_the_parts_of_a_split_character(tokenizer):
    text = "to be\n日"
    ids, pieces = token_pieces(tokenizer, text)
    assert ids == tokenizer.encode(text)
    assert "".join(pieces).startswith("to␣be↵")
    assert pieces[-3:] == ["日(1/3)", "日(2/3)", "日(3/3)"], "日 is three UTF-8 bytes, one token each"


# ---- folders: a pretrained run and tuned ones --------------------------------------------------------------
@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A 2-layer, 2-head causal run with a context of 32, pretrained for a few steps."""
    text = tmp_path_factory.mktemp("data") / "shakespeare_head.txt"
    text.write_text((ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    out = tmp_path_factory.mktemp("runs") / "causal"
    assert train.main(["pretrain", "--data", str(text), "--out", str(out), *tiny_run(), "--layers", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("task") / "mood"
    folder.mkdir()
    happy = ["O happy day", "Sweet love and joy", "A fair and noble deed", "Our hearts are glad"]
    sad = ["Alas, my grief", "Foul murder stalks", "O wretched day", "Sorrow and woe"]
    rows = "".join(f"{t}\t1\n" for t in happy) + "".join(f"{t}\t0\n" for t in sad)
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, base_run, task_dir) -> dict[str, Path]:
    """A prompt-tuned and a prefix-tuned folder (4 positions each) on `base_run`."""
    flags = {"prompt": ["--prompt-len", str(PROMPT_LEN)], "prefix": ["--prefix-len", str(PROMPT_LEN)]}
    folders = {}
    for method, extra in flags.items():
        out = tmp_path_factory.mktemp("tuned") / method
        argv = ["tune", "--base", str(base_run), "--method", method, "--task", str(task_dir), "--out", str(out)]
        assert train.main([*argv, *extra, *fast_tune(2)]) == 0
        folders[method] = out
    return folders


def test_the_map_of_a_pretrained_run_has_one_row_and_one_column_per_token(base_run):
    amap = attention_map(base_run, TEXT, device="cpu")
    _, pieces = token_pieces(Tokenizer.load(base_run / "tokenizer.json"), TEXT)
    T = len(pieces)
    assert amap.probs.shape == (2, 2, T, T)
    assert amap.queries == amap.keys == pieces and amap.n_prompt == amap.prompt_rows == 0
    assert amap.seen.equal(torch.ones(T, T, dtype=torch.bool).tril()) and amap.causal
    assert amap.probs.triu(diagonal=1).eq(0).all()


def test_a_prompt_tuned_map_has_the_soft_prompt_before_the_tokens_on_both_axes(tuned):
    amap = attention_map(tuned["prompt"], TEXT, device="cpu")
    marks = [f"P{i + 1}" for i in range(PROMPT_LEN)]
    L, h, T_q, T_k = amap.probs.shape
    assert amap.keys[:PROMPT_LEN] == amap.queries[:PROMPT_LEN] == marks and T_q == T_k == len(amap.keys)
    assert amap.n_prompt == amap.prompt_rows == PROMPT_LEN and amap.what == "soft prompt"
    assert amap.probs[:, :, PROMPT_LEN:, :PROMPT_LEN].gt(0).all(), "every token attends to the soft prompt"
    torch.testing.assert_close(amap.probs.sum(-1), torch.ones(L, h, T_q))
    assert amap.prompt_share(L - 1).shape == (h,) and amap.prompt_share(L - 1).gt(0).all()
    run = load_tuned(tuned["prompt"], device="cpu")
    batch = run.model.encode(run.tokenizer, [TEXT])
    assert_model_applies(
        run.model.base,
        [p[None] for p in amap.probs],
        lambda: run.model.hidden_states(batch["input_ids"], batch["attention_mask"]),
    )


def test_a_prefix_tuned_map_has_the_prefix_keys_on_the_key_axis_only(tuned):
    amap = attention_map(tuned["prefix"], TEXT, device="cpu")
    L, h, T_q, T_k = amap.probs.shape
    assert T_k == T_q + PROMPT_LEN and amap.keys[:PROMPT_LEN] == [f"P{i + 1}" for i in range(PROMPT_LEN)]
    assert amap.queries == amap.keys[PROMPT_LEN:] and amap.prompt_rows == 0 and amap.what == "prefix"
    assert amap.probs[..., :PROMPT_LEN].gt(0).all(), "every token attends to every prefix key"
    assert amap.probs[..., PROMPT_LEN:].triu(diagonal=1).eq(0).all(), "and to the tokens causally"
    torch.testing.assert_close(amap.probs.sum(-1), torch.ones(L, h, T_q))
    run = load_tuned(tuned["prefix"], device="cpu")
    batch = run.model.encode(run.tokenizer, [TEXT])
    assert_model_applies(
        run.model.base,
        [p[None] for p in amap.probs],
        lambda: run.model.hidden_states(batch["input_ids"], batch["attention_mask"]),
    )


# ---- the command --------------------------------------------------------------------------------------------
def is_our_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and SOFTWARE.encode() in data and drawn_by_attention(path)


def test_attention_draws_the_last_layer_of_a_run_into_the_current_folder(base_run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert train.main(["attention", "--from", str(base_run), "--text", "ROMEO: café, 日本", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == "wrote attention-L2.png"
    assert is_our_png(tmp_path / "attention-L2.png") and not drawn_by_plot(tmp_path / "attention-L2.png")
    # its own picture is replaced
    assert train.main(["attention", "--from", str(base_run), "--text", TEXT, "--layer", "2", "--device", "cpu"]) == 0


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_attention_draws_every_layer_of_a_tuned_folder(tuned, method, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / f"{method}.png"
    argv = ["attention", "--from", str(tuned[method]), "--text", TEXT, "--layer", "all", "--output", str(out)]
    assert train.main(argv) == 0
    assert is_our_png(out)


def test_a_text_longer_than_the_context_is_one_line(base_run, tuned, capsys):
    fails(capsys, ["attention", "--from", str(base_run), "--text", TEXT * 10], "longer than the model's context of 32")
    tokenizer = Tokenizer.load(base_run / "tokenizer.json")
    text = "a"
    while len(tokenizer.encode(text + " a")) <= 32 - PROMPT_LEN + 1:
        text += " a"
    assert 32 - PROMPT_LEN < len(tokenizer.encode(text)) <= 32, "fits the base, not after the soft prompt"
    fails(capsys, ["attention", "--from", str(tuned["prompt"]), "--text", text], "after the 4 soft-prompt positions")
    fails(capsys, ["attention", "--from", str(base_run), "--text", ""], "--text is empty")


@pytest.mark.parametrize("layer", ["0", "3", "first", "-1"])
def test_a_layer_the_model_does_not_have_is_one_line(base_run, capsys, layer, tmp_path):
    fails(
        capsys,
        ["attention", "--from", str(base_run), "--text", TEXT, f"--layer={layer}", "--output", str(tmp_path / "a.png")],
        f"--layer {layer}: this model has 2 layers",
    )
    assert not (tmp_path / "a.png").exists()


def test_attention_replaces_no_file_it_did_not_draw(base_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    loss = tmp_path / "loss.png"
    assert train.main(["plot", "--from", str(base_run), "--output", str(loss)]) == 0
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"\x89PNG\r\n\x1a\n not drawn by minilm")
    for target in (loss, notes):
        before = target.read_bytes()
        argv = ["attention", "--from", str(base_run), "--text", TEXT, "--output", str(target)]
        fails(capsys, argv, "was not written by minilm as a heat map")
        assert target.read_bytes() == before
    fails(capsys, ["attention", "--from", str(base_run), "--text", TEXT, "--output", str(tmp_path)], "is a folder")
