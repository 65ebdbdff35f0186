"""train.py compare --quick: every row of the comparison on a tiny base, the table and its files; clear errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from cli_support import fails, fast_tune, pretrain_tiny, train

from minilm.tokenizer import Tokenizer

MERRY = [
    "O happy day, my heart is merry",
    "Sweet love doth fill my soul with joy",
    "What a gentle and a gracious lord",
    "Good friends, rejoice, for peace is come",
]
SAD = [
    "Alas, my heart is heavy with grief",
    "Foul murder stalks the night",
    "O wretched day, curse on thee",
    "Sorrow and woe upon this house",
]
PREFIX_TEXT = " Merry or sad:"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory, context=96, chars=20000)


def write_task(folder: Path, words: bool = True) -> Path:
    folder.mkdir(parents=True)
    rows = "".join(f"{t}\t1\n" for t in MERRY) + "".join(f"{t}\t0\n" for t in SAD)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    if words:
        (folder / "task.json").write_text(
            json.dumps({"labels": ["0", "1"], "label_words": {"0": " sad", "1": " merry"}, "prefix_text": PREFIX_TEXT})
        )
    return folder


def test_quick_compare_writes_a_table_with_every_row(tmp_path, base_run, capsys):
    task = write_task(tmp_path / "merry")
    out = tmp_path / "cmp"
    assert (
        train.main(
            [
                "compare",
                "--base",
                str(base_run),
                "--task",
                str(task),
                "--out",
                str(out),
                "--quick",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    table = (out / "results.md").read_text()
    assert (
        "| method | readout | trainable (% of base) | dev accuracy | dev macro-F1 | test accuracy | s/step | peak MiB |"
        in table
    )
    names = [
        "zero-shot",
        "few-shot (1 per label)",
        "prompt search ([T] x3)",
        "prompt tuning",
        "prompt encoder",
        "prefix tuning",
        "first-k freezing (k=1)",
        "BitFit",
        "LoRA (r=8)",
        "adapters (m=32)",
        "full fine-tuning",
    ]
    for name in names:
        assert f"| {name} |" in table, name
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == (6 if importlib.util.find_spec("sklearn") else 5) + 8  # baselines, prompted, tuned
    tuned = [r for r in rows if r["step_s"] is not None]
    assert all(len(r["dev_accuracy"]) == 1 and len(r["test_accuracy"]) == 1 and r["peak_mib"] > 0 for r in tuned)
    assert {r["readout"] for r in tuned} == {"verbalizer"}  # the protocol's readout; --readouts adds the head
    search = next(r for r in rows if r["method"] == "prompt search ([T] x3)")
    assert search["kind"] == "prompted" and search["trainable"] == 0 and search["step_s"] is None
    assert len(search["dev_accuracy"]) == len(search["test_accuracy"]) == 1 and search["base"] == tuned[0]["base"]
    full = next(r for r in rows if r["method"] == "full fine-tuning")
    prompt = next(r for r in rows if r["method"] == "prompt tuning")
    prefix = next(r for r in rows if r["method"] == "prefix tuning")
    assert prompt["trainable"] == 20 * 32 and full["trainable"] == full["base"]  # 20 vectors of width 32
    # the prefix starts from the task's prefix_text: a key and a value per token of that text, in every layer
    n = len(Tokenizer.load(base_run / "tokenizer.json").encode(PREFIX_TEXT))
    layers = json.loads((base_run / "config.json").read_text())["n_layers"]
    assert n != 8 and prefix["trainable"] == layers * 2 * n * 32
    assert "| zero-shot |" in capsys.readouterr().out


def test_compare_needs_label_words(tmp_path, base_run, capsys):
    task = write_task(tmp_path / "nowords", words=False)
    fails(capsys, ["compare", "--base", str(base_run), "--task", str(task), "--quick"], "no label words")


def quick_compare(base_run: Path, task: Path, out: Path, *flags: str) -> list[str]:
    """compare --quick with one tuned method read out by its label words (the rows around it are all there)."""
    where = ["--base", str(base_run), "--task", str(task), "--out", str(out)]
    return [
        "compare",
        *where,
        "--quick",
        "--precision",
        "fp32",
        "--methods",
        "bitfit",
        "--readouts",
        "verbalizer",
        *flags,
    ]


@pytest.mark.slow
def test_quick_compare_lists_baselines_then_prompted_then_tuned_rows_in_order(tmp_path, base_run):
    pytest.importorskip("sklearn")
    out = tmp_path / "cmp"
    assert train.main(quick_compare(base_run, write_task(tmp_path / "merry"), out)) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["kind"]) for r in rows] == [
        ("majority class", "baseline"),
        ("bag-of-n-grams logistic regression", "baseline"),
        ("zero-shot", "prompted"),
        ("calibrated zero-shot", "prompted"),
        ("few-shot (1 per label)", "prompted"),
        ("prompt search ([T] x3)", "prompted"),
        ("BitFit", "tuned"),
    ]
    table = (out / "results.md").read_text().splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table if line.startswith("| ")][1:]
    assert [c[0] for c in cells] == [r["method"] for r in rows]
    ngrams = cells[1]
    assert ngrams[1] == "-" and ngrams[2] == f"{rows[1]['trainable']:,} (no base used)" and rows[1]["trainable"] > 0
    assert ngrams[3:6] == [f"{rows[1][k][0]:.3f}" for k in ("dev_accuracy", "dev_macro_f1", "test_accuracy")]
    assert ngrams[6:] == ["-", "-"]  # no training step, no base in memory


@pytest.mark.slow
def test_compare_without_scikit_learn_skips_the_bag_of_ngrams_row_with_one_line(
    tmp_path, base_run, capsys, monkeypatch
):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")] + ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)  # every import of scikit-learn now fails
    out = tmp_path / "cmp"
    assert train.main(quick_compare(base_run, write_task(tmp_path / "merry"), out)) == 0
    printed = capsys.readouterr().out
    note = "bag-of-words logistic regression: skipped, scikit-learn is not installed (pip install -e '.[baselines]')"
    assert note in printed.splitlines()
    methods = [r["method"] for r in json.loads((out / "results.json").read_text())]
    assert methods[:2] == ["majority class", "zero-shot"] and "bag-of-n-grams logistic regression" not in methods


def templates_used(monkeypatch) -> list[str]:
    """Every template compare's prompted rows score with and its tuned verbalizer readouts are built from."""
    import importlib

    from minilm.tuning.readouts import VerbalizerReadout

    compare_module = importlib.import_module("minilm.experiments.compare")
    seen: list[str] = []
    label_scores, from_template = compare_module.label_scores, VerbalizerReadout.from_template.__func__

    def scores_spy(logits_at, tokenizer, template, *args, **kwargs):
        seen.append(template.text)
        return label_scores(logits_at, tokenizer, template, *args, **kwargs)

    def readout_spy(cls, tokenizer, template, *args, **kwargs):
        seen.append(template)
        return from_template(cls, tokenizer, template, *args, **kwargs)

    monkeypatch.setattr(compare_module, "label_scores", scores_spy)
    monkeypatch.setattr(VerbalizerReadout, "from_template", classmethod(readout_spy))
    return seen


def with_template(folder: Path, template: object) -> Path:
    spec = json.loads((folder / "task.json").read_text())
    (folder / "task.json").write_text(json.dumps({**spec, "template": template}))
    return folder


@pytest.mark.slow
def test_compare_uses_the_task_json_template_unless_a_template_is_given(tmp_path, base_run, monkeypatch):
    task = with_template(write_task(tmp_path / "merry"), "Quoth the player: {text}. The mood is")
    seen = templates_used(monkeypatch)
    assert train.main(quick_compare(base_run, task, tmp_path / "a")) == 0
    assert seen and set(seen) == {"Quoth the player: {text}. The mood is"}
    seen.clear()
    assert train.main(quick_compare(base_run, task, tmp_path / "b", "--template", "{text} Forsooth, it was")) == 0
    assert seen and set(seen) == {"{text} Forsooth, it was"}


def test_tune_uses_the_task_json_template_unless_a_template_is_given(tmp_path, base_run):
    task = with_template(write_task(tmp_path / "merry"), "Quoth the player: {text}. The mood is")
    tune = ["tune", "--base", str(base_run), "--task", str(task), "--method", "bitfit", *fast_tune(1)]
    assert train.main([*tune, "--out", str(tmp_path / "a")]) == 0
    readout = json.loads((tmp_path / "a" / "tuned.json").read_text())["readout"]
    assert readout["kind"] == "verbalizer" and readout["template"] == "Quoth the player: {text}. The mood is"
    assert train.main([*tune, "--out", str(tmp_path / "b"), "--template", "{text} Forsooth, it was"]) == 0
    assert json.loads((tmp_path / "b" / "tuned.json").read_text())["readout"]["template"] == "{text} Forsooth, it was"


@pytest.mark.parametrize("template", ["the mood is", 7])
def test_a_task_json_template_without_the_text_field_is_a_one_line_error(tmp_path, base_run, capsys, template):
    task = with_template(write_task(tmp_path / "merry"), template)
    fails(capsys, quick_compare(base_run, task, tmp_path / "cmp"), "task.json", "'template'", "{text}")
    tune = ["tune", "--base", str(base_run), "--task", str(task), "--method", "bitfit", "--out", str(tmp_path / "t")]
    fails(capsys, tune, "task.json", "'template'", "{text}")


def test_compare_with_epochs_tunes_each_run_for_that_many_passes_over_train(tmp_path, base_run, capsys):
    task = write_task(tmp_path / "merry")
    where = ["--base", str(base_run), "--task", str(task), "--out", str(tmp_path / "cmp")]
    flags = "--seeds 0 --epochs 1.5 --batch-size 4 --shots 1 --methods bitfit --readouts verbalizer --precision fp32"
    assert train.main(["compare", *where, *flags.split(), "--patience", "0", "--eval-every", "1"]) == 0
    out = capsys.readouterr().out
    assert "1.5 epochs per tuned run" in out
    n_train = len(MERRY) + len(SAD)
    steps = -(-3 * n_train // 8)  # ceil(1.5 x n_train / 4): 3 for the 8 rows
    assert steps > 0 and "BitFit / verbalizer / seed 0: dev accuracy" in out and f", {steps} steps," in out
