"""Nothing lost: a command writes only into a new or empty folder, or one that holds its own kind of output.

Every folder a command writes is marked with a small `minilm.json` naming the kind of output it holds
(`{"kind": "pretrain"}`). Before a command writes anything, `check_output` decides:

    folder missing or empty                      write (`--resume` has nothing to continue: an error)
    folder is one the command reads from         error: another --out
    marked with another kind                     error: another --out (`--overwrite` does not help)
    not marked, not empty                        error: minilm did not write it, so it is not minilm's to replace
    marked with this kind                        --resume continues it; --overwrite replaces only the files
                                                 this kind writes (others stay); neither: an error

Every error leaves every file as it was. `claim_output` then creates the folder, removes the kind's own files on
`--overwrite`, and writes the marker. A single file a command writes (a plot, a report) may replace only a file
that the same command wrote, told by a mark inside the file (`check_file_output`).

Docs: docs/cli.md (what each command writes, and when it may replace it).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from minilm.files import atomic_write

MARKER = "minilm.json"


@dataclass(frozen=True)
class OutputKind:
    """One command's kind of output folder: the files it writes (a name ending in "/" is a folder of its own)."""

    name: str
    noun: str
    """How messages call it: "a run", "a tuned model"."""
    files: tuple[str, ...]
    resumable: bool = True
    legacy: tuple[str, ...] = ()
    """Files that together mark a folder written before minilm.json existed as this kind."""


def output_kind(folder: Path, kinds: Sequence[OutputKind] = ()) -> str | None:
    """The kind named by the folder's minilm.json, else the legacy kind whose files are all there, else None."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            value = json.loads(marker.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return value.get("kind") if isinstance(value, dict) else None
    for kind in kinds:
        if kind.legacy and all((folder / name).exists() for name in kind.legacy):
            return kind.name
    return None


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def check_output(
    folder: str | os.PathLike[str],
    kind: OutputKind,
    *,
    resume: bool = False,
    overwrite: bool = False,
    reads: Sequence[tuple[str, str | os.PathLike[str]]] = (),
    known: Sequence[OutputKind] = (),
) -> None:
    """Raise a one-line ValueError unless `kind` may write into `folder` (see the module docstring); touches nothing.

    reads: (what, path) of every file or folder the command reads, e.g. ("--base", "runs/causal").
    known: the other kinds, to name the one a folder holds and to recognise legacy folders.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} is a file, not a folder: choose a folder for the output")
    for what, path in reads:
        path = Path(path)
        if _same(path, folder) or (path.parent.exists() and _same(path.parent, folder) and path.name in kind.files):
            raise ValueError(f"--out {folder} is what this command reads ({what} {path}): write into another --out")
    if not folder.is_dir() or not any(folder.iterdir()):
        if resume:
            raise ValueError(
                f"--resume: {folder} holds no {kind.noun.removeprefix('a ').removeprefix('an ')} "
                "to continue; start one without --resume"
            )
        return
    found = output_kind(folder, [kind, *known])
    if found is None:
        raise ValueError(
            f"--out {folder} is not empty and holds no minilm output ({MARKER} is missing): minilm "
            "replaces only folders it wrote; choose a new or empty folder"
        )
    if found != kind.name:
        other = next((k for k in known if k.name == found), None)
        raise ValueError(
            f"--out {folder} holds {other.noun if other else 'an output'} written by `train.py {found}`, "
            f"not {kind.noun}: choose another --out (--overwrite replaces only its own kind of output)"
        )
    if resume or overwrite:
        return
    options = ("continue it with --resume, " if kind.resumable else "") + "start over with --overwrite"
    raise ValueError(
        f"{folder} already holds {kind.noun}: {options} (replaces only the files `train.py {kind.name}` "
        "writes), or choose another --out"
    )


def claim_output(folder: str | os.PathLike[str], kind: OutputKind, *, fresh: bool) -> None:
    """Create `folder` and mark it as `kind`; with `fresh`, first remove the files this kind writes (and only those).

    Call it after `check_output` and once every input is known to be good, just before the first file is written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fresh:
        for name in kind.files:
            path = folder / name.rstrip("/")
            if name.endswith("/") and path.is_dir():
                shutil.rmtree(path)
            elif path.is_file():
                path.unlink()
    atomic_write(folder / MARKER, json.dumps({"kind": kind.name}) + "\n")


def check_file_output(path: str | os.PathLike[str], is_ours: Callable[[Path], bool], what: str) -> None:
    """A command that writes one file may replace only a file it wrote itself (`is_ours`); one-line ValueError
    otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the path of the {what} file to write")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: the folder {path.parent} does not exist")
    if path.exists() and not is_ours(path):
        raise ValueError(
            f"{path} exists and was not written by minilm as a {what}: choose another file name; nothing was changed"
        )
