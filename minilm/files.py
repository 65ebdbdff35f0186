"""Safe files: atomic writes, strict UTF-8 reading, JSON and JSONL, and tensor files that load without running code.

Every write goes to a temp file that is renamed over the target, so a crash never leaves half a file. Weights are
safetensors (plain tensors: loading one cannot run code); a training state is a torch file read back with
`weights_only=True` for the same reason. Every loader fails with one line that names the file and says what to do;
none repeats a library's advice to load a file in a way that could run code.

Docs: docs/training.md (checkpoints and exact resume).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor


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


def first_line(error: BaseException) -> str:
    """The first line of an exception's message: loaders quote it, never a whole multi-line explanation."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---- text -----------------------------------------------------------------------------------------------------
def read_utf8_lines(path: str | os.PathLike[str], skip_invalid_utf8: bool = False) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file, failing with the file, line and byte offset of bad bytes
    (or, with `skip_invalid_utf8`, dropping them with one warning per file)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file {path!r} does not exist (or is not a file)")
    offset, dropped = 0, 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if not skip_invalid_utf8:
                    raise ValueError(
                        f"{path} is not UTF-8 text: invalid byte 0x{raw[e.start]:02x} at line {lineno}, "
                        f"byte offset {offset + e.start}; re-encode it, e.g. `iconv -f latin1 -t utf-8`, "
                        "or drop bad bytes (skip_invalid_utf8=True; train.py --skip-invalid-utf8)"
                    ) from None
                line = raw.decode("utf-8", errors="ignore")
                dropped += len(raw) - len(line.encode("utf-8"))
                yield line
            offset += len(raw)
    if dropped:
        warnings.warn(f"{path}: dropped {dropped} bytes that are not valid UTF-8", stacklevel=2)


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """The parsed JSON of a file; a missing, non-UTF-8 or malformed file is one line naming it as `what`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is damaged or not JSON ({first_line(e)})") from None


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line of a JSONL file; bad JSON is an error naming the line."""
    for lineno, line in enumerate(read_utf8_lines(path), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{os.fspath(path)} line {lineno} is not valid JSON ({e.msg}): write one object per line"
            ) from None


# ---- tensors: safetensors for weights, torch (weights_only) for a training state ------------------------------------
def save_tensors(
    tensors: dict[str, Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write tensors as safetensors, atomically."""
    cpu = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write(path, safetensors.torch.save(cpu, metadata=metadata))


def load_tensors(path: str | os.PathLike[str], what: str = "weights file") -> dict[str, Tensor]:
    """Read a safetensors file (plain tensors: no code runs), failing in one line on a missing or damaged file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return safetensors.torch.load_file(path)
    except Exception as e:  # safetensors raises its own error type for truncated or corrupted files
        raise ValueError(
            f"{what} {path} is damaged or not a safetensors file ({first_line(e)}); retrain or restore it"
        ) from None


def save_weights(model: torch.nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Write the model's parameters as safetensors, atomically (a plain tensor file: loading runs no code)."""
    save_tensors(model.state_dict(), path, metadata)


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Load safetensors weights into `model`, failing clearly on a missing, damaged or mismatched file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist: train a model into this folder first")
    tensors = load_tensors(path)
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(
            f"weights file {path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "its config.json and weights come from different models"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"weights file {path} does not fit the config: {name} is {tuple(tensor.shape)} in the file "
                f"but {tuple(expected[name].shape)} in the model; config.json and weights come from different models"
            )
    model.load_state_dict(tensors)


def save_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a training state (tensors, numbers, strings, lists, dicts) atomically with torch.save."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training state with `weights_only=True`, so the file cannot run code.

    A file that is not a plain state (a pickle of arbitrary objects, a damaged or foreign file) is refused in one line;
    nothing in it was run.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training state {path} does not exist: nothing to resume, start without --resume")
    try:
        with warnings.catch_warnings():  # PyTorch warns about a foreign file's pickle protocol before refusing it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # PyTorch's message suggests weights_only=False, which would run the file's code: not quoted
        state = None
    if not isinstance(state, dict):
        raise ValueError(
            f"{path} is not a minilm training state (damaged, or written by something else) and was not "
            "loaded; start a new run without --resume"
        )
    return state
