"""Byte-level BPE tokenizer (built on the `tokenizers` library) with minilm's fixed special tokens.

Byte-level means the base alphabet is the 256 byte values, so any UTF-8 text (English, Chinese,
emoji, code) is encoded without `[UNK]` and decodes back to exactly the same string. BPE then
learns merges of frequent byte pairs up to `vocab_size` tokens.

Docs: docs/tokenizer.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from minilm.files import atomic_write, first_line, read_utf8_lines

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)
MIN_VOCAB_SIZE = NUM_SPECIAL_TOKENS + 256  # the specials plus one token per byte value


def _byte_of_char() -> dict[str, int]:
    """The byte-level alphabet backwards: GPT-2's printable character for each byte value -> that byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]  # the rest are shifted to U+0100 onwards, in byte order
    return {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(others)}


class Tokenizer:
    """minilm's tokenizer: byte-level BPE with special ids [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 [BOS]=5 [EOS]=6."""

    pad_id, unk_id, cls_id, sep_id, mask_id, bos_id, eos_id = PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID, BOS_ID, EOS_ID

    def __init__(self, backend: HFTokenizer) -> None:
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            if backend.token_to_id(token) != expected_id:
                raise ValueError(
                    f"this tokenizer maps {token} to id {backend.token_to_id(token)}, minilm needs {expected_id}: "
                    "train it with minilm.Tokenizer.train"
                )
        self.backend = backend

    @classmethod
    def train(
        cls,
        texts: Iterable[str] = (),
        files: Sequence[str | os.PathLike[str]] = (),
        vocab_size: int = 8192,
        min_frequency: int = 2,
    ) -> Tokenizer:
        """Learn a byte-level BPE vocabulary of `vocab_size` tokens from strings and/or UTF-8 files."""
        if isinstance(texts, str):
            raise ValueError("texts must be a list of strings, not one string: write texts=[text]")
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: byte-level BPE needs at least {MIN_VOCAB_SIZE} "
                f"({NUM_SPECIAL_TOKENS} special tokens + 256 bytes)"
            )
        seen_text = False

        def corpus() -> Iterator[str]:
            nonlocal seen_text
            for text in texts:
                seen_text = seen_text or bool(text.strip())
                yield text
            for path in files:
                for line in read_utf8_lines(path):
                    seen_text = seen_text or bool(line.strip())
                    yield line

        backend = HFTokenizer(models.BPE(unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(corpus(), trainer=trainer)
        if not seen_text:
            raise ValueError("the training corpus is empty: give the tokenizer some non-blank text")
        return cls(backend)

    # ---- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the standard `tokenizer.json` (loadable by `tokenizers.Tokenizer.from_file` too)."""
        atomic_write(path, self.backend.to_str(pretty=True))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file {path!r} does not exist")
        try:
            backend = HFTokenizer.from_file(path)
        except Exception as e:  # the Rust side raises a plain Exception for malformed files
            raise ValueError(f"{path} is not a valid tokenizer.json ({first_line(e)})") from None
        return cls(backend)

    # ---- text <-> ids -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`. Special tokens written in the text (e.g. "[MASK]") become their ids."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """The text of `ids`; byte-level decoding makes decode(encode(text)) == text."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_bytes(self) -> list[bytes | None]:
        """The bytes each id decodes to, indexed by id; None for the special tokens, which decode to no text."""
        byte_of = _byte_of_char()
        special = set(self.backend.get_added_tokens_decoder())
        tokens = [self.backend.id_to_token(i) for i in range(self.vocab_size)]
        return [None if i in special else bytes(byte_of[c] for c in token) for i, token in enumerate(tokens)]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def pad(
        self, sequences: Sequence[Sequence[int]], max_length: int | None = None, side: str = "right"
    ) -> dict[str, torch.Tensor]:
        """Truncate each id list to `max_length` and pad to the longest with [PAD].

        Returns `input_ids` (B, T) and `attention_mask` (B, T), 1 at real tokens and 0 at padding.
        """
        if side not in ("right", "left"):
            raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if not sequences:
            raise ValueError("cannot pad an empty batch: give at least one sequence")
        rows = [list(s)[:max_length] if max_length is not None else list(s) for s in sequences]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
            input_ids[i, cols] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, cols] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def encode_batch(
        self, texts: Sequence[str], max_length: int | None = None, side: str = "right"
    ) -> dict[str, torch.Tensor]:
        """Encode several texts into one padded batch (see `pad`)."""
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        return self.pad([e.ids for e in encodings], max_length=max_length, side=side)
