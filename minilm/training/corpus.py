"""The pretraining corpus: text files -> train/validation text -> token ids cached on disk -> batches.

    files ──split──▶ train text, val text ──Tokenizer──▶ ids (uint16 memmap, cached) ──▶ windows | packed blocks

* Documents: a text file, every .txt file in a folder, or a task folder's *train* split (its texts one per line,
  without labels: task-adaptive pretraining); a task's dev and test texts never enter through --data.
* Hold-out: every line equal to a dev or test text of a --hold-out task folder is removed from every document, so
  a base never pretrains on the texts a task is judged on.

* Split: every document (file) gives its first (1 - f) of characters, cut at a line end, to train
  and the rest to validation, so both splits see every document and the split never changes.
* Cache: the ids of both splits are written once to `cache_dir/<key>/`, where the key hashes the
  file contents, the tokenizer and the split fraction; any change gives a new key, never stale ids.
* Causal objective: random contiguous windows of T tokens from the train stream.
* Masked objective: whole lines packed greedily into blocks `[CLS] line line ... [SEP]` of at most
  T tokens (a line longer than T - 2 is cut into pieces), padded with [PAD].

Docs: docs/training.md (from text to batches).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minilm.files import atomic_write, read_utf8_lines
from minilm.settings import PROJECT, setting
from minilm.task_files import is_task_folder, split_texts
from minilm.tokenizer import CLS_ID, EOS_ID, NUM_SPECIAL_TOKENS, PAD_ID, SEP_ID, Tokenizer

CACHE_FORMAT = 1
TEXT_SUFFIXES = (".txt",)
DEFAULT_DATA = PROJECT / "data" / "tinyshakespeare.txt"


@dataclass(frozen=True)
class CorpusConfig:
    """Where the pretraining text comes from and how it is split and cached."""

    data: tuple[str, ...] = setting(
        (str(DEFAULT_DATA),),
        "UTF-8 text files, folders of .txt files, or task folders (their train texts, without labels)",
        metavar="PATH",
    )
    hold_out: tuple[str, ...] = setting(
        (),
        "task folders whose dev and test texts are removed from the corpus (every line equal to one of them)",
        metavar="TASK_DIR",
    )
    val_fraction: float = setting(0.1, "share of each file held out for validation", check="probability")
    tokenizer: str | None = setting(None, "reuse this tokenizer.json instead of training one", type=str, metavar="FILE")
    cache_dir: str | None = setting(
        None, "where encoded corpora are cached (default: .cache next to --out)", type=str, metavar="DIR"
    )
    skip_invalid_utf8: bool = setting(False, "drop bytes that are not UTF-8 (with a warning) instead of stopping")


# ---- files and text ------------------------------------------------------------------------------
def find_text_files(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """The documents named by `paths`: files as given, task folders as themselves (their train split), other
    folders searched recursively for *.txt (sorted)."""
    if not paths:
        raise ValueError("no data given: pass --data with a text file or a folder of .txt files")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() or is_task_folder(path):
            files.append(path)
        elif path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix in TEXT_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise ValueError(
                    f"folder {path} holds no .txt files and no task (train.tsv): put UTF-8 text files ending in .txt "
                    "there"
                )
            files.extend(found)
        else:
            raise FileNotFoundError(
                f"data path {path} does not exist: pass an existing text file or folder with --data"
            )
    return files


def read_text(path: Path, skip_invalid_utf8: bool = False) -> str:
    """The whole text of a UTF-8 file; bad bytes are an error naming the line and byte offset, or dropped on request.
    A task folder's text is its train split's texts, one per line."""
    if path.is_dir():
        return "".join(text + "\n" for text in split_texts(path, "train"))
    return "".join(read_utf8_lines(path, skip_invalid_utf8))


def held_out_lines(task_folders: list[str | os.PathLike[str]]) -> set[str]:
    """The dev and test texts of the task folders, stripped: the lines a corpus must not contain."""
    held: set[str] = set()
    for raw in task_folders:
        folder = Path(raw)
        if not is_task_folder(folder):
            raise FileNotFoundError(
                f"--hold-out {folder} is not a task folder (it needs train.tsv or train.jsonl, and dev/test splits)"
            )
        held.update(text.strip() for split in ("dev", "test") for text in split_texts(folder, split))
    return held - {""}


def remove_lines(text: str, held: set[str]) -> tuple[str, int]:
    """(text without the lines whose stripped content is in `held`, how many lines were removed)."""
    if not held:
        return text, 0
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if line.strip() not in held]
    return "".join(kept), len(lines) - len(kept)


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val): the first (1 - f) of the characters, extended to the end of its line, and the rest."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    cut = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", cut)
    if newline != -1 and newline + 1 < len(text):
        cut = newline + 1
    return text[:cut], text[cut:]


# ---- token ids ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenStream:
    """The ids of one split: documents' lines one after another, each document followed by [EOS].

    `line_starts[i]:line_starts[i+1]` are the ids of line i ([EOS] is a line of its own);
    `n_bytes` is the UTF-8 size of the split's text (for bits per byte).
    """

    ids: np.ndarray
    line_starts: np.ndarray
    n_bytes: int

    def __len__(self) -> int:
        return len(self.ids)


def id_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits (half the disk and memory of int32), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def encode_documents(tokenizer: Tokenizer, documents: list[str]) -> TokenStream:
    """Encode each document line by line (lines keep their newline), [EOS] after each document."""
    chunks: list[list[int]] = []
    for text in documents:
        lines = text.splitlines(keepends=True)
        chunks.extend(e.ids for e in tokenizer.backend.encode_batch(lines, add_special_tokens=False))
        chunks.append([EOS_ID])
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
    line_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.fromiter((i for c in chunks for i in c), dtype=id_dtype(tokenizer.vocab_size), count=int(line_starts[-1]))
    return TokenStream(ids, line_starts, sum(len(t.encode("utf-8")) for t in documents))


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """len(bytes(w)) for every token w: special tokens are 0 bytes, byte-level tokens 1 byte per symbol."""
    lengths = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for token, i in tokenizer.backend.get_vocab(with_added_tokens=False).items():
        if i >= NUM_SPECIAL_TOKENS:
            lengths[i] = len(token)  # the byte-level alphabet writes each byte as one character
    return lengths


# ---- the prepared corpus ------------------------------------------------------------------------
@dataclass(frozen=True)
class Corpus:
    """Train and validation token streams of a list of files, and where they are cached."""

    train: TokenStream
    val: TokenStream
    files: list[str]
    cache_dir: Path
    removed_lines: int = 0
    """Lines left out because they are a held-out task's dev or test text."""


def cache_key(file_digests: list[str], tokenizer: Tokenizer, val_fraction: float, skip_invalid_utf8: bool) -> str:
    """sha256 of everything the cached ids depend on: file contents, tokenizer, split, format."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "format": CACHE_FORMAT,
                "files": file_digests,
                "val_fraction": val_fraction,
                "skip_invalid_utf8": skip_invalid_utf8,
            }
        ).encode()
    )
    h.update(tokenizer.backend.to_str().encode())
    return h.hexdigest()[:20]


@dataclass(frozen=True)
class CorpusText:
    """The corpus as text: its documents, a digest of each (after the hold-out), and their train/validation parts."""

    files: list[Path]
    digests: list[str]
    train: list[str]
    val: list[str]
    removed_lines: int
    """Lines removed because they are a held-out task's dev or test text."""


def read_corpus(
    paths: list[str | os.PathLike[str]],
    val_fraction: float = 0.1,
    skip_invalid_utf8: bool = False,
    hold_out: Sequence[str | os.PathLike[str]] = (),
) -> CorpusText:
    """The documents named by `paths`, without the held-out tasks' dev and test lines, split into train and val."""
    files = find_text_files(paths)
    held = held_out_lines(list(hold_out))
    digests, train_texts, val_texts, removed = [], [], [], 0
    for path in files:
        text, n = remove_lines(read_text(path, skip_invalid_utf8), held)
        removed += n
        digests.append(hashlib.sha256(text.encode("utf-8")).hexdigest())
        train, val = split_text(text, val_fraction)
        train_texts.append(train)
        val_texts.append(val)
    if not any(t.strip() for t in train_texts):
        raise ValueError(f"the corpus in {', '.join(map(str, paths))} is empty: give it some text")
    return CorpusText(files, digests, train_texts, val_texts, removed)


def prepare_corpus(
    paths: list[str | os.PathLike[str]],
    tokenizer: Tokenizer,
    cache_dir: str | os.PathLike[str],
    val_fraction: float = 0.1,
    skip_invalid_utf8: bool = False,
    hold_out: Sequence[str | os.PathLike[str]] = (),
) -> Corpus:
    """Encode the corpus once into `cache_dir/<key>/` (memmapped .npy files) and reuse it afterwards."""
    text = read_corpus(paths, val_fraction, skip_invalid_utf8, hold_out)
    files, train_texts, val_texts = text.files, text.train, text.val
    folder = Path(cache_dir) / cache_key(text.digests, tokenizer, val_fraction, skip_invalid_utf8)
    if not (folder / "meta.json").is_file():  # meta.json is written last: its presence means complete
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format": CACHE_FORMAT, "files": [str(f) for f in files]}
        for name, texts in (("train", train_texts), ("val", val_texts)):
            stream = encode_documents(tokenizer, texts)
            _save_npy(folder / f"{name}_ids.npy", stream.ids)
            _save_npy(folder / f"{name}_lines.npy", stream.line_starts)
            meta[f"{name}_bytes"] = stream.n_bytes
        atomic_write(folder / "meta.json", json.dumps(meta, indent=1))
    meta = json.loads((folder / "meta.json").read_text())
    streams = {
        name: TokenStream(
            np.load(folder / f"{name}_ids.npy", mmap_mode="r"),
            np.load(folder / f"{name}_lines.npy"),
            int(meta[f"{name}_bytes"]),
        )
        for name in ("train", "val")
    }
    return Corpus(streams["train"], streams["val"], [str(f) for f in files], folder, text.removed_lines)


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write(path, buffer.getvalue())


# ---- batches ------------------------------------------------------------------------------------
def sample_windows(stream: TokenStream, batch_size: int, T: int, generator: torch.Generator) -> Tensor:
    """(B, T) contiguous windows ids[s : s + T] with starts s ~ Uniform{0, ..., N - T} drawn from `generator`."""
    n_starts = len(stream) - T + 1
    if n_starts < 1:
        raise ValueError(
            f"the split has {len(stream)} tokens, fewer than one window of {T}: give more text or lower --context"
        )
    starts = torch.randint(0, n_starts, (batch_size,), generator=generator).tolist()
    return torch.from_numpy(np.stack([stream.ids[s : s + T].astype(np.int64) for s in starts]))


def eval_windows(stream: TokenStream, T: int) -> list[int]:
    """Starts s_j = j (T - 1) of windows ids[s_j : s_j + T] that score every token after the first once.

    Consecutive windows overlap by one token: a window's first token is only context (the previous
    window scored it), and positions 1 .. T-1 of each window are scored. The last window may be shorter.
    """
    if len(stream) < 2:
        raise ValueError(f"the split has {len(stream)} tokens: at least 2 are needed to score one")
    if T < 2:
        raise ValueError(f"a window of T={T} tokens scores nothing: T must be at least 2")
    return list(range(0, len(stream) - 1, T - 1))


def pack_lines(stream: TokenStream, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocks (n, T) `[CLS] line line ... [SEP] [PAD] ...` of whole lines, and each block's length.

    Lines go into the current block while they fit in T - 2 tokens; a line that does not fit starts
    a new block, and a line longer than T - 2 is cut into pieces of T - 2. [EOS] (a document end)
    closes the block, so no block mixes two documents.
    """
    if T < 3:
        raise ValueError(f"a packed block needs room for [CLS], one token and [SEP]: T={T} is too small")
    room = T - 2
    blocks: list[list[int]] = []
    current: list[int] = []
    ids, starts = stream.ids, stream.line_starts
    for i in range(len(starts) - 1):
        line = ids[starts[i] : starts[i + 1]].tolist()
        if line == [EOS_ID] or len(current) + len(line) > room:
            if current:
                blocks.append(current)
            current = []
        if line == [EOS_ID]:
            continue
        while len(line) > room:
            blocks.append(line[:room])
            line = line[room:]
        current.extend(line)
    if current:
        blocks.append(current)
    if not blocks:
        raise ValueError("the split has no text to pack into blocks: give more text")
    packed = np.full((len(blocks), T), PAD_ID, dtype=np.int64)
    lengths = np.zeros(len(blocks), dtype=np.int64)
    for b, tokens in enumerate(blocks):
        row = [CLS_ID, *tokens, SEP_ID]
        packed[b, : len(row)] = row
        lengths[b] = len(row)
    return packed, lengths


def sample_blocks(
    blocks: np.ndarray, lengths: np.ndarray, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask) of `batch_size` packed blocks drawn uniformly with replacement."""
    rows = torch.randint(0, len(blocks), (batch_size,), generator=generator).numpy()
    input_ids = torch.from_numpy(blocks[rows])
    attention_mask = (torch.arange(blocks.shape[1])[None, :] < torch.from_numpy(lengths[rows])[:, None]).long()
    return input_ids, attention_mask
