"""The loop for a tuned model: what is saved is the tuned folder (only the tuned tensors), never the base.

    best on the metric   ->  OUT/tuned.json, tuned.safetensors (+ reparam.safetensors)
    every checkpoint     ->  OUT/last/ (the same files) and OUT/train_state.pt (the trainable tensors, the optimiser,
                             the generators and the data position), so `resume=True` continues bitwise

`tune` (a classification task) and `instruct --method ...` (instructions) both train a TunedModel through it; each
says how its data position is kept (`data_state`, `restore_data`).

Docs: docs/tuning.md (saving and loading).
"""

from __future__ import annotations

from typing import Any

import torch

from minilm.training.loop import Loop
from minilm.tuning.tuned import LAST_DIR, TunedModel


class TunedLoop(Loop):
    """A Loop over a TunedModel (`self.model`); `self.extra` is written into every tuned.json it saves."""

    model: TunedModel
    extra: dict[str, Any]

    def save_best(self, metrics: dict[str, Any]) -> None:
        self.model.save(self.out_dir, {**self.extra, "step": self.step, "dev": self.record(metrics)})

    def write_checkpoint(self) -> None:
        self.model.save(self.out_dir / LAST_DIR, {**self.extra, "step": self.step})

    def data_state(self) -> dict[str, Any]:
        """Where the data stands (generators, order, position), saved in train_state.pt."""
        return {}

    def restore_data(self, state: dict[str, Any]) -> None:
        """Put the data back where `data_state` found it."""

    def checkpoint_state(self) -> dict[str, Any]:
        return {"trainable": {n: p.detach().cpu() for n, p in self.model.trainable().items()}, **self.data_state()}

    def restore(self, state: dict[str, Any]) -> None:
        trainable = self.model.trainable()
        if set(state["trainable"]) != set(trainable):
            raise ValueError(
                f"the tuning run in {self.out_dir} trained other parameters (another method or settings); "
                "resume it with the same flags, or start a new run in another --out"
            )
        with torch.no_grad():
            for name, p in trainable.items():
                if state["trainable"][name].shape != p.shape:
                    raise ValueError(
                        f"the tuning run in {self.out_dir} has {name} of shape "
                        f"{tuple(state['trainable'][name].shape)}, this setup {tuple(p.shape)}: "
                        "resume with the same flags"
                    )
                p.copy_(state["trainable"][name])
        self.restore_data(state)
