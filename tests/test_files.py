"""Safe files: atomic writes leave the old file or the whole new one; every loader refuses a bad file in one line
and never runs code from it."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from minilm.files import atomic_write, load_state, load_tensors, save_state


class RunsCode:
    """A pickle that would create a file when unpickled: what a crafted checkpoint could do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "config.json"
    atomic_write(path, "old")
    atomic_write(path, b"new bytes")
    assert path.read_bytes() == b"new bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.bin"
    atomic_write(path, "the saved model")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "half a model")
    assert path.read_text() == "the saved model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def crafted_state(path, target) -> None:
    with open(path, "wb") as f:
        pickle.dump({"step": 3, "payload": RunsCode(str(target))}, f)


def test_a_crafted_training_state_is_refused_in_one_line_without_running_it(tmp_path):
    crafted_state(tmp_path / "train_state.pt", tmp_path / "pwned")
    with pytest.raises(ValueError) as e:
        load_state(tmp_path / "train_state.pt")
    message = str(e.value)
    assert "is not a minilm training state" in message and "was not loaded" in message
    assert len(message.splitlines()) == 1 and "weights_only=False" not in message
    assert not (tmp_path / "pwned").exists()


def test_a_real_training_state_round_trips(tmp_path):
    save_state({"step": 3, "tensor": torch.arange(4)}, tmp_path / "s.pt")
    state = load_state(tmp_path / "s.pt")
    assert state["step"] == 3 and torch.equal(state["tensor"], torch.arange(4))


def test_a_damaged_tensor_file_is_one_line(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError) as e:
        load_tensors(tmp_path / "w.safetensors")
    assert len(str(e.value).splitlines()) == 1 and "damaged" in str(e.value)
