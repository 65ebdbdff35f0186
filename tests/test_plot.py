"""`train.py plot`: a run's loss and learning rate, and a tuned folder's dev accuracy and macro-F1, in one PNG."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_support import fails, fast_tune, pretrain_tiny, train

from minilm.training.optimizer import learning_rate
from minilm.training.plot import SOFTWARE, drawn_by_plot, panels, plot_run


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory)


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, base_run) -> Path:
    task = tmp_path_factory.mktemp("task") / "mood"
    task.mkdir()
    rows = "".join(f"{t}\t1\n" for t in ("O happy day", "Sweet joy")) + "".join(
        f"{t}\t0\n" for t in ("Alas, my grief", "Foul murder")
    )
    for split in ("train", "dev"):
        (task / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    out = tmp_path_factory.mktemp("tuned") / "prompt"
    argv = ["tune", "--base", str(base_run), "--method", "prompt", "--task", str(task), "--out", str(out)]
    assert train.main([*argv, "--prompt-len", "2", *fast_tune(3), "--eval-every", "1"]) == 0
    return out


def test_a_pretraining_run_is_drawn_as_a_loss_panel_and_its_learning_rate_schedule(base_run):
    drawn = panels(records(base_run))
    assert list(drawn) == ["loss (nats)", "learning rate"]
    assert [label for label, _, _ in drawn["loss (nats)"]] == ["train loss", "val loss"]
    [(_, _, lr)] = drawn["learning rate"]
    settings = json.loads((base_run / "train_args.json").read_text())
    config = SimpleNamespace(**{k: settings[k] for k in ("lr", "min_lr", "warmup_steps", "max_steps")})
    assert lr == [(step, pytest.approx(learning_rate(step - 1, config))) for step, _ in lr], "eta(t) of each step"


def test_a_tuned_folder_adds_a_panel_of_dev_accuracy_and_macro_f1(tuned_run):
    drawn = panels(records(tuned_run))
    assert list(drawn) == ["loss (nats)", "learning rate", "dev metrics"]
    curves = {label: values for label, _, values in drawn["dev metrics"]}
    assert list(curves) == ["dev accuracy", "dev macro-F1"] and [s for s, _ in curves["dev accuracy"]] == [1, 2, 3]
    best = json.loads((tuned_run / "tuned.json").read_text())
    step = best["step"]
    assert dict(curves["dev accuracy"])[step] == best["dev"]["accuracy"], "the best step's accuracy, as tuned.json"
    assert dict(curves["dev macro-F1"])[step] == best["dev"]["macro_f1"]


def test_plot_draws_one_marked_png_with_a_panel_more_for_a_tuned_folder(base_run, tuned_run, tmp_path):
    pytest.importorskip("matplotlib")
    two, three = plot_run(base_run, tmp_path / "base.png"), plot_run(tuned_run, tmp_path / "tuned.png")
    assert drawn_by_plot(two) and drawn_by_plot(three) and SOFTWARE.encode() in three.read_bytes()
    assert png_size(three)[1] > png_size(two)[1] * 1.3, "three panels stand taller than two"
    assert plot_run(tuned_run) == tuned_run / "loss.png" and drawn_by_plot(tuned_run / "loss.png")
    assert plot_run(tuned_run) == tuned_run / "loss.png", "its own picture is replaced"


def test_a_run_with_nothing_to_draw_is_one_line(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train", "tokens": 10}\n', encoding="utf-8")
    fails(capsys, ["plot", "--from", str(tmp_path)], "holds no loss, learning rate or dev metrics to draw")
    assert not (tmp_path / "loss.png").exists()
