"""train.py tune and classify end to end on a tiny base: every method, resume, reports, one clear line per bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import safetensors.torch
from cli_support import fails, fast_tune, pretrain_tiny, train

from minilm import ModelConfig
from minilm.cli import build_parser
from minilm.model import parameter_count
from minilm.tuning import METHODS, Adapters, BitFit, LayerFreezing, LoRA

FAST = fast_tune(3)
METHOD_FLAGS = {
    "prompt": ["--prompt-len", "4"],
    "prompt-encoder": ["--prompt-len", "4", "--encoder-hidden", "16"],
    "prefix": ["--prefix-len", "4", "--prefix-hidden", "16"],
    "freeze": ["--freeze-last", "1"],
    "bitfit": [],
    "lora": ["--lora-rank", "2"],
    "adapter": ["--adapter-size", "4"],
    "full": [],
}
MERRY = [
    "O happy day, my heart is merry",
    "Sweet love doth fill my soul with joy",
    "What a gentle and a gracious lord",
    "The sun doth smile upon our fair city",
    "Good friends, rejoice, for peace is come",
    "A fair and noble deed, well done",
    "My lady's kindness warms the hall",
    "Our hearts are glad and full of song",
]
SAD = [
    "Alas, my heart is heavy with grief",
    "Foul murder stalks the night",
    "O wretched day, curse on thee",
    "The villain hath betrayed us all",
    "Sorrow and woe upon this house",
    "A plague upon your bitter tongue",
    "Thy cruel words have slain me",
    "Dark and dreadful is this hour",
]
COUNT = re.compile(
    r"trainable: ([\d,]+) parameters \(([\d.e-]+)% of the base's ([\d,]+)\); saved for inference: ([\d,]+)"
)


def write_task(
    folder: Path, label_words: dict[str, str] | None = None, test: bool = False, dev_label: str | None = None
) -> Path:
    """train.tsv (12 lines) and dev.tsv (4) of Shakespeare-like sentences, 1 = merry, 0 = sad; task.json when words
    are given."""
    folder.mkdir(parents=True)

    def tsv(rows: list[tuple[str, str]]) -> str:
        return "sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows)

    (folder / "train.tsv").write_text(
        tsv([(t, "1") for t in MERRY[:6]] + [(t, "0") for t in SAD[:6]]), encoding="utf-8"
    )
    dev = [(t, "1") for t in MERRY[6:]] + [(t, dev_label or "0") for t in SAD[6:]]
    (folder / "dev.tsv").write_text(tsv(dev), encoding="utf-8")
    if test:
        (folder / "test.tsv").write_text(tsv([(MERRY[0], "1"), (SAD[0], "0")]), encoding="utf-8")
    if label_words:
        (folder / "task.json").write_text(
            json.dumps({"labels": ["0", "1"], "label_words": label_words}), encoding="utf-8"
        )
    return folder


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory, context=32, chars=30000)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """A task whose task.json gives label words: tune reads it out with a verbalizer."""
    return write_task(tmp_path_factory.mktemp("tasks") / "merry", label_words={"0": " sad", "1": " merry"})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, base_run, task_dir) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "prompt"
    assert (
        train.main(
            ["tune", "--base", str(base_run), "--method", "prompt", "--task", str(task_dir), "--out", str(out), *FAST]
        )
        == 0
    )
    return out


def tune(tmp_path, base_run, task, method: str, *flags: str, out: Path | None = None) -> list[str]:
    return [
        "tune",
        "--base",
        str(base_run),
        "--method",
        method,
        "--task",
        str(task),
        "--out",
        str(out or tmp_path / "t"),
        *flags,
    ]


def printed_counts(out: str) -> tuple[int, float, int, int]:
    """(trainable, percent, base, saved for inference) from tune's parameter line."""
    match = COUNT.search(out)
    assert match, out
    trainable, pct, base, saved = match.groups()
    return int(trainable.replace(",", "")), float(pct), int(base.replace(",", "")), int(saved.replace(",", ""))


def expected_counts(c: ModelConfig, method: str) -> tuple[int, int]:
    """(trainable, saved for inference) in closed form for METHOD_FLAGS' settings with a verbalizer (no readout
    parameters)."""
    n, d, L, h, d_prime = 4, c.d_model, c.n_layers, 16, 64
    if method == "prompt":
        return n * d, n * d
    if method == "prompt-encoder":  # U, W_1, b_1, W_2, b_2; folded to the n x d prompt
        return n * d + (d * h + h) + (h * d + d), n * d
    if method == "prefix":  # P', W_1, b_1, W_2, b_2; folded to L x 2 x n x d
        return n * d_prime + (d_prime * h + h) + (h * 2 * L * d + 2 * L * d), 2 * L * n * d
    count = {
        "freeze": LayerFreezing.expected_count(c, "last", 1),
        "bitfit": BitFit.expected_count(c),
        "lora": LoRA.expected_count(c, 2),
        "adapter": Adapters.expected_count(c, 4),
        "full": parameter_count(c),
    }[method]
    return count, count


# ---- the happy path -------------------------------------------------------------------------------------
def test_the_command_line_offers_exactly_the_library_methods():
    tune_parser = build_parser()._subparsers._group_actions[0].choices["tune"]
    method = next(a for a in tune_parser._actions if a.dest == "method")
    assert tuple(method.choices) == tuple(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_tune_writes_the_tuned_model_and_prints_the_closed_form_trainable_count(
    method, tmp_path, base_run, task_dir, capsys
):
    assert train.main(tune(tmp_path, base_run, task_dir, method, *METHOD_FLAGS[method], *FAST)) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "t" / "tuned.json").is_file() and (tmp_path / "t" / "tuned.safetensors").is_file()
    c = ModelConfig.load(base_run / "config.json")
    trainable, pct, base, saved = printed_counts(out)
    assert (trainable, saved) == expected_counts(c, method)
    assert base == parameter_count(c)
    assert pct == pytest.approx(100 * trainable / base, abs=0.006)
    assert f"method {method}" in out
    assert "eval step 3: dev loss" in out and "best on dev at step 3" in out


def test_prompt_tuning_with_a_verbalizer_trains_prompt_len_times_d_model(tmp_path, base_run, task_dir, capsys):
    assert train.main(tune(tmp_path, base_run, task_dir, "prompt", "--prompt-len", "5", *FAST)) == 0
    out = capsys.readouterr().out
    d = ModelConfig.load(base_run / "config.json").d_model
    trainable, _, _, saved = printed_counts(out)
    assert trainable == saved == 5 * d
    assert "readout: verbalizer, the LM scores 0 -> ' sad', 1 -> ' merry'" in out
    saved_tensors = safetensors.torch.load_file(tmp_path / "t" / "tuned.safetensors")
    assert sum(t.numel() for t in saved_tensors.values()) == 5 * d


def test_a_task_without_label_words_is_read_out_by_a_classification_head(tmp_path, base_run, capsys):
    task = write_task(tmp_path / "plain")
    assert train.main(tune(tmp_path, base_run, task, "prompt", "--prompt-len", "4", *FAST)) == 0
    out = capsys.readouterr().out
    d = ModelConfig.load(base_run / "config.json").d_model
    assert "readout: classification head" in out
    assert printed_counts(out)[0] == 4 * d + 2 * d + 2  # soft prompt + W_c (2 x d) + b_c
    assert json.loads((tmp_path / "t" / "tuned.json").read_text())["readout"]["kind"] == "head"


def test_label_words_flag_overrides_task_json(tmp_path, base_run, task_dir, capsys):
    argv = tune(tmp_path, base_run, task_dir, "bitfit", "--label-words", " grief, joy", *FAST)
    assert train.main(argv) == 0
    assert "0 -> ' grief', 1 -> ' joy'" in capsys.readouterr().out
    assert json.loads((tmp_path / "t" / "tune_args.json").read_text())["label_words"] == [" grief", " joy"]


def test_tuned_json_records_the_base_run_the_task_and_the_arguments(tuned, base_run, task_dir):
    meta = json.loads((tuned / "tuned.json").read_text())
    assert meta["base_run"] == str(base_run.resolve()) and Path(meta["base_run"]).is_absolute()
    assert meta["task"] == str(task_dir.resolve())
    assert meta["base_weights"] == "best"
    args = meta["tune_args"]
    assert args["method"] == "prompt" and args["max_steps"] == 3 and args["lr"] == 3e-2  # DEFAULT_LR["prompt"]
    assert args["readout"] == "verbalizer" and args["label_words"] == [" sad", " merry"]


def test_tune_prints_the_label_balance_and_leaves_the_test_split_alone(tmp_path, base_run, capsys):
    task = write_task(tmp_path / "with_test", label_words={"0": " sad", "1": " merry"}, test=True)
    assert train.main(tune(tmp_path, base_run, task, "lora", "--lora-rank", "1", *FAST)) == 0
    out = capsys.readouterr().out
    assert "train 12 (0: 6, 1: 6) | dev 4 (0: 2, 1: 2) | test 2, not evaluated while tuning" in out
    assert "the test split was not evaluated" in out and f"--task {task.resolve()} --split test" in out
    assert not (tmp_path / "t" / "eval-test.json").exists()


def test_classify_text_prints_the_label_and_class_probabilities(tuned, capsys):
    assert train.main(["classify", "--from", str(tuned), "--text", "O happy day", "--text", "Alas, woe"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, ("O happy day", "Alas, woe")):
        label, probs, shown = line.split(" | ")
        assert label in ("0", "1") and shown == json.dumps(text)
        p = [float(x) for x in re.findall(r"p\(\d\)=([\d.]+)", probs)]
        assert len(p) == 2 and sum(p) == pytest.approx(1, abs=2e-3) and p[int(label)] == max(p)


def test_generate_from_a_tuned_folder_uses_its_soft_prompt(tuned, base_run, capsys):
    argv = ["--prompt", "ROMEO:", "--max-new-tokens", "12", "--temperature", "0"]
    assert train.main(["generate", "--from", str(tuned), *argv]) == 0
    with_prompt = capsys.readouterr().out
    assert train.main(["generate", "--from", str(base_run), *argv]) == 0
    plain = capsys.readouterr().out
    assert with_prompt.startswith("ROMEO:") and plain.startswith("ROMEO:")
    assert with_prompt != plain, "the soft prompt did not change the continuation"


def test_classify_a_split_writes_a_report_with_accuracy_macro_f1_and_confusion(tuned, task_dir, tmp_path, capsys):
    assert train.main(["classify", "--from", str(tuned), "--task", str(task_dir), "--split", "dev"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tuned / "eval-dev.json").read_text())
    assert {"accuracy", "macro_f1", "per_class", "confusion", "labels", "n"} <= report.keys()
    assert report["n"] == 4 and sum(map(sum, report["confusion"])) == 4 and report["split"] == "dev"
    assert f"accuracy {report['accuracy']:.4f} | macro-F1 {report['macro_f1']:.4f}" in out
    assert "confusion matrix (rows: gold label, columns: predicted)" in out and "precision  recall" in out
    dev = json.loads((tuned / "tuned.json").read_text())["dev"]
    assert report["accuracy"] == pytest.approx(dev["accuracy"]) and report["macro_f1"] == pytest.approx(dev["macro_f1"])
    assert (
        train.main(["classify", "--from", str(tuned), "--task", str(task_dir), "--report", str(tmp_path / "r.json")])
        == 0
    )
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"] == report["accuracy"]


def test_resume_after_an_interrupted_tune_continues_the_steps(tmp_path, base_run, task_dir, capsys):
    out = tmp_path / "t"
    flags = ["--eval-every", "2", "--batch-size", "4", "--log-every", "1", "--device", "cpu"]
    assert (
        train.main(
            tune(
                tmp_path,
                base_run,
                task_dir,
                "prefix",
                "--prefix-len",
                "2",
                "--prefix-hidden",
                "8",
                "--max-steps",
                "2",
                *flags,
            )
        )
        == 0
    )
    capsys.readouterr()
    assert train.main(["tune", "--out", str(out), "--resume", "--max-steps", "4"]) == 0
    assert "resumed from step 2" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2, 3, 4, 4]  # train 1, train 2, dev 2, then the resumed steps
    assert json.loads((out / "last" / "tuned.json").read_text())["step"] == 4


def test_tune_refuses_to_start_over_an_existing_tune_and_loses_nothing(tuned, base_run, task_dir, capsys):
    before = {name: (tuned / name).read_bytes() for name in ("tuned.json", "tuned.safetensors", "train_state.pt")}
    fails(
        capsys,
        tune(None, base_run, task_dir, "prompt", *FAST, out=tuned),
        "already holds a tuned model",
        "--resume",
        "--overwrite",
    )
    assert {name: (tuned / name).read_bytes() for name in before} == before


def test_overwrite_starts_the_tune_afresh(tmp_path, base_run, task_dir, capsys):
    argv = tune(tmp_path, base_run, task_dir, "bitfit", *FAST)
    assert train.main(argv) == 0
    assert train.main([*argv, "--overwrite", "--max-steps", "2", "--eval-every", "2"]) == 0
    assert "resumed" not in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2]


def test_every_tuning_subcommand_has_help(capsys):
    for command in ("tune", "classify"):
        with pytest.raises(SystemExit) as e:
            train.main([command, "--help"])
        assert e.value.code == 0
        assert "usage: train.py " + command in capsys.readouterr().out


# ---- bad input: one line, exit code 2 ----------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-3"])
def test_prompt_length_must_be_positive(capsys, tmp_path, base_run, task_dir, value):
    fails(capsys, tune(tmp_path, base_run, task_dir, "prompt", "--prompt-len", value), "--prompt-len", value)


def test_prompt_too_long_for_the_base_context(capsys, tmp_path, base_run):
    task = write_task(tmp_path / "plain")  # a head on a causal base adds no tokens: 31 of the 32 positions are free
    fails(
        capsys,
        tune(tmp_path, base_run, task, "prompt", "--prompt-len", "32"),
        "--prompt-len 32 leaves no room for text",
        "max_len) is 32 tokens, the soft prompt takes 32",
        "--prompt-len 31 or less",
    )
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("recipe", ["--freeze-first", "--freeze-last"])
def test_freezing_more_layers_than_the_base_has(capsys, tmp_path, base_run, task_dir, recipe):
    fails(
        capsys,
        tune(tmp_path, base_run, task_dir, "freeze", recipe, "2"),
        f"{recipe} 2",
        "the base has 1 layer(s)",
        "0..1",
    )


def test_lora_rank_zero(capsys, tmp_path, base_run, task_dir):
    fails(capsys, tune(tmp_path, base_run, task_dir, "lora", "--lora-rank", "0"), "--lora-rank", "positive integer")


def test_lora_rank_larger_than_d_model(capsys, tmp_path, base_run, task_dir):
    fails(
        capsys, tune(tmp_path, base_run, task_dir, "lora", "--lora-rank", "33"), "--lora-rank 33", "d_model=32", "1..32"
    )


def test_unknown_method(capsys, tmp_path, base_run, task_dir):
    fails(capsys, tune(tmp_path, base_run, task_dir, "dora"), "--method", "'dora'", "prompt-encoder", "adapter")


def test_a_task_file_with_an_unknown_label_names_the_file_and_line(capsys, tmp_path, base_run):
    task = write_task(tmp_path / "bad", dev_label="2")
    fails(capsys, tune(tmp_path, base_run, task, "bitfit"), "dev.tsv line 4", "label '2'")


def test_freeze_without_a_recipe_trains_the_first_block_and_the_embeddings(tmp_path, base_run, task_dir, capsys):
    assert train.main(tune(tmp_path, base_run, task_dir, "freeze", *FAST)) == 0
    c = ModelConfig.load(base_run / "config.json")
    assert "method freeze (recipe=first, k=1)" in capsys.readouterr().out
    meta = json.loads((tmp_path / "t" / "tuned.json").read_text())
    assert meta["hyperparameters"] == {"recipe": "first", "k": 1}
    assert meta["counts"]["trainable"] == LayerFreezing.expected_count(c, "first", 1)


def test_freeze_first_and_last_together(capsys, tmp_path, base_run, task_dir):
    fails(
        capsys,
        tune(tmp_path, base_run, task_dir, "freeze", "--freeze-first", "1", "--freeze-last", "1"),
        "--freeze-last",
        "not allowed with",
        "--freeze-first",
    )


def test_a_setting_of_another_method(capsys, tmp_path, base_run, task_dir):
    fails(
        capsys,
        tune(tmp_path, base_run, task_dir, "prompt", "--lora-rank", "4"),
        "--lora-rank does not apply to --method prompt",
    )


def test_label_words_that_do_not_match_the_labels(capsys, tmp_path, base_run, task_dir):
    fails(
        capsys,
        tune(tmp_path, base_run, task_dir, "prompt", "--label-words", " sad, merry, wroth"),
        "3 label words",
        "for 2 labels",
        "one word per label",
    )


def test_a_verbalizer_without_label_words(capsys, tmp_path, base_run):
    task = write_task(tmp_path / "plain")
    fails(
        capsys,
        tune(tmp_path, base_run, task, "prompt", "--readout", "verbalizer"),
        "needs a word per label",
        "--label-words",
    )


def test_tune_without_a_base(capsys, tmp_path, task_dir):
    fails(
        capsys,
        ["tune", "--method", "prompt", "--task", str(task_dir), "--out", str(tmp_path / "t")],
        "required",
        "--base",
    )
    fails(capsys, tune(tmp_path, tmp_path / "nothing", task_dir, "prompt"), "nothing does not exist")


def test_resume_with_other_method_settings_is_refused(capsys, tuned):
    before = (tuned / "train_state.pt").read_bytes()
    fails(capsys, ["tune", "--out", str(tuned), "--resume", "--prompt-len", "6"], "was run with prompt_len=20", "not 6")
    fails(capsys, ["tune", "--out", str(tuned), "--resume", "--method", "lora"], "was run with method='prompt'")
    assert (tuned / "train_state.pt").read_bytes() == before


def test_classify_on_a_base_with_other_weights(capsys, tmp_path, tuned, base_run):
    other = tmp_path / "other_base"
    shutil.copytree(base_run, other)
    for name in ("best.safetensors", "model.safetensors"):
        tensors = safetensors.torch.load_file(other / name)
        tensors["tok_emb.weight"][7, 0] += 1e-3
        safetensors.torch.save_file(tensors, other / name)
    fails(
        capsys,
        ["classify", "--from", str(tuned), "--base", str(other), "--text", "O happy day"],
        "tuned from a different base model",
        "SHA-256",
    )


def test_classify_from_a_missing_tuned_folder(capsys, tmp_path):
    fails(
        capsys,
        ["classify", "--from", str(tmp_path / "missing"), "--text", "hi"],
        "missing does not exist",
        "train.py tune",
    )
    fails(capsys, ["classify", "--from", str(tmp_path), "--text", "hi"], "tuned.json is missing")


def test_classify_a_split_the_task_does_not_have(capsys, tuned, task_dir):
    fails(
        capsys,
        ["classify", "--from", str(tuned), "--task", str(task_dir), "--split", "test"],
        "no test split",
        "test.tsv",
    )


def test_tune_with_a_template_trains_through_the_label_words_at_its_slot(tmp_path, base_run, task_dir, capsys):
    out = tmp_path / "t"
    argv = tune(
        tmp_path, base_run, task_dir, "prompt", "--prompt-len", "2", "--template", "{text} So the mood is", *FAST
    )
    assert train.main(argv) == 0
    meta = json.loads((out / "tuned.json").read_text())
    assert meta["readout"]["kind"] == "verbalizer" and meta["readout"]["template"] == "{text} So the mood is"
    capsys.readouterr()
    assert train.main(["classify", "--from", str(out), "--text", "O happy day"]) == 0
    assert "p(0)=" in capsys.readouterr().out


def test_a_template_with_a_head_or_without_the_text_field(capsys, tmp_path, base_run, task_dir):
    fails(
        capsys,
        tune(tmp_path, base_run, task_dir, "bitfit", "--readout", "head", "--template", "{text} is"),
        "--template",
    )
    fails(capsys, tune(tmp_path, base_run, task_dir, "bitfit", "--template", "no field here"), "no field")


def test_tune_with_a_time_budget_records_the_steps_it_decided_for_resume_and_classify(
    tmp_path, base_run, task_dir, capsys
):
    out = tmp_path / "budget"
    flags = ["--batch-size", "4", "--device", "cpu", "--time-budget", "2s"]
    assert train.main(tune(tmp_path, base_run, task_dir, "bitfit", *flags, out=out)) == 0
    printed = capsys.readouterr().out
    args = json.loads((out / "tune_args.json").read_text(encoding="utf-8"))
    assert args["time_budget"] == "2s" and isinstance(args["max_steps"], int) and args["max_steps"] >= 1
    assert "steps that fit in 2s" in printed and f"{args['max_steps']:,} steps fit" in printed
    assert json.loads((out / "tuned.json").read_text(encoding="utf-8"))["tune_args"]["max_steps"] == args["max_steps"]
    fails(capsys, ["tune", "--out", str(out), "--resume", "--time-budget", "5s"], "a resumed run continues")


def test_a_learning_rate_given_to_tune_is_read_as_a_number_and_checked(capsys, tmp_path):
    # --lr defaults to None (the method's own rate), and must still parse as a number like every other rate
    args = build_parser().parse_args(["tune", "--base", "b", "--task", "t", "--method", "prompt", "--lr", "0.3"])
    assert args.lr == 0.3 and isinstance(args.lr, float)
    fails(capsys, ["tune", "--base", "b", "--task", "t", "--method", "prompt", "--lr", "fast"], "--lr", "'fast'")
    fails(capsys, ["tune", "--base", "b", "--task", "t", "--method", "prompt", "--lr", "-1"], "--lr", "> 0")


def test_epochs_size_a_tune_by_passes_over_the_train_split(tmp_path, base_run, task_dir, capsys):
    from minilm.tuning.trainer import steps_for_epochs

    assert steps_for_epochs(2.5, 12, 4) == 8 and steps_for_epochs(0.01, 12, 4) == 1  # ceil(2.5 x 12 / 4), at least 1
    flags = ["--epochs", "1.5", "--batch-size", "4", "--eval-every", "5", "--device", "cpu"]
    assert train.main(tune(tmp_path, base_run, task_dir, "bitfit", *flags)) == 0
    assert "steps of 4 examples (1.5 epochs)" in capsys.readouterr().out
    args = json.loads((tmp_path / "t" / "tune_args.json").read_text())
    assert args["epochs"] == 1.5 and args["max_steps"] == 5 and args["time_budget"] is None  # ceil(1.5 x 12 / 4)
    fails(capsys, tune(tmp_path, base_run, task_dir, "bitfit", "--epochs", "1", "--max-steps", "3"), "one of them")


def test_a_tune_without_a_length_runs_the_protocol_s_three_epochs_and_prompts_keep_a_constant_rate(
    tmp_path, base_run, task_dir, capsys
):
    """docs/tuning.md's protocol: 3 epochs by default; prompt tuning's rate stays at lr (min_lr None), others decay."""
    from minilm.tuning.trainer import TuneConfig

    assert TuneConfig.epochs == 3.0 and TuneConfig.max_steps is None
    assert TuneConfig().for_task(12).max_steps == 3  # ceil(3 x 12 / 16): a TuneTrainer sizes the run the same way
    assert (
        TuneConfig(max_steps=5).for_task(12).max_steps == 5
        and TuneConfig(time_budget="1m").for_task(12).max_steps is None
    )
    flags = ["--batch-size", "4", "--eval-every", "5", "--device", "cpu"]
    for method, min_lr in (("prompt", None), ("bitfit", 0.0)):
        out = tmp_path / method
        assert (
            train.main(tune(tmp_path, base_run, task_dir, method, *flags, *METHOD_FLAGS.get(method, []), out=out)) == 0
        )
        args = json.loads((out / "tune_args.json").read_text())
        assert args["epochs"] == 3.0 and args["max_steps"] == 9  # ceil(3 x 12 / 4)
        assert args["min_lr"] == min_lr
    assert "steps of 4 examples (3 epochs)" in capsys.readouterr().out
    given = tmp_path / "given"
    assert (
        train.main(
            tune(tmp_path, base_run, task_dir, "prompt", *flags, "--prompt-len", "4", "--min-lr", "0.001", out=given)
        )
        == 0
    )
    assert json.loads((given / "tune_args.json").read_text())["min_lr"] == 0.001
