"""Presets: named, documented sets of pretraining settings (data, sizes, vocabulary, schedule).

    settings = defaults <- the preset <- a --config file <- the resumed run's train_args.json <- the flags given

`train.py pretrain --preset NAME` starts from the preset's values; any flag given beside it overrides that one
value. The preset's name is written to train_args.json with every setting it led to. Paths in a preset are
relative to the project folder, so a preset works from any working directory.

Docs: docs/training.md (presets).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from minilm.settings import PROJECT

PATH_SETTINGS = ("data", "hold_out")
"""Settings that name files or folders: a preset writes them relative to the project folder."""


@dataclass(frozen=True)
class Preset:
    """One named set of settings: what it is for, and the settings it changes from the defaults."""

    name: str
    summary: str
    settings: Mapping[str, Any]

    def values(self) -> dict[str, Any]:
        """The preset's settings, with its paths made absolute (under the project folder)."""
        return {
            key: [str(PROJECT / p) for p in value] if key in PATH_SETTINGS else value
            for key, value in self.settings.items()
        }

    def describe(self) -> str:
        """One line: the name, the summary and what the preset sets."""
        sets = ", ".join(f"{k}={' '.join(v) if isinstance(v, tuple) else v}" for k, v in self.settings.items())
        return f"preset {self.name}: {self.summary}" + (f" ({sets})" if sets else "")


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        p.name: p
        for p in (
            Preset(
                "default",
                "python train.py's own run: Shakespeare, 4 layers x 256, BPE vocabulary 1024, 10 minutes",
                MappingProxyType({}),
            ),
            Preset(
                "tiny",
                "a smoke run in seconds (tests, trying a flag): 2 layers x 32, context 32, 30 steps",
                MappingProxyType(
                    {
                        "vocab_size": 300,
                        "d_model": 32,
                        "n_heads": 2,
                        "n_layers": 2,
                        "max_len": 32,
                        "batch_size": 8,
                        "max_steps": 30,
                        "time_budget": None,
                        "warmup_steps": 5,
                        "eval_every": 15,
                        "eval_windows": 4,
                        "log_every": 10,
                    }
                ),
            ),
            Preset(
                "sentiment-base",
                "the base for data/sentiment_rt: Shakespeare plus the task's unlabelled train sentences "
                "(task-adaptive pretraining), a vocabulary that keeps sentiment words whole, 30 minutes "
                "(docs/results.md)",
                MappingProxyType(
                    {
                        "data": ("data/tinyshakespeare.txt", "data/sentiment_rt"),
                        "hold_out": ("data/shakespeare_plays",),
                        "vocab_size": 8192,
                        "time_budget": "30m",
                        "max_steps": None,
                    }
                ),
            ),
        )
    }
)


def preset(name: str) -> Preset:
    """The preset called `name`; an unknown name is one line listing the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]
