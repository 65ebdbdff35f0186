"""The UTF-8 constraint: a model sampling from a byte-level vocabulary writes only valid UTF-8.

A byte-level BPE token is a string of bytes, not of characters: a character the vocabulary has no token for is
written as 2-4 byte tokens, and a model free to pick any token can write bytes that are not UTF-8 (they decode as
U+FFFD). Each row keeps the state of the character it is writing,

    s = (n, lo, hi)     n = continuation bytes the pending character still needs, [lo, hi] = the range of the next one

and token w is allowed in state s iff the pending bytes followed by bytes(w) are a valid UTF-8 prefix:

    p'(w | x) ∝ p(w | x) · 1[bytes(x_gen) ⧺ bytes(w) is a valid UTF-8 prefix]

UTF-8 has 8 such states, so `allowed[s, w]` and `next_state[s, w]` are computed once from the tokenizer and a step
is one lookup for the whole batch. Special tokens write no bytes and are allowed only between characters.

Docs: docs/generation.md (the UTF-8 constraint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from minilm.tokenizer import Tokenizer

State = tuple[int, int, int]  # (continuation bytes still needed, lowest and highest allowed next byte)
BETWEEN: State = (0, 0x80, 0xBF)  # no character pending
STATES: tuple[State, ...] = (
    BETWEEN,
    (1, 0x80, 0xBF),  # after C2-DF, E0-EF + 1, F0-F4 + 2
    (2, 0x80, 0xBF),  # after E1-EC, EE, EF, or F0-F4 + 1
    (2, 0xA0, 0xBF),  # after E0 (no overlong 3-byte forms)
    (2, 0x80, 0x9F),  # after ED (no surrogates D800-DFFF)
    (3, 0x80, 0xBF),  # after F1-F3
    (3, 0x90, 0xBF),  # after F0 (no overlong 4-byte forms)
    (3, 0x80, 0x8F),  # after F4 (nothing past U+10FFFF)
)


def step(state: State, byte: int) -> State | None:
    """The state after `byte`, or None where UTF-8 forbids that byte."""
    need, lo, hi = state
    if need:
        return (need - 1, 0x80, 0xBF) if lo <= byte <= hi else None
    if byte < 0x80:
        return BETWEEN
    if 0xC2 <= byte <= 0xDF:
        return (1, 0x80, 0xBF)
    if 0xE0 <= byte <= 0xEF:
        return (2, 0xA0 if byte == 0xE0 else 0x80, 0x9F if byte == 0xED else 0xBF)
    if 0xF0 <= byte <= 0xF4:
        return (3, 0x90 if byte == 0xF0 else 0x80, 0x8F if byte == 0xF4 else 0xBF)
    return None  # a continuation byte 80-BF where none is expected, C0-C1 (overlong), F5-FF (past U+10FFFF)


def walk(state: State, data: bytes) -> State | None:
    """The state after `data`, or None if `data` does not continue a valid UTF-8 prefix in `state`."""
    for byte in data:
        next_state = step(state, byte)
        if next_state is None:
            return None
        state = next_state
    return state


def resync(state: State, data: bytes) -> State:
    """The state after `data` as a decoder sees it: a forbidden byte ends the broken character, and a new one may
    start at that byte. Only for prompts: their broken bytes decode to U+FFFD whatever follows, and what matters is
    the unfinished character at their end."""
    for byte in data:
        state = step(state, byte) or step(BETWEEN, byte) or BETWEEN
    return state


def is_valid_prefix(data: bytes) -> bool:
    """1[data is a valid UTF-8 prefix]: valid UTF-8 that may end inside a character."""
    return walk(BETWEEN, data) is not None


@dataclass(frozen=True, eq=False, repr=False)
class Utf8Constraint:
    """The UTF-8 rule over a vocabulary: `allowed[s, w]` and `next_state[s, w]` (S, V), s an index into STATES.

    Build it with `from_tokenizer`; `start` reads the state after each prompt, `mask` gives the tokens allowed next,
    `advance` moves past a drawn token, `text` decodes ids without an unfinished last character.
    """

    token_bytes: tuple[bytes | None, ...]
    allowed: Tensor
    next_state: Tensor

    @classmethod
    def from_token_bytes(cls, token_bytes: Sequence[bytes | None]) -> Utf8Constraint:
        """The tables for tokens with these bytes (None: a special token, which writes nothing)."""
        index = {state: i for i, state in enumerate(STATES)}
        allowed, next_state = [], []
        for state in STATES:
            allowed_row, next_row = [], []
            for data in token_bytes:
                after = state if data is None else walk(state, data)
                allowed_row.append(after is not None and (data is not None or state == BETWEEN))
                next_row.append(index[after if after is not None else resync(state, data or b"")])
            allowed.append(allowed_row)
            next_state.append(next_row)
        return cls(tuple(token_bytes), torch.tensor(allowed, dtype=torch.bool), torch.tensor(next_state))

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, vocab_size: int | None = None) -> Utf8Constraint:
        """The tables for `tokenizer`, over a model's `vocab_size` ids (ids past the tokenizer's decode to nothing)."""
        token_bytes = tokenizer.token_bytes()
        if vocab_size is not None:
            token_bytes = (token_bytes + [None] * vocab_size)[:vocab_size]
        return cls.from_token_bytes(token_bytes)

    @property
    def vocab_size(self) -> int:
        return self.allowed.size(-1)

    def __repr__(self) -> str:
        return f"Utf8Constraint(vocab_size={self.vocab_size})"

    def to(self, device: torch.device | str) -> Utf8Constraint:
        return replace(self, allowed=self.allowed.to(device), next_state=self.next_state.to(device))

    def advance(self, state: Tensor, token: Tensor) -> Tensor:
        """s' = next_state[s, w] for each row: the state (B,) after the drawn tokens (B,)."""
        return self.next_state[state, token]

    def start(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The state (B,) after each prompt row (B, T); padding (attention_mask 0) is skipped."""
        state = torch.zeros(input_ids.size(0), dtype=torch.long, device=input_ids.device)
        for t in range(input_ids.size(1)):
            moved = self.advance(state, input_ids[:, t])
            state = moved if attention_mask is None else torch.where(attention_mask[:, t].bool(), moved, state)
        return state

    def mask(self, state: Tensor) -> Tensor:
        """allowed[s] (B, V): True where the token's bytes continue each row's text as valid UTF-8."""
        allowed = self.allowed[state]
        stuck = ~allowed.any(dim=-1)
        if bool(stuck.any()):
            need, lo, hi = STATES[int(state[stuck][0])]
            raise ValueError(
                f"no token of this vocabulary continues a character that needs {need} more byte(s), the next in "
                f"{lo:02X}-{hi:02X}: build the constraint from a byte-level vocabulary (minilm.Tokenizer.train)"
            )
        return allowed

    def text(self, ids: Sequence[int]) -> str:
        """The text of `ids`, without the bytes of an unfinished last character (generation stopped inside it)."""
        data = b"".join(self.token_bytes[i] or b"" for i in ids)
        if resync(BETWEEN, data) != BETWEEN:  # it has at most 3 bytes, the first one a lead byte C2-F4
            data = data[: max(i for i in range(max(len(data) - 3, 0), len(data)) if data[i] >= 0xC0)]
        return data.decode("utf-8", errors="replace")
