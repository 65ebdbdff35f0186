"""Shared fixtures: tiny configs and a tokenizer trained once per session on a little text."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton's interpreter runs the FlashAttention kernel on CPU tensors (tests/test_flash_attention.py); it must be
    # switched on before Triton is imported, and minilm imports Triton only when the kernel first runs.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from minilm import ModelConfig, Tokenizer, Transformer

SAMPLE_TEXT = [
    "The quick brown fox jumps over the lazy dog.\n",
    "To be, or not to be, that is the question.\n",
    "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune.\n",
] * 20


def tiny_config(**overrides) -> ModelConfig:
    """A model small enough that a test runs in milliseconds; dropout off so outputs are deterministic."""
    values = dict(vocab_size=300, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=64, dropout=0.0)
    values.update(overrides)
    return ModelConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    return Transformer(tiny_config(**overrides), seed=seed).eval()


def random_ids(batch: int, length: int, vocab_size: int = 300, seed: int = 0) -> torch.Tensor:
    """Token ids drawn from the ordinary (non-special) part of the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(7, vocab_size, (batch, length), generator=g)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(texts=SAMPLE_TEXT, vocab_size=300)


@pytest.fixture(scope="session")
def sentiment_base():
    """(state_dict, config, tokenizer) of the synthetic-task base (tests/synthetic_task.py), pretrained once."""
    from synthetic_task import pretrained_base

    model, tok = pretrained_base()
    return {k: v.clone() for k, v in model.state_dict().items()}, model.config, tok


@pytest.fixture(scope="session")
def sentiment_task(tmp_path_factory):
    """The synthetic sentiment task folder (train 400 / dev 200)."""
    from synthetic_task import write_task

    return write_task(tmp_path_factory.mktemp("task") / "synthetic")
