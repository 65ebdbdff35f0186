"""train.py end to end: pretrain, generate, fill-mask, eval, plot, DDP, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

ROOT = Path(__file__).resolve().parents[1]
from cli_support import fails, tiny_run, train  # noqa: E402  (train.py is a script at the repository root)

TINY = tiny_run()


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "shakespeare_head.txt"
    path.write_text((ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory, text_file) -> Path:
    out = tmp_path_factory.mktemp("runs") / "causal"
    assert train.main(["pretrain", "--data", str(text_file), "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory, text_file) -> Path:
    out = tmp_path_factory.mktemp("runs") / "masked"
    assert train.main(["pretrain", "--objective", "masked", "--data", str(text_file), "--out", str(out), *TINY]) == 0
    return out


# ---- the happy path -------------------------------------------------------------------------------------
def test_pretrain_writes_a_complete_run_directory(causal_run):
    names = {p.name for p in causal_run.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "best.safetensors",
        "tokenizer.json",
        "train_args.json",
        "metrics.jsonl",
        "train_state.pt",
    } <= names
    records = [json.loads(line) for line in (causal_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "val"] == [3, 6]
    assert {"loss", "lr", "tokens_per_s"} <= records[0].keys()
    assert json.loads((causal_run / "train_args.json").read_text())["max_steps"] == 6


def test_pretrain_prints_progress_evaluation_and_a_sample(tmp_path, text_file, capsys):
    assert train.main(["pretrain", "--data", str(text_file), "--out", str(tmp_path / "r"), *TINY]) == 0
    out = capsys.readouterr().out
    assert "step      3/6 | loss " in out and " tok/s | ETA " in out
    assert "eval step 3: val loss " in out and "bits/byte" in out
    assert "bits per byte on the whole validation split" in out
    assert "sample (python train.py generate" in out


def test_generate_continues_the_prompt_reproducibly(causal_run, capsys):
    argv = ["generate", "--from", str(causal_run), "--prompt", "ROMEO:", "--max-new-tokens", "10", "--seed", "3"]
    assert train.main(argv) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and len(first) > len("ROMEO:\n")
    assert train.main(argv) == 0
    assert capsys.readouterr().out == first


def test_eval_reports_loss_perplexity_and_bits_per_byte(causal_run, text_file, capsys):
    assert train.main(["eval", "--from", str(causal_run)]) == 0
    out = capsys.readouterr().out
    assert "the validation split" in out and "perplexity" in out and "bits per byte" in out
    assert train.main(["eval", "--from", str(causal_run), "--data", str(text_file)]) == 0
    assert "bits per byte" in capsys.readouterr().out


def test_masked_run_fills_masks_and_evaluates(masked_run, capsys):
    assert train.main(["fill-mask", "--from", str(masked_run), "--text", "To be, or not to [MASK]"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[MASK] 1: ") and out.count("'") >= 10  # five quoted candidates
    assert train.main(["eval", "--from", str(masked_run)]) == 0
    assert "masked-token loss" in capsys.readouterr().out


def test_plot_draws_a_png_or_says_how_to_get_matplotlib(causal_run, capsys):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fails(capsys, ["plot", "--from", str(causal_run)], "pip install", "[plot]")
    else:
        assert train.main(["plot", "--from", str(causal_run)]) == 0
        assert (causal_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_subcommand_has_help(capsys):
    for command in ("pretrain", "generate", "fill-mask", "eval", "plot"):
        with pytest.raises(SystemExit) as e:
            train.main([command, "--help"])
        assert e.value.code == 0
        assert "usage: train.py " + command in capsys.readouterr().out


def test_resume_continues_a_finished_run_to_more_steps(causal_run, tmp_path, text_file, capsys):
    out = tmp_path / "r"
    assert train.main(["pretrain", "--data", str(text_file), "--out", str(out), *TINY]) == 0
    assert train.main(["pretrain", "--out", str(out), "--resume", "--max-steps", "9"]) == 0
    assert "resumed from step 6" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 9


# ---- bad input: one line, exit code 2, nothing lost -----------------------------------------------------------
def test_missing_data_path(capsys, tmp_path):
    fails(
        capsys,
        ["pretrain", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "r"), *TINY],
        "nope.txt",
        "does not exist",
    )


def test_empty_corpus(capsys, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    fails(capsys, ["pretrain", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "r"), *TINY], "empty")


def test_corpus_too_small_for_one_batch(capsys, tmp_path):
    (tmp_path / "small.txt").write_text("To be, or not to be.\n" * 3)
    fails(
        capsys,
        ["pretrain", "--data", str(tmp_path / "small.txt"), "--out", str(tmp_path / "r"), *TINY],
        "fewer than one window of 32",
        "--context",
    )


def test_non_utf8_corpus_names_the_file_and_byte_offset(capsys, tmp_path, text_file):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(text_file.read_bytes()[:5000] + "caf\xe9\n".encode("latin-1"))
    fails(
        capsys, ["pretrain", "--data", str(bad), "--out", str(tmp_path / "r"), *TINY], "latin1.txt", "byte offset 5003"
    )


def test_non_utf8_bytes_are_skipped_with_a_warning_when_asked(capsys, tmp_path, text_file):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(text_file.read_bytes()[:20000] + "caf\xe9\n".encode("latin-1"))
    argv = ["pretrain", "--data", str(bad), "--out", str(tmp_path / "r"), "--skip-invalid-utf8", *TINY]
    assert train.main(argv) == 0
    assert "warning: " in capsys.readouterr().err


def test_from_a_directory_without_a_model(capsys, tmp_path):
    fails(capsys, ["generate", "--from", str(tmp_path), "--prompt", "Hi"], "holds no model")
    fails(capsys, ["eval", "--from", str(tmp_path / "missing")], "does not exist")


def test_truncated_weights_file(capsys, tmp_path, causal_run):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "train_args.json"):
        (broken / name).write_bytes((causal_run / name).read_bytes())
    (broken / "best.safetensors").write_bytes((causal_run / "best.safetensors").read_bytes()[:500])
    fails(capsys, ["generate", "--from", str(broken), "--prompt", "Hi"], "best.safetensors", "damaged")


def test_config_that_does_not_match_the_weights(capsys, tmp_path, causal_run):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("tokenizer.json", "best.safetensors"):
        (other / name).write_bytes((causal_run / name).read_bytes())
    config = json.loads((causal_run / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "d_model": 64, "d_ff": 256}))
    fails(capsys, ["generate", "--from", str(other), "--prompt", "Hi"], "does not fit the config")


def test_resume_with_a_different_model_size(capsys, causal_run):
    before = (causal_run / "train_state.pt").read_bytes()
    fails(capsys, ["pretrain", "--out", str(causal_run), "--resume", "--width", "64"], "width=32", "not 64")
    assert (causal_run / "train_state.pt").read_bytes() == before


def test_starting_over_an_existing_run_is_refused_and_loses_nothing(capsys, causal_run, text_file):
    before = (causal_run / "best.safetensors").read_bytes()
    fails(
        capsys,
        ["pretrain", "--data", str(text_file), "--out", str(causal_run), *TINY],
        "already holds a run",
        "--resume",
    )
    assert (causal_run / "best.safetensors").read_bytes() == before


@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_max_steps_must_be_a_positive_integer(capsys, value):
    fails(capsys, ["pretrain", "--max-steps", value], "--max-steps", value)


def test_prompt_longer_than_the_context(capsys, causal_run):
    fails(
        capsys,
        ["generate", "--from", str(causal_run), "--prompt", "To be, or not to be. " * 40],
        "context is 32",
        "shorten",
    )


def test_unknown_device(capsys):
    fails(capsys, ["pretrain", "--device", "tpu"], "--device", "tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_asked_for_but_not_available(capsys, causal_run):
    fails(
        capsys,
        ["generate", "--from", str(causal_run), "--prompt", "Hi", "--device", "cuda"],
        "no CUDA GPU",
        "--device cpu",
    )


def test_fill_mask_on_a_causal_model_and_generate_on_a_masked_one(capsys, causal_run, masked_run):
    fails(capsys, ["fill-mask", "--from", str(causal_run), "--text", "a [MASK]"], "causal", "--objective masked")
    fails(capsys, ["generate", "--from", str(masked_run), "--prompt", "Hi"], "cannot generate")


def test_the_command_line_prints_no_traceback_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "generate", "--from", str(tmp_path), "--prompt", "x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "holds no model" in result.stderr


# ---- distributed ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_torchrun_with_two_gloo_processes_matches_one_process(tmp_path, text_file):
    """DDP splits each global batch in two and averages gradients: the weights match a single process."""
    common = [
        "pretrain",
        "--data",
        str(text_file),
        *TINY,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--precision",
        "fp32",
        "--dropout",
        "0",
    ]  # dropout masks differ per process, bf16 rounding too
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *common, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "train.py"),
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "x 2 processes" in ddp.stdout and ddp.stdout.count("done: 6 steps") == 1  # only rank 0 reports
    one = safetensors.torch.load_file(tmp_path / "one" / "model.safetensors")
    two = safetensors.torch.load_file(tmp_path / "two" / "model.safetensors")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torchrun_stops_every_process_when_the_data_is_bad(tmp_path):
    """Rank 0 prepares the data; when that fails, the other process is told and exits instead of waiting forever."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "train.py"),
            "pretrain",
            "--data",
            str(tmp_path / "missing.txt"),
            *TINY,
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode != 0
    assert result.stderr.count("missing.txt does not exist") == 2  # both processes report the same one line


def test_resume_from_a_crafted_training_state_is_one_line_and_runs_nothing(capsys, tmp_path, text_file):
    from test_files import crafted_state

    out = tmp_path / "r"
    assert train.main(["pretrain", "--data", str(text_file), "--out", str(out), *TINY]) == 0
    crafted_state(out / "train_state.pt", tmp_path / "pwned")
    fails(capsys, ["pretrain", "--out", str(out), "--resume"], "is not a minilm training state", "was not loaded")
    assert not (tmp_path / "pwned").exists()
