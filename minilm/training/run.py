"""The run directory: the files `pretrain` (and `instruct`) write, and how a run is read back.

    config.json          the model's sizes (ModelConfig)
    tokenizer.json       the tokenizer
    train_args.json      every setting of the run (instruct_args.json for an instruction-tuned run)
    model.safetensors    the weights at the last checkpoint
    best.safetensors     the weights with the best evaluation
    train_state.pt       what --resume needs: weights, optimizer, step, generators, data position
    train_state.dcp/     with --fsdp: the sharded weights and optimizer state (torch.distributed.checkpoint)
    metrics.jsonl        one JSON object per progress line and per evaluation
    minilm.json          which command wrote the folder (minilm.outputs)

`RunLoop` is the loop for a model trained whole into such a folder (pretraining, instruction tuning).

Docs: docs/training.md (checkpoints, early stopping and exact resume), docs/cli.md (output folders).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from minilm.files import atomic_write, load_weights, read_json, save_tensors
from minilm.model import ModelConfig, Transformer
from minilm.outputs import OutputKind
from minilm.tokenizer import Tokenizer
from minilm.training.device import resolve_device
from minilm.training.loop import METRICS_FILE, STATE_FILE, Loop
from minilm.training.sharding import SHARDS

CONFIG, TOKENIZER, TRAIN_ARGS = "config.json", "tokenizer.json", "train_args.json"
LAST_WEIGHTS, BEST_WEIGHTS = "model.safetensors", "best.safetensors"
RUN_FILES = (CONFIG, TOKENIZER, LAST_WEIGHTS, BEST_WEIGHTS, STATE_FILE, f"{SHARDS}/", METRICS_FILE, "loss.png")

PRETRAIN = OutputKind("pretrain", "a run", (*RUN_FILES, TRAIN_ARGS), legacy=(CONFIG, TRAIN_ARGS))
INSTRUCT = OutputKind("instruct", "an instruction-tuned run", (*RUN_FILES, "instruct_args.json"))

LEGACY_KEYS = {
    "vocab": "vocab_size",
    "layers": "n_layers",
    "width": "d_model",
    "heads": "n_heads",
    "ffn": "d_ff",
    "context": "max_len",
}
"""train_args.json keys of runs written before the settings took the names of ModelConfig's fields."""


def read_train_args(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a run was trained with (empty when the folder has no train_args.json)."""
    path = Path(folder) / TRAIN_ARGS
    if not path.is_file():
        return {}
    args = read_json(path, "run settings")
    return {LEGACY_KEYS.get(k, k): v for k, v in args.items()}


def write_run_files(
    folder: Path, tokenizer: Tokenizer, config: ModelConfig, args: dict[str, Any], args_file: str = TRAIN_ARGS
) -> None:
    """The files that describe a run: tokenizer.json, config.json and its settings, each atomically."""
    tokenizer.save(folder / TOKENIZER)
    config.save(folder / CONFIG)
    atomic_write(folder / args_file, json.dumps(args, indent=2) + "\n")


def load_run(
    run: str | os.PathLike[str], weights: str = "best", device: str = "auto"
) -> tuple[Transformer, Tokenizer, dict[str, Any]]:
    """(model in eval mode, tokenizer, settings) of a run directory; one-line errors for missing or damaged files.

    weights: "best" (best.safetensors, or model.safetensors when the run never evaluated) or "last".
    """
    folder = Path(run)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"run directory {run} does not exist: train one with `python train.py pretrain --out {run}`"
        )
    if not (folder / CONFIG).is_file():
        raise ValueError(f"{run} holds no model (no {CONFIG}): train one with `python train.py pretrain --out {run}`")
    config = ModelConfig.load(folder / CONFIG)
    path = folder / (BEST_WEIGHTS if weights == "best" else LAST_WEIGHTS)
    if weights == "best" and not path.is_file() and (folder / LAST_WEIGHTS).is_file():
        path = folder / LAST_WEIGHTS
    if not path.is_file():
        raise ValueError(
            f"{run} holds no trained weights ({path.name} is missing): finish or resume its training first"
        )
    model = Transformer(config)
    load_weights(model, path)
    tokenizer = Tokenizer.load(folder / TOKENIZER)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(
            f"{run}: {TOKENIZER} has {tokenizer.vocab_size} tokens but {CONFIG} says vocab_size="
            f"{config.vocab_size}; they come from different runs"
        )
    return model.to(resolve_device(device)).eval(), tokenizer, read_train_args(folder)


class RunLoop(Loop):
    """A loop that trains a whole Transformer into a run folder: best.safetensors when the metric improves,
    model.safetensors and train_state.pt (the weights and `data_generator`, the data position) at every checkpoint."""

    data_generator: torch.Generator

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's whole state dict (of a sharded model: gathered on rank 0, {} elsewhere; every process calls)."""
        return self.sharding.full_weights(self.model) if self.sharding is not None else self.model.state_dict()

    def save_best(self, metrics: dict[str, Any]) -> None:
        weights = self.weights()
        if self.procs.is_main:
            save_tensors(
                weights, self.out_dir / BEST_WEIGHTS, {"step": str(self.step), self.metric: repr(metrics[self.metric])}
            )

    def write_checkpoint(self) -> None:
        weights = self.weights()
        if self.procs.is_main:
            save_tensors(weights, self.out_dir / LAST_WEIGHTS, {"step": str(self.step)})

    def checkpoint_state(self) -> dict[str, Any]:
        """The data position and, unless the model is sharded (its shards go through DCP), the weights."""
        model = {"model": self.model.state_dict()} if self.sharding is None else {}
        return {**model, "data_generator": self.data_generator.get_state()}

    def restore(self, state: dict[str, Any]) -> None:
        if self.sharding is None:
            try:
                self.model.load_state_dict(state["model"])
            except RuntimeError as e:
                raise ValueError(
                    f"the saved run in {self.out_dir} has a different model size; resume it with the same "
                    f"size flags, or start a new run in another --out ({str(e).splitlines()[0]})"
                ) from None
        self.data_generator.set_state(state["data_generator"])
