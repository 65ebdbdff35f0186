"""ModelConfig: every size of the Transformer in one validated, JSON-serialisable dataclass.

Docs: docs/transformer.md (the sizes and the parameter count).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from minilm.files import atomic_write
from minilm.settings import setting

ATTENTION_BACKENDS = ("auto", "math", "sdpa", "triton")


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a minilm Transformer.

    vocab_size   V, number of token ids (the tokenizer's vocabulary size)
    d_model      d, width of every hidden vector
    n_heads      h, attention heads per layer; head_dim = d / h
    n_layers     L, number of Transformer blocks
    d_ff         width of the feed-forward hidden layer (default 4 d)
    max_len      longest sequence the position table covers
    dropout      dropout probability on embeddings, attention probabilities and residual branches
    causal       True: each token sees only earlier tokens (causal LM);
                 False: every token sees every token (masked LM)
    attention    "math" (the readable reference), "sdpa" (PyTorch's fused kernels), "triton" (minilm's own
                 FlashAttention kernel, CUDA) or "auto" (triton on CUDA when installed, else sdpa; docs/kernels.md)
    """

    vocab_size: int = setting(
        1024,
        "tokenizer vocabulary size (the model's V is the size the tokenizer reaches)",
        flag="--vocab",
        check="positive",
    )
    d_model: int = setting(256, "d_model, the width of every hidden vector", flag="--width", check="positive")
    n_heads: int = setting(4, "attention heads", flag="--heads", check="positive")
    n_layers: int = setting(4, "Transformer blocks", flag="--layers", check="positive")
    d_ff: int | None = setting(
        None, "feed-forward width (default: 4 x --width)", flag="--ffn", check="positive", type=int
    )
    max_len: int = setting(128, "tokens per sequence (max_len, the context)", flag="--context", check="positive")
    dropout: float = setting(0.1, "dropout probability", check="fraction")
    causal: bool = setting(True, "causal (autoregressive) or bidirectional (masked) attention", cli=False)
    attention: str = setting("auto", "attention backend", choices=ATTENTION_BACKENDS)

    def __post_init__(self) -> None:
        if self.d_ff is None and isinstance(self.d_model, int):
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads != 0:
            lower = self.d_model - self.d_model % self.n_heads
            raise ValueError(
                f"ModelConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}: "
                f"choose d_model as a multiple of n_heads (e.g. {lower or self.n_heads} or {lower + self.n_heads})"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.causal, bool):
            raise ValueError(f"ModelConfig.causal must be true or false, got {self.causal!r}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(
                f"ModelConfig.attention={self.attention!r} is unknown: use one of {', '.join(ATTENTION_BACKENDS)}"
            )

    @property
    def head_dim(self) -> int:
        """d_k = d_model / n_heads, the width of one head's queries, keys and values."""
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build a config from a dict, rejecting keys that are not fields (a typo or another tool's file)."""
        if not isinstance(values, dict):
            raise ValueError(f"a model config must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown model config key(s) {', '.join(unknown)}: valid keys are {', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"model config is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        return cls.from_dict(values)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the config as JSON, atomically (a temp file renamed over the target)."""
        atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelConfig:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"model config {os.fspath(path)!r} does not exist") from None
        try:
            return cls.from_json(text)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None
