"""Atomic writes: a reader sees the old file or the whole new one, never half of it, and no temp file is left."""

from __future__ import annotations

import os

import pytest

from minilm.checkpoint import atomic_write


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
