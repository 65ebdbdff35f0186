"""Automatic prompt search (AutoPrompt): the first-order ranking, the gradient at each trigger, a search that finds the
word the synthetic base answers after, no weight changed, and the command with its folder that classify reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from cli_support import fails, train
from conftest import tiny_model
from synthetic_task import LABEL_WORDS

from minilm import Transformer
from minilm.files import save_weights
from minilm.prompting import DEFAULT_TEMPLATES, Verbalizer
from minilm.tokenizer import CLS_ID, MASK_ID, NUM_SPECIAL_TOKENS, SEP_ID
from minilm.training.run import BEST_WEIGHTS, write_run_files
from minilm.tuning.prompt_search import (
    SearchConfig,
    TriggerEmbeddings,
    TriggerTemplate,
    label_loss,
    search_prompt,
    search_template_for,
    top_candidates,
    trigger_gradients,
    with_triggers,
    without_triggers,
)
from minilm.tuning.tasks import Example, Task, load_task
from minilm.tuning.trainer import evaluate
from minilm.tuning.tuned import TunedModel

WORDS = [" be", " the"]  # one token each in the conftest tokenizer
TEXTS = ["to be or not", "that is the question", "whether tis nobler in the mind"]


def synthetic_base(sentiment_base) -> Transformer:
    state, config, _ = sentiment_base
    base = Transformer(config)
    base.load_state_dict(state)
    return base.eval()


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, sentiment_task) -> Path:
    """The synthetic task with its label words in a task.json (the shared folder is left as it is)."""
    folder = tmp_path_factory.mktemp("task") / "synthetic"
    shutil.copytree(sentiment_task, folder)
    words = dict(zip(("0", "1"), LABEL_WORDS))
    (folder / "task.json").write_text(json.dumps({"labels": ["0", "1"], "label_words": words}), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, sentiment_base) -> Path:
    """The synthetic base as a run folder (config.json, tokenizer.json, best.safetensors)."""
    _, config, tokenizer = sentiment_base
    folder = tmp_path_factory.mktemp("runs") / "synthetic"
    folder.mkdir()
    write_run_files(folder, tokenizer, config, {})
    save_weights(synthetic_base(sentiment_base), folder / BEST_WEIGHTS)
    return folder


def search_flags(run: Path, task: Path, out: Path, *flags: str, template: str = "[T] {text}") -> list[str]:
    """prompt-search of `template` (one trigger in front of the text), 2 iterations, starting from "a"."""
    where = ["--base", str(run), "--task", str(task), "--out", str(out), "--device", "cpu"]
    return ["prompt-search", *where, "--template", template, "--iterations", "2", "--start-token", "a", *flags]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, synthetic_run, task_dir) -> Path:
    out = tmp_path_factory.mktemp("search") / "found"
    assert train.main(search_flags(synthetic_run, task_dir, out)) == 0
    return out


# ---- the first-order ranking ---------------------------------------------------------------------------------------
def test_candidates_are_the_top_k_of_minus_E_g_and_never_a_special_token():
    g = torch.tensor([1.0, -2.0, 0.5])
    generator = torch.Generator().manual_seed(0)
    E = torch.randn(20, 3, generator=generator) * torch.linspace(0.2, 5.0, 20).unsqueeze(1)  # rows of many norms
    E[MASK_ID] = -10 * g  # the largest -e_w . g of all, but a special token
    E[8] = -0.5 * g  # along -g: the best direction, a short vector
    E[9] = -2.0 * g + torch.tensor([2.0, 1.0, 0.0])  # a larger -e_w . g than row 8, at an angle to -g
    scores = -(E @ g)
    expected = [w for w in scores.argsort(descending=True).tolist() if w >= NUM_SPECIAL_TOKENS]
    assert expected.index(9) < expected.index(8)  # by the dot product, not the cosine
    assert top_candidates(E, g, 5).tolist() == expected[:5]
    assert top_candidates(E, g, 100).tolist() == expected  # at most every ordinary token, best first


def hand_gradients(base: Transformer, tokenizer, template: str, ids: list[int], labels: list[int]):
    """(g, L) computed another way: each prompt written out with the real trigger ids, E[x] given as inputs_embeds,
    and autograd's gradient at each trigger's position summed over the rows."""
    causal, E, V = base.config.causal, base.tok_emb.weight, base.config.vocab_size
    trig = TriggerTemplate.parse(tokenizer, template, V)
    before, after, tail = trig.filled(None)  # V + j marks trigger j
    words = [tokenizer.encode(w)[0] for w in WORDS]
    loss, rows, positions = torch.zeros(()), [], []
    for text, label in zip(TEXTS, labels):
        body = before + tokenizer.encode(trig.text_prefix + text) + after
        marked, slot = (body, len(body) - 1) if causal else ([CLS_ID, *body, MASK_ID, *tail, SEP_ID], 1 + len(body))
        x = E[torch.tensor([ids[t - V] if t >= V else t for t in marked])].detach().clone().requires_grad_(True)
        logp = F.log_softmax(base.hidden_states(inputs_embeds=x[None])[0, slot] @ E.T, dim=-1)
        loss = loss + F.cross_entropy(logp[words][None], torch.tensor([label])) / len(TEXTS)
        rows.append(x)
        positions.append([marked.index(V + j) for j in range(trig.n_triggers)])
    grads = torch.autograd.grad(loss, rows)
    g = torch.stack([sum(grads[b][positions[b][j]] for b in range(len(rows))) for j in range(trig.n_triggers)])
    return g, loss.item()


@pytest.mark.parametrize(
    "causal,template",
    [(True, "[T] {text} [T] It was"), (False, "[T] {text} It was [MASK] [T].")],
    ids=["causal", "masked"],
)
def test_the_first_order_ranking_equals_a_hand_computation_through_inputs_embeds(tokenizer, causal, template):
    base = tiny_model(causal=causal)
    trig = TriggerTemplate.parse(tokenizer, template, base.config.vocab_size)
    words = Verbalizer.from_words(tokenizer, [[w] for w in WORDS]).words
    ids, labels = tokenizer.encode(" question")[:2], [0, 1, 0]
    model = TunedModel(base, TriggerEmbeddings(), trig.readout(words, ids))
    inputs = model.encode(tokenizer, TEXTS)
    g, loss = trigger_gradients(base, trig, words, ids, inputs, torch.tensor(labels))
    g_hand, loss_hand = hand_gradients(base, tokenizer, template, ids, labels)
    assert loss == pytest.approx(loss_hand, abs=1e-5)
    with torch.no_grad():  # the placeholders score exactly what the real ids score
        assert float(label_loss(model, inputs, torch.tensor(labels))) == pytest.approx(loss, abs=1e-6)
    torch.testing.assert_close(g, g_hand, rtol=1e-4, atol=1e-6)
    E = base.tok_emb.weight.detach()
    for j in range(trig.n_triggers):
        hand = [w for w in (-(E @ g_hand[j])).argsort(descending=True).tolist() if w >= NUM_SPECIAL_TOKENS]
        assert top_candidates(E, g[j], 10).tolist() == hand[:10], j


# ---- the template --------------------------------------------------------------------------------------------------
def test_a_search_template_puts_one_placeholder_per_trigger_between_its_literal_pieces(tokenizer):
    V = 300
    causal = TriggerTemplate.parse(tokenizer, "{text} [T] [T] It was", V)
    assert causal.sections == ((), (V, V + 1, *tokenizer.encode(" It was")), ())
    assert causal.text_prefix == "" and causal.n_triggers == 2
    front = TriggerTemplate.parse(tokenizer, "[T] {text}", V)
    assert front.sections == ((V,), (), ()) and front.text_prefix == " "
    masked = TriggerTemplate.parse(tokenizer, "Q: {text} [T] [MASK] [T].", V)
    assert masked.sections == (
        tuple(tokenizer.encode("Q:")),
        (V, *tokenizer.encode(" ")),
        (V + 1, *tokenizer.encode(".")),
    )
    the = tokenizer.encode(" the")
    assert causal.filled(the * 2)[1][:2] == the * 2 and causal.rendered(tokenizer, the * 2) == "{text} the the It was"


def test_the_default_search_template_puts_the_triggers_right_after_the_text():
    assert with_triggers(DEFAULT_TEMPLATES[True], 3) == "{text} [T] [T] [T] It was"
    assert with_triggers(DEFAULT_TEMPLATES[False], 2) == "{text} [T] [T] It was [MASK]."
    assert without_triggers("{text} [T] [T] [T] It was") == DEFAULT_TEMPLATES[True]
    assert without_triggers("[T] {text}") == without_triggers("[T] [T] {text} [T]") == "{text}"
    task = Task("t", ["0", "1"], {"train": []}, template="Review: {text} Verdict:")
    assert search_template_for(None, task, True, 1) == "Review: {text} [T] Verdict:"
    assert search_template_for(None, Task("t", ["0", "1"], {}), False, 3) == "{text} [T] [T] [T] It was [MASK]."
    assert search_template_for("[T] {text}", task, True, 3) == "[T] {text}"


# ---- the search ----------------------------------------------------------------------------------------------------
def test_the_search_finds_the_word_the_synthetic_base_answers_after(sentiment_base, task_dir):
    """The base was pretrained to answer after "rate": from "a", the search finds it (or a token as good) on train;
    on dev its loss is that of "rate" and well below the start's. (This base is already accurate on the bare
    sentence, but only after "rate" is it confident: the search lowers the loss it measures.)"""
    base, tokenizer = synthetic_base(sentiment_base), sentiment_base[2]
    task = load_task(task_dir)
    config = SearchConfig(iterations=3, batch_size=64, start_token="a")
    result = search_prompt(base, tokenizer, task, "[T] {text}", config, log=lambda _: None)
    rate = tokenizer.encode("rate")
    assert len(rate) == 1 and result.start_ids == tokenizer.encode("a")

    def dev(ids: list[int]) -> dict:
        model = TunedModel(base, TriggerEmbeddings(), result.readout(ids), task.labels)
        return evaluate(model, tokenizer, task.split("dev"))

    found, with_rate, start = dev(result.trigger_ids), dev(rate), dev(result.start_ids)
    assert found["loss"] <= with_rate["loss"] + 0.01 and found["accuracy"] >= with_rate["accuracy"] - 0.02, (
        result.trigger_tokens
    )
    assert found["loss"] < start["loss"] - 0.05, (found, start)
    assert [h["iteration"] for h in result.history] == [1, 2, 3] and any(h["accepted"] for h in result.history)


def test_the_search_never_changes_a_weight_of_the_base(tokenizer):
    base = tiny_model().train()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    examples = [Example(t, i % 2) for i, t in enumerate(TEXTS * 4)]
    task = Task("t", ["0", "1"], {"train": examples}, dict(zip(("0", "1"), WORDS)))
    config = SearchConfig(iterations=4, candidates=5, batch_size=4, start_token=".")
    result = search_prompt(base, tokenizer, task, "{text} [T] [T] It was", config, log=lambda _: None)
    assert len(result.history) == 4 and base.training  # its mode is put back
    after = base.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    assert all(p.grad is None for p in base.parameters())


def test_a_start_token_that_is_not_one_token_is_a_one_line_error(tokenizer):
    task = Task("t", ["0", "1"], {"train": [Example("to be", 0)]}, dict(zip(("0", "1"), WORDS)))
    with pytest.raises(ValueError, match=r"--start-token 'rate the' is 4 token\(s\)"):
        search_prompt(tiny_model(), tokenizer, task, "[T] {text}", SearchConfig(start_token="rate the"))


# ---- the command ---------------------------------------------------------------------------------------------------
def test_prompt_search_writes_the_found_prompt_that_classify_reads(searched, task_dir, capsys):
    prompt = json.loads((searched / "prompt.json").read_text())
    assert prompt["hand_template"] == "{text}" and prompt["search_template"] == "[T] {text}"
    assert len(prompt["trigger_ids"]) == 1 and prompt["found_template"] == prompt["trigger_tokens"][0] + " {text}"
    assert prompt["readout"]["before"] == prompt["trigger_ids"] and prompt["labels"] == ["0", "1"]
    assert set(prompt["dev"]) == {"hand", "start", "found"} and len(prompt["weights_sha256"]) == 64
    assert [json.loads(line)["iteration"] for line in (searched / "search.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((searched / "minilm.json").read_text()) == {"kind": "prompt-search"}
    capsys.readouterr()
    assert train.main(["classify", "--from", str(searched), "--text", "the film was great and long"]) == 0
    assert capsys.readouterr().out.split(" | ")[0] in ("0", "1")
    assert train.main(["classify", "--from", str(searched), "--task", str(task_dir)]) == 0
    report = json.loads((searched / "eval-dev.json").read_text())
    assert report["accuracy"] == prompt["dev"]["found"]["accuracy"]  # classify scores what the search reported


def test_prompt_search_mistakes_are_one_line_and_change_nothing(searched, synthetic_run, task_dir, tmp_path, capsys):
    before = (searched / "prompt.json").read_bytes()
    fails(capsys, search_flags(synthetic_run, task_dir, searched), "already holds a searched prompt", "--overwrite")
    no_trigger = search_flags(synthetic_run, task_dir, tmp_path / "x", template="{text} It was")
    fails(capsys, no_trigger, "has no [T]", "{text} [T] [T] [T] It was")
    fails(capsys, [*search_flags(synthetic_run, task_dir, tmp_path / "y"), "--start-token", "rate the"], "4 token(s)")
    other = tmp_path / "other_base"
    shutil.copytree(synthetic_run, other)
    tensors = safetensors.torch.load_file(other / BEST_WEIGHTS)
    tensors["tok_emb.weight"][7, 0] += 1e-3
    safetensors.torch.save_file(tensors, other / BEST_WEIGHTS)
    classify = ["classify", "--from", str(searched), "--base", str(other), "--text", "the film"]
    fails(capsys, classify, "searched on a different base model", "SHA-256")
    assert (searched / "prompt.json").read_bytes() == before
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_prompt_search_overwrite_replaces_its_own_files_only(synthetic_run, task_dir, tmp_path):
    out = tmp_path / "found"
    assert train.main(search_flags(synthetic_run, task_dir, out, "--iterations", "1")) == 0
    (out / "notes.txt").write_text("mine")
    assert train.main(search_flags(synthetic_run, task_dir, out, "--iterations", "1", "--overwrite")) == 0
    assert (out / "notes.txt").read_text() == "mine" and len((out / "search.jsonl").read_text().splitlines()) == 1


def test_prompt_search_prints_the_defaults_it_searches_with():
    from test_cli_defaults import printed_defaults

    from minilm.cli.flags import show

    values = {f: show(v) for f, v in SearchConfig().__dict__.items()}
    printed = printed_defaults("prompt-search")
    assert printed.pop("out") == "runs/prompt-search-<task>"
    assert printed.pop("template").startswith("the task.json template, else")
    assert printed == values
