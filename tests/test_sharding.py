"""FSDP2 (`train.py pretrain --fsdp`, minilm/training/sharding.py) with 2 gloo processes on the CPU.

One torchrun launch (tests/fsdp_worker.py) trains a run whole and the same run interrupted at step 4 and resumed;
the tests compare them with each other and with one plain process.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from cli_support import tiny_run

import train
from minilm import ModelConfig, Transformer
from minilm.files import load_state
from minilm.training.sharding import SafeReader

ROOT = Path(__file__).resolve().parents[1]
# no dropout (each process draws its own masks); two micro-batches, so each step reduces the gradients once, after the
# second (the first runs with gradient sync off)
FLAGS = [*tiny_run(), "--layers", "2", "--grad-accum", "2", "--precision", "fp32", "--dropout", "0"]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """OUT/whole, OUT/resumed (interrupted at step 4, continued) and OUT/masked: 6-step runs on 2 processes with --fsdp;
    OUT/one: the causal run in one process."""
    out = tmp_path_factory.mktemp("fsdp")
    text = out / "head.txt"
    text.write_text((ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    common = ["--data", str(text), *FLAGS, "--cache-dir", str(out / "cache")]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + [str(ROOT / "tests" / "fsdp_worker.py"), str(out), "4", *common],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("exit codes [0, 130, 0, 0]") == 2  # both processes: whole, interrupted, resumed, masked
    assert "FSDP2: parameters, gradients and optimizer state sharded" in result.stdout
    share = re.search(r"FSDP2: rank 0 holds ([\d,]+) of the ([\d,]+) parameter numbers", result.stdout)
    held, total = (int(n.replace(",", "")) for n in share.groups())  # each tensor's rows split in two (one odd row)
    assert total == Transformer(ModelConfig.load(out / "whole" / "config.json")).num_parameters()
    assert total / 2 <= held <= total / 2 + 1000
    assert train.main(["pretrain", *common, "--out", str(out / "one")]) == 0  # the causal run in one plain process
    return out


def weights(run: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(run / name)


def test_fsdp_on_two_processes_gives_the_weights_of_one_process(sharded):
    """Sharding changes where the numbers live, not the step: mean gradient of the global batch, then AdamW."""
    one, two = weights(sharded / "one"), weights(sharded / "whole")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5)
    initial = Transformer(ModelConfig.load(sharded / "whole" / "config.json"), seed=0).state_dict()
    # every tensor trained, so the equality means something; but W_K's bias, whose gradient is 0: it adds q . b_K to
    # every score of query q's row, which the softmax does not see
    moved = {k for k in two if (two[k] - initial[k]).abs().max() > 1e-4}
    assert moved == {k for k in two if not k.endswith("attn.W_k.bias")}


def test_the_masked_objective_trains_sharded(sharded):
    """The masked loss calls the model's `hidden_states`, not its forward: FSDP gathers the weights for it too.

    (It is not compared with one process: each process averages the loss over the masked tokens of its own slice,
    and slices mask different numbers of tokens, so the mean of the two means is not the mean over the batch. DDP
    does the same.)"""
    evals = [json.loads(line) for line in (sharded / "masked" / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in evals if e["split"] == "val"]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert all(torch.isfinite(t).all() for t in weights(sharded / "masked").values())


def test_an_interrupted_fsdp_run_resumes_bitwise(sharded):
    """Interrupted after step 3's checkpoint, resumed from its DCP shards: every weight equals the whole run's."""
    for name in ("model.safetensors", "best.safetensors"):
        whole, resumed = weights(sharded / "whole", name), weights(sharded / "resumed", name)
        assert whole.keys() == resumed.keys()
        for key in whole:
            assert torch.equal(whole[key], resumed[key]), (name, key)
    evals = [
        line for line in (sharded / "resumed" / "metrics.jsonl").read_text().splitlines() if '"split": "val"' in line
    ]
    assert [e.split('"elapsed_s"')[0] for e in evals] == [
        e.split('"elapsed_s"')[0]
        for e in (sharded / "whole" / "metrics.jsonl").read_text().splitlines()
        if '"split": "val"' in e
    ]


def test_the_shards_go_through_dcp_and_only_the_last_checkpoint_is_kept(sharded):
    """train_state.pt names the DCP folder of its step and holds no weights or optimizer state of its own."""
    state = load_state(sharded / "whole" / "train_state.pt")
    assert state["sharded"] == "train_state.dcp/step-6" and state["step"] == 6
    assert "model" not in state and "optimizer" not in state
    assert sorted(p.name for p in (sharded / "whole" / "train_state.dcp").iterdir()) == ["step-6"]
    assert (sharded / "whole" / "train_state.dcp" / "step-6" / ".metadata").is_file()


def test_fsdp_without_torchrun_is_one_line_and_writes_nothing(capsys, tmp_path, sharded):
    """--fsdp alone, and resuming a sharded run in one process: one line that says to start it with torchrun."""
    out = tmp_path / "r"
    code = train.main(["pretrain", "--data", str(sharded / "head.txt"), *FLAGS, "--fsdp", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "torchrun --nproc_per_node=N" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    before = (sharded / "resumed" / "train_state.pt").read_bytes()
    assert train.main(["pretrain", "--out", str(sharded / "resumed"), "--resume", "--max-steps", "9"]) == 2
    assert "torchrun --nproc_per_node=N" in capsys.readouterr().err
    assert (sharded / "resumed" / "train_state.pt").read_bytes() == before


class RunsCode:
    """What a crafted .metadata would hold: unpickling it calls Path.touch, a stand-in for any code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_dcp_metadata_is_read_without_running_code(sharded, tmp_path):
    """DCP pickles its .metadata; minilm's reader admits only DCP's record classes, so a crafted one runs nothing."""
    real = SafeReader(sharded / "whole" / "train_state.dcp" / "step-6").read_metadata()
    assert "model.tok_emb.weight" in real.state_dict_metadata
    crafted = tmp_path / "step-1"
    crafted.mkdir()
    (crafted / ".metadata").write_bytes(pickle.dumps(RunsCode(tmp_path / "pwned")))
    with pytest.raises(ValueError, match=r"not the metadata of a minilm checkpoint \(it names pathlib\.Path\.touch"):
        SafeReader(crafted).read_metadata()
    assert not (tmp_path / "pwned").exists()
