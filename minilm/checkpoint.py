"""Safe files: every write goes to a temp file that is renamed over the target, so a crash never leaves half a file.

Weights are safetensors (plain tensors: loading one cannot run code); a training state is a torch file
read back with `weights_only=True` for the same reason.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

import safetensors.torch
import torch


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write `data` to `path` so that readers see either the old file or the complete new one.

    The bytes go to a temp file in the same folder, are flushed to disk, and the temp file is
    renamed over `path` (`os.replace` is atomic on POSIX and Windows within one file system).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---- model weights (safetensors) and training state (torch, loaded with weights_only) -------------
def save_weights(model: torch.nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Write the model's parameters as safetensors, atomically (a plain tensor file: loading runs no code)."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write(path, safetensors.torch.save(tensors, metadata=metadata))


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Load safetensors weights into `model`, failing clearly on a missing, damaged or mismatched file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist: train a model into this folder first")
    try:
        tensors = safetensors.torch.load_file(path)
    except Exception as e:  # safetensors raises its own error type for truncated or corrupted files
        raise ValueError(f"weights file {path} is damaged or not a safetensors file ({e}); retrain or restore it") from None
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"weights file {path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                         "its config.json and weights come from different models")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"weights file {path} does not fit the config: {name} is {tuple(tensor.shape)} in the file "
                             f"but {tuple(expected[name].shape)} in the model; config.json and weights come from different models")
    model.load_state_dict(tensors)


def save_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a training state (tensors, numbers, strings, lists, dicts) atomically with torch.save."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training state with `weights_only=True`, so the file cannot run code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training state {path} does not exist: nothing to resume, start without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"training state {path} is damaged ({e}); start a new run without --resume") from None
