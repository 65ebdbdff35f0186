"""train.py sweep: compare on bases of several sizes, sweep.json / sweep.md / method_vs_size.png, the lines the picture
draws (tested on the data, not the pixels), and the one-line errors; nothing is written over a folder it did not write.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from cli_support import fails, train
from test_cli_compare import write_task

from minilm import ModelConfig, Transformer
from minilm.experiments.sweep import (
    drawn_by_sweep,
    folder_names,
    markdown,
    plot_sweep,
    row_kind,
    series,
    table,
    y_label,
)
from minilm.files import save_weights
from minilm.training.plot import SOFTWARE as PLOT_SOFTWARE
from minilm.training.run import load_run, write_run_files

FAST = ["--methods", "bitfit", "prompt", "--readouts", "verbalizer", "--quick", "--precision", "fp32"]
WIDTHS = (32, 48)


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def row(method: str, trainable: int, accuracy: list[float], readout: str = "verbalizer", **kind: str) -> dict:
    return {"method": method, "readout": readout, "trainable": trainable, "base": 0, "dev_accuracy": accuracy, **kind}


def synthetic_sweep() -> dict:
    """Three bases (given out of size order); rows with and without `kind`, two readouts of one tuned method."""
    bases = []
    for folder, parameters, shift in (("large", 4_000_000, 0.2), ("small", 40_000, 0.0), ("mid", 400_000, 0.1)):
        rows = [
            row("majority class", 0, [0.5], readout="-", kind="baseline"),
            row("bag-of-n-grams logistic regression", 87, [0.7], readout="-", kind="baseline"),
            row("zero-shot", 0, [0.5 + shift]),  # no kind: written before compare recorded one
            row("few-shot (1 per label)", 0, [0.5, 0.6 + shift], kind="prompted"),
            row("BitFit", 576, [0.6 + shift, 0.7 + shift]),
            row("BitFit", 578, [0.55 + shift], readout="head", kind="tuned"),
        ]
        bases.append({"base": f"runs/{folder}", "folder": folder, "parameters": parameters, "rows": rows})
    return {"task": "merry", "objective": "causal", "command": "", "settings": {"seeds": [0, 1]}, "bases": bases}


def write_base(folder: Path, tokenizer, width: int, causal: bool = True) -> Path:
    """A run folder of an untrained 1-layer base `width` wide: what the sweep reads before it compares anything."""
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, d_model=width, n_heads=2, n_layers=1, d_ff=2 * width, max_len=96, causal=causal
    )
    folder.mkdir(parents=True)
    write_run_files(folder, tokenizer, config, {})
    save_weights(Transformer(config, seed=0), folder / "best.safetensors")
    return folder


# ---- the lines of the picture and the table, from the data ----------------------------------------------------
def test_series_draw_tuned_rows_as_lines_prompted_rows_dashed_and_baselines_flat():
    lines = {s.label: s for s in series(synthetic_sweep())}
    assert set(lines) == {
        "majority class",
        "bag-of-n-grams logistic regression",
        "zero-shot",
        "few-shot (1 per label)",
        "BitFit / verbalizer",
        "BitFit / head",
    }
    assert {label: s.style for label, s in lines.items()} == {
        "majority class": "horizontal",
        "bag-of-n-grams logistic regression": "horizontal",
        "zero-shot": "dashed",
        "few-shot (1 per label)": "dashed",
        "BitFit / verbalizer": "line",
        "BitFit / head": "line",
    }
    bitfit = lines["BitFit / verbalizer"].points
    assert [x for x, _, _ in bitfit] == [40_000, 400_000, 4_000_000]  # sorted by size, not by the order given
    assert bitfit[0][1] == pytest.approx(0.65) and bitfit[0][2] == pytest.approx(0.0707107, rel=1e-5)  # mean, stdev
    assert lines["BitFit / head"].points[0][2] == 0.0  # one seed: no spread
    assert [m for _, m, _ in lines["zero-shot"].points] == pytest.approx([0.5, 0.6, 0.7])  # it moves with the base
    assert lines["bag-of-n-grams logistic regression"].level == pytest.approx(0.7)


def test_the_readout_is_named_only_when_the_sweep_has_several():
    sweep = synthetic_sweep()
    for base in sweep["bases"]:
        base["rows"] = [r for r in base["rows"] if r["readout"] != "head"]
    assert "BitFit" in {s.label for s in series(sweep) if s.style == "line"}


def test_a_row_without_a_kind_is_prompted_when_nothing_trains_else_tuned():
    assert row_kind(row("zero-shot", 0, [0.5])) == "prompted"
    assert row_kind(row("LoRA (r=8)", 1024, [0.5])) == "tuned"
    assert row_kind(row("majority class", 0, [0.5], kind="baseline")) == "baseline"
    with pytest.raises(ValueError, match="kind 'oracle'"):
        row_kind(row("x", 0, [0.5], kind="oracle"))


def test_the_table_has_a_row_per_method_and_a_column_per_base_with_its_parameter_count():
    sweep = synthetic_sweep()
    sweep["bases"][1]["rows"].pop()  # the small base has no head row
    lines = table(sweep).splitlines()
    assert lines[0] == "| method | readout | large (4,000,000) | small (40,000) | mid (400,000) |"
    assert "| BitFit | verbalizer | 0.850 ± 0.071 | 0.650 ± 0.071 | 0.750 ± 0.071 |" in lines
    assert "| BitFit | head | 0.750 | - | 0.650 |" in lines
    assert len(lines) == 2 + 6


def test_sweep_md_and_the_y_axis_say_mean_and_spread_over_several_seeds_and_one_run_each_over_one():
    sweep = synthetic_sweep()
    assert "mean ± standard deviation over the seeds 0, 1;" in markdown(sweep)
    sweep["settings"]["seeds"] = [3]
    caption = markdown(sweep)
    assert "one run each (seed 3, so no spread);" in caption and "standard deviation" not in caption
    assert y_label([0, 1]) == "dev accuracy (mean ± std over seeds)"
    assert y_label([3]) == "dev accuracy (one run each, seed 3)"


def test_bases_with_the_same_folder_name_get_subfolders_of_their_own():
    assert folder_names(["a/base", "b/base", "c/base/", "small"]) == ["base", "base-2", "base-3", "small"]
    assert folder_names(["x/sweep.json", "y/z"]) == ["sweep.json-2", "z"]  # never the sweep's own files


# ---- the picture ----------------------------------------------------------------------------------------------
def test_plot_sweep_draws_a_marked_png_and_replaces_no_picture_it_did_not_draw(tmp_path):
    pytest.importorskip("matplotlib")
    png = plot_sweep(synthetic_sweep(), tmp_path / "sizes.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and drawn_by_sweep(png)
    plot_sweep(synthetic_sweep(), png)  # its own picture: replaced
    other = tmp_path / "loss.png"
    other.write_bytes(b"\x89PNG\r\n\x1a\n" + PLOT_SOFTWARE.encode())  # drawn by `plot`, not by the sweep
    with pytest.raises(ValueError, match="not written by minilm as a sweep picture"):
        plot_sweep(synthetic_sweep(), other)
    assert other.read_bytes() == b"\x89PNG\r\n\x1a\n" + PLOT_SOFTWARE.encode()


def test_plot_sweep_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(ValueError, match=r"pip install -e \"\.\[plot\]\"") as e:
        plot_sweep(synthetic_sweep(), tmp_path / "sizes.png")
    assert len(str(e.value).splitlines()) == 1 and not (tmp_path / "sizes.png").exists()


# ---- one-line errors, before anything runs ---------------------------------------------------------------------
def test_fewer_than_two_bases_is_a_one_line_error(tmp_path, tokenizer, capsys):
    base, task = write_base(tmp_path / "b32", tokenizer, 32), write_task(tmp_path / "merry")
    out = tmp_path / "sweep"
    fails(capsys, ["sweep", "--bases", str(base), "--task", str(task), "--out", str(out)], "at least 2", "got 1")
    assert not out.exists()


def test_a_missing_base_folder_is_a_one_line_error(tmp_path, tokenizer, capsys):
    base, task = write_base(tmp_path / "b32", tokenizer, 32), write_task(tmp_path / "merry")
    out, missing = tmp_path / "sweep", tmp_path / "no-such-run"
    argv = ["sweep", "--bases", str(base), str(missing), "--task", str(task), "--out", str(out)]
    fails(capsys, argv, f"run directory {missing} does not exist")
    assert not out.exists()


def test_bases_of_two_objectives_are_refused_naming_which_is_which(tmp_path, tokenizer, capsys):
    small, large = write_base(tmp_path / "b32", tokenizer, 32), write_base(tmp_path / "b48", tokenizer, 48)
    masked = write_base(tmp_path / "m48", tokenizer, 48, causal=False)
    argv = ["sweep", "--bases", str(small), str(large), str(masked), "--task", str(write_task(tmp_path / "merry"))]
    fails(capsys, [*argv, "--out", str(tmp_path / "sweep")], f"{small}, {large} are causal and {masked} is masked")
    assert not (tmp_path / "sweep").exists()


def test_a_folder_minilm_did_not_write_is_never_the_sweeps_out(tmp_path, tokenizer, capsys):
    small, large = write_base(tmp_path / "b32", tokenizer, 32), write_base(tmp_path / "b48", tokenizer, 48)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    argv = ["sweep", "--bases", str(small), str(large), "--task", str(write_task(tmp_path / "merry"))]
    fails(capsys, [*argv, "--out", str(out), "--overwrite"], "holds no minilm output")
    assert snapshot(out) == {"notes.txt": hashlib.sha256(b"precious").hexdigest()}


def test_a_task_the_comparison_cannot_run_stops_the_sweep_before_it_writes_anything(tmp_path, tokenizer, capsys):
    small, large = write_base(tmp_path / "b32", tokenizer, 32), write_base(tmp_path / "b48", tokenizer, 48)
    task, out = write_task(tmp_path / "nowords", words=False), tmp_path / "sweep"
    argv = ["sweep", "--bases", str(small), str(large), "--task", str(task), "--out", str(out), *FAST]
    fails(capsys, argv, "no label words")
    assert not out.exists()


def test_plot_only_takes_no_other_flags_and_a_sweep_needs_bases_task_and_out(tmp_path, capsys):
    fails(capsys, ["sweep", "--plot-only", str(tmp_path), "--seeds", "1"], "--plot-only", "leave out --seeds")
    fails(capsys, ["sweep", "--task", str(tmp_path)], "--bases, --out needed")
    fails(capsys, ["sweep", "--plot-only", str(tmp_path)], f"{tmp_path / 'sweep.json'} does not exist")


# ---- a real sweep: two tiny bases of different widths -------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory, tokenizer) -> dict:
    """Two 1-layer bases, 32 and 48 wide (untrained: the sweep reads any run folder); `sweep --quick` over them with
    two methods."""
    runs = tmp_path_factory.mktemp("runs")
    bases = [write_base(runs / f"size-{width}", tokenizer, width) for width in WIDTHS]
    task, out = write_task(runs / "merry"), runs / "sweep-merry"
    argv = ["sweep", "--bases", *map(str, bases), "--task", str(task), "--out", str(out), *FAST]
    assert train.main(argv) == (0 if has_matplotlib() else 2)
    return {"bases": bases, "task": task, "out": out, "argv": argv}


@pytest.mark.slow
def test_the_sweep_writes_its_json_table_and_picture_with_each_bases_parameter_count(swept):
    out = swept["out"]
    sweep = json.loads((out / "sweep.json").read_text())
    counts = [load_run(b, "best", "cpu")[0].num_parameters() for b in swept["bases"]]
    assert counts[0] < counts[1]
    assert [b["parameters"] for b in sweep["bases"]] == counts
    assert [b["folder"] for b in sweep["bases"]] == ["size-32", "size-48"]
    for base, count in zip(sweep["bases"], counts):
        assert json.loads((out / base["folder"] / "results.json").read_text()) == base["rows"]
        assert all(r["base"] == count for r in base["rows"] if row_kind(r) != "baseline")
    md = (out / "sweep.md").read_text()
    assert f"| method | readout | size-32 ({counts[0]:,}) | size-48 ({counts[1]:,}) |" in md
    assert "| BitFit | verbalizer | " in md and "python train.py sweep --bases" in md
    pytest.importorskip("matplotlib")
    assert drawn_by_sweep(out / "method_vs_size.png")


@pytest.mark.slow
def test_every_row_of_the_sweep_is_a_line_over_every_base_drawn_as_its_kind(swept):
    sweep = json.loads((swept["out"] / "sweep.json").read_text())
    counts = [b["parameters"] for b in sweep["bases"]]
    lines = {s.label: s for s in series(sweep)}
    assert {"BitFit", "prompt tuning", "zero-shot"} <= set(lines)
    assert {r["method"] for r in sweep["bases"][0]["rows"]} == set(lines)
    for r in sweep["bases"][0]["rows"]:
        assert (
            lines[r["method"]].style == {"tuned": "line", "prompted": "dashed", "baseline": "horizontal"}[row_kind(r)]
        )
        assert [x for x, _, _ in lines[r["method"]].points] == counts
    assert lines["BitFit"].style == lines["prompt tuning"].style == "line" and lines["zero-shot"].style == "dashed"


@pytest.mark.slow
def test_a_second_sweep_into_the_same_out_needs_overwrite(swept, capsys):
    before = snapshot(swept["out"])
    fails(capsys, swept["argv"], "already holds a size sweep", "--overwrite")
    assert snapshot(swept["out"]) == before


@pytest.mark.slow
def test_overwrite_keeps_other_files_and_without_matplotlib_the_tables_come_first_then_plot_only_draws(
    swept, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "sweep"
    shutil.copytree(swept["out"], out)
    (out / "notes.txt").write_text("precious")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    argv = ["sweep", "--bases", *map(str, swept["bases"]), "--task", str(swept["task"]), "--out", str(out)]
    fails(capsys, [*argv, "--methods", "bitfit", *FAST[3:], "--overwrite"], "pip install", f"--plot-only {out}")
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["settings"]["methods"] == ["bitfit"] and "prompt tuning" not in (out / "sweep.md").read_text()
    assert (out / "notes.txt").read_text() == "precious" and not (out / "method_vs_size.png").exists()
    monkeypatch.undo()  # matplotlib back
    pytest.importorskip("matplotlib")
    assert train.main(["sweep", "--plot-only", str(out)]) == 0
    assert drawn_by_sweep(out / "method_vs_size.png")
