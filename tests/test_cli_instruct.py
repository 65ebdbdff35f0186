"""train.py instruct: instruction-tunes a causal run, saves a run directory, answers an unseen instruction;
clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import fails, pretrain_tiny, train
from test_cli_tune import METHOD_FLAGS


def instruct(base: Path, data: Path, out: Path, *flags: str) -> list[str]:
    """The instruct command line for `base`, `data` and `out`, with `flags`."""
    return ["instruct", "--base", str(base), "--data", str(data), "--out", str(out), *flags]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory, context=128, chars=20000)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("instructions")
    rows = [
        {"instruction": "Give the first word.", "input": "to be or not", "output": "to"},
        {"instruction": "Repeat the input.", "input": "the question", "output": "the question"},
    ]
    for name in ("train.jsonl", "dev.jsonl"):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_instruct_trains_saves_a_run_and_answers_an_unseen_instruction(tmp_path, base_run, data_dir, capsys):
    out = tmp_path / "inst"
    argv = instruct(
        base_run,
        data_dir,
        out,
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--instruction",
        "Which word comes first?",
        "--input",
        "whether tis nobler",
        "--precision",
        "fp32",
    )
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    assert "loss L_LM + 1 L_align" in printed and "dev exact match on 2 unseen inputs" in printed
    assert "unseen instruction: 'Which word comes first?'" in printed and "answer: '" in printed
    assert {"config.json", "tokenizer.json", "model.safetensors", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    assert train.main(["generate", "--from", str(out), "--prompt", "Instruction:", "--max-new-tokens", "4"]) == 0


def test_output_only_mode_is_announced(tmp_path, base_run, data_dir, capsys):
    argv = instruct(
        base_run,
        data_dir,
        tmp_path / "o",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--output-only",
        "--eval-examples",
        "1",
    )
    assert train.main(argv) == 0
    assert "loss L_align," in capsys.readouterr().out


def test_instruct_errors_are_one_line(tmp_path, base_run, data_dir, capsys):
    fails(capsys, ["instruct", "--base", str(base_run), "--data", str(tmp_path)], "train.jsonl does not exist")
    fails(capsys, ["instruct", "--base", str(base_run), "--alpha", "-1"], "--alpha")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"instruction": "x"}\n', encoding="utf-8")
    (bad / "dev.jsonl").write_text('{"instruction": "x"}\n', encoding="utf-8")
    fails(
        capsys,
        instruct(base_run, bad, tmp_path / "b"),
        "train.jsonl line 1",
    )
    done = tmp_path / "done"
    assert (
        train.main(instruct(base_run, data_dir, done, "--max-steps", "1", "--batch-size", "2", "--eval-examples", "1"))
        == 0
    )
    capsys.readouterr()
    fails(
        capsys,
        instruct(base_run, data_dir, done),
        "already holds an instruction-tuned run",
    )


def test_instruct_resumes_where_it_stopped_and_keeps_the_best_weights(tmp_path, base_run, data_dir, capsys):
    out = tmp_path / "inst"
    common = instruct(
        base_run, data_dir, out, "--batch-size", "2", "--eval-every", "2", "--eval-examples", "2", "--precision", "fp32"
    )
    assert train.main([*common, "--max-steps", "2"]) == 0
    assert (out / "best.safetensors").is_file() and (out / "train_state.pt").is_file()
    capsys.readouterr()
    assert train.main([*common, "--max-steps", "4", "--resume"]) == 0
    assert "resumed from step 2" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "dev"] == [2, 4]  # evaluated at 2, then after resuming at 4


def test_instruct_stops_early_when_dev_exact_match_stops_improving(tmp_path, base_run, data_dir, capsys):
    argv = instruct(
        base_run,
        data_dir,
        tmp_path / "e",
        "--batch-size",
        "2",
        "--max-steps",
        "50",
        "--eval-every",
        "1",
        "--patience",
        "1",
        "--eval-examples",
        "2",
        "--lr",
        "1e-6",
    )
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert "early stop: dev exact match has not improved for 1 evaluations" in out
    dev = [
        json.loads(line)
        for line in (tmp_path / "e" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "dev"
    ]
    assert len(dev) < 50 and all("exact_match" in r for r in dev)


def test_instruct_answers_the_first_new_phrasing_instruction_by_default(tmp_path, base_run, data_dir, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("train.jsonl", "dev.jsonl"):
        (folder / name).write_text((data_dir / name).read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "dev_new_phrasing.jsonl").write_text(
        json.dumps({"instruction": "Say the opening word.", "input": "be quick", "output": "be"}) + "\n",
        encoding="utf-8",
    )
    argv = instruct(base_run, folder, tmp_path / "n", "--max-steps", "1", "--batch-size", "2", "--eval-examples", "1")
    assert train.main(argv) == 0
    assert "unseen instruction: 'Say the opening word.' input: 'be quick'" in capsys.readouterr().out


# ---- parameter-efficient instruction tuning -------------------------------------------------------------------
PEFT_FLAGS = {method: flags for method, flags in METHOD_FLAGS.items() if method != "full"}
"""Small settings for every method but full fine-tuning (whose instruct output is a run directory)."""


@pytest.mark.parametrize("method", PEFT_FLAGS)
def test_a_method_instruction_tuned_saves_only_its_tensors_and_generate_answers_with_them(
    method, tmp_path, base_run, data_dir, capsys
):
    """--method M writes a tuned folder (the base's hash, only the tuned tensors); generate --from it gives the same
    greedy answer as instruct printed, so the answer comes from the base plus the tuned parameters."""
    from minilm.files import load_tensors
    from minilm.model import parameter_count
    from minilm.model.config import ModelConfig

    out = tmp_path / method
    question = ["--instruction", "Which word comes first?", "--input", "whether tis nobler"]
    flags = ["--method", method, *PEFT_FLAGS[method], "--max-steps", "3", "--batch-size", "2", "--precision", "fp32"]
    assert train.main([*instruct(base_run, data_dir, out, *flags), *question]) == 0
    printed = capsys.readouterr().out
    answer = next(line for line in printed.splitlines() if line.startswith("answer: "))
    meta = json.loads((out / "tuned.json").read_text())
    assert meta["method"] == method and meta["readout"]["kind"] == "lm" and len(meta["base_weights_sha256"]) == 64
    # instructions have no label words and no prefix text: the inits that stand for them are stored as what they meant
    expected_init = {"prompt": "vocab", "prompt-encoder": "vocab", "prefix": "random"}.get(method)
    assert meta["hyperparameters"].get("init") == expected_init
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    saved = load_tensors(out / "tuned.safetensors", "tuned tensors")
    numbers = sum(t.numel() for t in saved.values())
    assert numbers == meta["counts"]["tuned"] < parameter_count(ModelConfig.load(base_run / "config.json"))
    assert train.main(["generate", "--from", str(out), *question, "--max-new-tokens", "32"]) == 0
    assert capsys.readouterr().out.strip() == eval(answer.removeprefix("answer: "))  # the repr instruct printed


def test_instruct_method_errors_are_one_line(tmp_path, base_run, data_dir, capsys):
    fails(capsys, instruct(base_run, data_dir, tmp_path / "a", "--method", "dora"), "--method", "'dora'")
    fails(
        capsys,
        instruct(base_run, data_dir, tmp_path / "b", "--method", "prompt", "--lora-rank", "2"),
        "--lora-rank is not a setting of --method prompt",
    )
    fails(
        capsys,
        instruct(base_run, data_dir, tmp_path / "c", "--method", "adapter", "--adapter-size", "0"),
        "--adapter-size",
        "positive integer",
    )
    tuned = tmp_path / "t"
    fast = ["--max-steps", "1", "--batch-size", "2", "--eval-examples", "1"]
    assert train.main(instruct(base_run, data_dir, tuned, "--method", "bitfit", *fast)) == 0
    capsys.readouterr()
    fails(capsys, instruct(base_run, data_dir, tuned, "--method", "bitfit", *fast), "--overwrite")
    fails(capsys, instruct(base_run, data_dir, tuned, *fast), "instruction-tuned method")  # full would replace it
    assert train.main(instruct(base_run, data_dir, tuned, "--method", "bitfit", *fast, "--overwrite")) == 0
    fails(capsys, ["generate", "--from", str(tuned), "--prompt", "x", "--input", "y"], "--input goes with")


def test_a_method_s_instruction_tuning_resumes_where_it_stopped(tmp_path, base_run, data_dir, capsys):
    out = tmp_path / "lora"
    common = instruct(
        base_run, data_dir, out, "--method", "lora", "--lora-rank", "2", "--batch-size", "2", "--eval-every", "2",
        "--eval-examples", "2", "--precision", "fp32",
    )  # fmt: skip
    assert train.main([*common, "--max-steps", "2"]) == 0
    assert (out / "train_state.pt").is_file() and (out / "last" / "tuned.json").is_file()
    capsys.readouterr()
    assert train.main([*common, "--max-steps", "4", "--resume"]) == 0
    assert "resumed from step 2" in capsys.readouterr().out
    assert json.loads((out / "last" / "tuned.json").read_text())["step"] == 4
