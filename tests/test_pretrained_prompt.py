"""Prompt pre-training (PPT): a soft prompt or prefix that starts where one tuned before ended, and a small labelled
budget (k examples per label) to measure it with.

The start is the source folder's saved tensor, bitwise, with its length (and a prefix's position offset, so at step 0
the new model computes what the source computes); the tuned model reloads with the source folder gone; a source from
another base or method, of another length, or a folder without a tuned model is one line and exit 2, before anything
is written; the budget draws k of every label, the same ones for the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import safetensors.torch
import torch
from cli_support import fails, fast_tune, pretrain_tiny, train
from conftest import tiny_config
from test_prefix_init import right_padded, train_steps

from minilm import Transformer
from minilm.files import load_tensors
from minilm.tuning import TunedModel, VerbalizerReadout, build_method
from minilm.tuning.methods import PrefixSettings, PromptEncoderSettings, PromptSettings
from minilm.tuning.pretrained import pretrained_start
from minilm.tuning.registry import method_spec
from minilm.tuning.tasks import Example
from minilm.tuning.trainer import per_label_sample

TEXT = "To be, or not to be"
SIZES = {"d_prime": 8, "hidden": 16}


def model_on(base: Transformer, method) -> TunedModel:
    return TunedModel(base, method, VerbalizerReadout.from_ids([[10], [11]]))


def saved_source(folder: Path, name: str, tokenizer, **settings) -> TunedModel:
    """A `name` tuned a few steps on the tiny base (seed 0) and saved in `folder`: the source of a pre-trained start."""
    base = Transformer(tiny_config(), seed=0)
    model = model_on(base, build_method(name, base, tokenizer, seed=1, **settings))
    train_steps(model)
    model.save(folder)
    return model


def started(name: str, settings, source: Path) -> TunedModel:
    """The method `name` on a fresh copy of the tiny base, started from the tuned folder `source`."""
    base = Transformer(tiny_config(), seed=0)
    settings, start = pretrained_start(name, dataclasses.replace(settings, init=f"pretrained:{source}"), base)
    return model_on(base, method_spec(name).method.for_base(base, settings, seed=2, start=start))


# ---- the start ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, settings", [("prompt", PromptSettings()), ("prompt-encoder", PromptEncoderSettings(hidden=16))]
)
def test_a_pretrained_soft_prompt_starts_bitwise_at_the_source_s_saved_prompt_with_its_length(
    tmp_path, tokenizer, name, settings
):
    saved_source(tmp_path / "source", name, tokenizer, prompt_len=5, init="random")
    saved = load_tensors(tmp_path / "source" / "tuned.safetensors")["method.P"]
    model = started(name, settings, tmp_path / "source")
    assert model.method.settings.prompt_len == 5 and settings.prompt_len == 20, "the source's length, not the default"
    assert torch.equal(model.method.soft_prompt(), saved)
    assert model.method.settings.init == f"pretrained:{(tmp_path / 'source').resolve()}"
    assert not torch.equal(saved, build_method(name, Transformer(tiny_config(), seed=0), prompt_len=5).soft_prompt())


@pytest.mark.parametrize("reparameterize", [True, False], ids=["mlp", "direct"])
def test_a_pretrained_prefix_starts_bitwise_at_the_source_s_folded_prefix_and_computes_what_the_source_computes(
    tmp_path, tokenizer, reparameterize
):
    source = saved_source(tmp_path / "source", "prefix", tokenizer, init=f"text:{TEXT}", **SIZES)
    n = len(tokenizer.encode(TEXT))
    assert source.method.position_offset == n
    saved = load_tensors(tmp_path / "source" / "tuned.safetensors")["method.prefix"]
    model = started("prefix", PrefixSettings(reparameterize=reparameterize, **SIZES), tmp_path / "source").eval()
    assert torch.equal(model.method.prefixes(), saved)
    assert model.method.settings.prefix_len == n and model.method.position_offset == n, "behind the source's text"
    ids, mask = right_padded(seed=5)
    expected, _ = source.eval().hidden_states(ids, mask)
    h, _ = model.hidden_states(ids, mask)
    torch.testing.assert_close(h, expected, rtol=0, atol=0)
    if reparameterize:  # W_2 = b_2 = 0 on top of the fixed start, as for a text start
        assert torch.equal(model.method.mlp.P_0, saved) and "method.mlp.P_0" not in model.trainable()


def test_a_pretrained_init_built_without_its_tensor_is_a_one_line_error():
    base = Transformer(tiny_config(), seed=0)
    for name in ("prompt", "prefix"):
        with pytest.raises(ValueError, match="a pre-trained start is read from the tuned folder"):
            build_method(name, base, init="pretrained:runs/x")


# ---- reloading without the source -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_a_tuned_model_started_from_a_pretrained_prompt_reloads_after_the_source_folder_is_deleted(
    tmp_path, tokenizer, name
):
    settings = {"init": f"text:{TEXT}", **SIZES} if name == "prefix" else {"prompt_len": 4}
    saved_source(tmp_path / "source", name, tokenizer, **settings)
    model = started(name, method_spec(name).settings(**({} if name == "prompt" else SIZES)), tmp_path / "source")
    train_steps(model, steps=2)
    model.eval()
    ids, mask = right_padded(seed=7)
    expected = model(ids, mask)
    model.save(tmp_path / "target")
    shutil.rmtree(tmp_path / "source")

    loaded = TunedModel.load(tmp_path / "target", Transformer(tiny_config(), seed=0)).eval()
    torch.testing.assert_close(loaded(ids, mask), expected, rtol=0, atol=0)
    assert loaded.method.hyperparameters() == model.method.hyperparameters()
    assert loaded.method.hyperparameters()["init"] == f"pretrained:{(tmp_path / 'source').resolve()}"
    resumed = TunedModel.load(tmp_path / "target", Transformer(tiny_config(), seed=0), for_training=True).eval()
    torch.testing.assert_close(resumed(ids, mask), expected, rtol=0, atol=0)
    if name == "prefix":
        assert not resumed.method.folded and torch.equal(resumed.method.mlp.P_0, model.method.mlp.P_0)


# ---- the labelled budget --------------------------------------------------------------------------------------------
def test_the_labelled_budget_draws_k_examples_of_every_label_and_the_same_ones_for_the_same_seed():
    examples = [Example(f"text {i}", label) for i, label in enumerate([0] * 10 + [1] * 5 + [2] * 7)]
    sample = per_label_sample(examples, 3, seed=0)
    assert Counter(e.label for e in sample) == {0: 3, 1: 3, 2: 3}
    assert [examples.index(e) for e in sample] == sorted(examples.index(e) for e in sample), "in the split's order"
    assert per_label_sample(examples, 3, seed=0) == sample
    assert per_label_sample(examples, 3, seed=1) != sample
    assert per_label_sample(examples, 0, seed=0) == examples
    with pytest.raises(ValueError, match="label 'b' has only 5 train examples; give 5 or fewer"):
        per_label_sample(examples, 6, seed=0, labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="label 'd' has only 0 train examples"):
        per_label_sample(examples, 1, seed=0, labels=["a", "b", "c", "d"])


# ---- the command line -----------------------------------------------------------------------------------------------
MERRY = ["O happy day, my heart is merry", "Sweet love doth fill my soul", "What a gentle lord"] * 2
SAD = ["Alas, my heart is heavy", "Foul murder stalks the night", "O wretched day"] * 2


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory, context=32, chars=30000)


@pytest.fixture(scope="module")
def other_base(tmp_path_factory, base_run) -> Path:
    """The same run with one weight changed: another base to a prompt tuned on `base_run`."""
    other = tmp_path_factory.mktemp("other") / "base"
    shutil.copytree(base_run, other)
    for path in other.glob("*.safetensors"):
        tensors = safetensors.torch.load_file(path)
        tensors["tok_emb.weight"][7, 0] += 1.0
        safetensors.torch.save_file(tensors, path)
    return other


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """6 train lines per label, 2 dev lines, label words " sad" / " merry"."""
    folder = tmp_path_factory.mktemp("tasks") / "merry"
    folder.mkdir()
    rows = "".join(f"{t}\t1\n" for t in MERRY) + "".join(f"{t}\t0\n" for t in SAD)
    (folder / "train.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    (folder / "dev.tsv").write_text(f"sentence\tlabel\n{MERRY[0]}\t1\n{SAD[0]}\t0\n", encoding="utf-8")
    (folder / "task.json").write_text(json.dumps({"labels": ["0", "1"], "label_words": {"0": " sad", "1": " merry"}}))
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory, base_run, task_dir) -> Path:
    """A 4-vector soft prompt tuned 3 steps on `base_run`."""
    out = tmp_path_factory.mktemp("source") / "prompt"
    argv = ["tune", "--base", str(base_run), "--task", str(task_dir), "--method", "prompt", "--out", str(out)]
    assert train.main([*argv, "--prompt-len", "4", *fast_tune(3)]) == 0
    return out


def tune_argv(base: Path, task: Path, out: Path, method: str = "prompt") -> list[str]:
    return ["tune", "--base", str(base), "--task", str(task), "--method", method, "--out", str(out), *fast_tune(2)]


def test_tune_from_a_pretrained_prompt_takes_its_length_and_the_result_classifies_without_the_source(
    tmp_path, base_run, task_dir, source, capsys
):
    copy = tmp_path / "source"
    shutil.copytree(source, copy)
    out = tmp_path / "target"
    assert train.main([*tune_argv(base_run, task_dir, out), "--init", f"pretrained:{copy}"]) == 0
    hp = json.loads((out / "tuned.json").read_text())["hyperparameters"]
    assert hp["prompt_len"] == 4 and hp["init"] == f"pretrained:{copy.resolve()}"
    shutil.rmtree(copy)
    capsys.readouterr()
    assert train.main(["classify", "--from", str(out), "--text", "O happy day"]) == 0
    assert "p(0)=" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case", ["missing", "no-tuned-model", "another-method", "another-base", "another-length", "out-is-the-source"]
)
def test_a_bad_pretrained_start_is_one_line_and_exit_2_before_anything_is_written(
    capsys, tmp_path, base_run, other_base, task_dir, source, case
):
    out = tmp_path / "target"
    argv, expected = {
        "missing": (
            [*tune_argv(base_run, task_dir, out), "--init", f"pretrained:{tmp_path / 'nowhere'}"],
            "no such folder",
        ),
        "no-tuned-model": (
            [*tune_argv(base_run, task_dir, out), "--init", f"pretrained:{base_run}"],
            "holds no tuned model",
        ),
        "another-method": (
            [*tune_argv(base_run, task_dir, out, "prefix"), "--prefix-init", f"pretrained:{source}"],
            "holds a 'prompt' tuned model, not a 'prefix' one",
        ),
        "another-base": (
            [*tune_argv(other_base, task_dir, out), "--init", f"pretrained:{source}"],
            "it was tuned on another base",
        ),
        "another-length": (
            [*tune_argv(base_run, task_dir, out), "--init", f"pretrained:{source}", "--prompt-len", "6"],
            "--prompt-len 6, but the soft prompt in",
        ),
        "out-is-the-source": (
            [*tune_argv(base_run, task_dir, source), "--init", f"pretrained:{source}", "--overwrite"],
            "is what this command reads (--init",
        ),
    }[case]
    before = {p: p.stat().st_mtime_ns for p in source.rglob("*")}
    fails(capsys, argv, expected)
    assert not out.exists()
    assert {p: p.stat().st_mtime_ns for p in source.rglob("*")} == before, "the source is left as it was"


def test_tune_with_a_labelled_budget_trains_on_k_per_label_and_records_it(tmp_path, base_run, task_dir, capsys):
    out = tmp_path / "budget"
    argv = ["tune", "--base", str(base_run), "--task", str(task_dir), "--method", "prompt", "--out", str(out)]
    flags = "--prompt-len 2 --train-per-label 2 --epochs 2 --batch-size 4 --eval-every 1 --warmup-steps 1 --device cpu"
    assert train.main([*argv, *flags.split()]) == 0
    assert "labelled budget: 2 train examples per label, drawn with seed 0: 4 of the 12" in capsys.readouterr().out
    saved = json.loads((out / "tune_args.json").read_text())
    assert saved["train_per_label"] == 2 and saved["max_steps"] == 2, "2 epochs of 4 examples in batches of 4"
    fails(capsys, [*argv[:-1], str(tmp_path / "too-many"), "--train-per-label", "7"], "label '0' has only 6")


def test_a_tune_from_a_pretrained_prompt_on_a_budget_resumes_from_another_folder_and_keeps_both(
    tmp_path, base_run, task_dir, source, capsys, monkeypatch
):
    out = tmp_path / "t"
    relative = os.path.relpath(source)
    argv = [*tune_argv(base_run, task_dir, out), "--init", f"pretrained:{relative}", "--train-per-label", "2"]
    assert train.main(argv) == 0
    monkeypatch.chdir(tmp_path)  # the source was named relative to the old folder: tune_args.json holds it absolute
    capsys.readouterr()
    assert train.main(["tune", "--out", str(out), "--resume", "--max-steps", "4"]) == 0
    assert "resumed from step 2" in capsys.readouterr().out
    assert json.loads((out / "tune_args.json").read_text())["init"] == f"pretrained:{source.resolve()}"
    resume = ["tune", "--out", str(out), "--resume", "--max-steps", "6", "--train-per-label", "3"]
    fails(capsys, resume, "was run with train_per_label=2")
