"""train.py instruct: instruction-tunes a causal run, saves a run directory, answers an unseen instruction; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import fails, pretrain_tiny, train



@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory, context=128, chars=20000)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("instructions")
    rows = [{"instruction": "Give the first word.", "input": "to be or not", "output": "to"},
            {"instruction": "Repeat the input.", "input": "the question", "output": "the question"}]
    for name in ("train.jsonl", "dev.jsonl"):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_instruct_trains_saves_a_run_and_answers_an_unseen_instruction(tmp_path, base_run, data_dir, capsys):
    out = tmp_path / "inst"
    argv = ["instruct", "--base", str(base_run), "--data", str(data_dir), "--out", str(out), "--max-steps", "3",
            "--batch-size", "2", "--instruction", "Which word comes first?", "--input", "whether tis nobler", "--precision", "fp32"]
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    assert "loss L_LM + 1 L_align" in printed and "dev exact match on 2 unseen inputs" in printed
    assert "unseen instruction: 'Which word comes first?'" in printed and "answer: '" in printed
    assert {"config.json", "tokenizer.json", "model.safetensors", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    assert train.main(["generate", "--from", str(out), "--prompt", "Instruction:", "--max-new-tokens", "4"]) == 0


def test_output_only_mode_is_announced(tmp_path, base_run, data_dir, capsys):
    argv = ["instruct", "--base", str(base_run), "--data", str(data_dir), "--out", str(tmp_path / "o"), "--max-steps", "1",
            "--batch-size", "2", "--output-only", "--eval-examples", "1"]
    assert train.main(argv) == 0
    assert "loss L_align," in capsys.readouterr().out


def test_instruct_errors_are_one_line(tmp_path, base_run, data_dir, capsys):
    fails(capsys, ["instruct", "--base", str(base_run), "--data", str(tmp_path)], "train.jsonl does not exist")
    fails(capsys, ["instruct", "--base", str(base_run), "--alpha", "-1"], "--alpha")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"instruction": "x"}\n', encoding="utf-8")
    (bad / "dev.jsonl").write_text('{"instruction": "x"}\n', encoding="utf-8")
    fails(capsys, ["instruct", "--base", str(base_run), "--data", str(bad), "--out", str(tmp_path / "b")], "train.jsonl line 1")
    done = tmp_path / "done"
    assert train.main(["instruct", "--base", str(base_run), "--data", str(data_dir), "--out", str(done), "--max-steps", "1",
                       "--batch-size", "2", "--eval-examples", "1"]) == 0
    capsys.readouterr()
    fails(capsys, ["instruct", "--base", str(base_run), "--data", str(data_dir), "--out", str(done)], "already holds a run")
