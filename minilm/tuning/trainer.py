"""Tuning: the loop (minilm.training.loop) on a task's train split, with early stopping on dev macro-F1.

    theta_tuned <- AdamW(theta_tuned, grad L),   L = cross-entropy(softmax(s(x)), y)   over the class scores s

Only `TunedModel.trainable()` reaches the optimiser, so a frozen parameter cannot change (no gradient,
no weight decay, no optimiser state: what makes prompt and prefix tuning cheap in memory). After every
evaluation the best model (by dev macro-F1) is saved in OUT/, the current one with the optimiser in
OUT/last/ and OUT/train_state.pt, so `resume=True` continues bitwise where an interrupted run stopped.
With `train_per_label` k > 0 the run sees a small labelled budget instead of the whole train split: k examples of
every label, drawn with the run's seed (`per_label_sample`).

Docs: docs/tuning.md (the only-trainable-parameters rule; the tuning loop).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from minilm.settings import override, setting
from minilm.tokenizer import Tokenizer
from minilm.training.budget import Plan
from minilm.training.loop import LoopConfig
from minilm.tuning.metrics import classification_report
from minilm.tuning.registry import DEFAULT_LR
from minilm.tuning.tasks import Example, Task
from minilm.tuning.tuned import ARGS_FILE, TunedModel
from minilm.tuning.tuned_loop import TunedLoop

SUMMARY = ("loss", "accuracy", "macro_f1", "n")


@dataclass(frozen=True)
class TuneConfig(LoopConfig):
    """How to tune. lr None takes the method's measured default (minilm.tuning.registry); the schedule is a linear
    warm-up then a cosine decay to min_lr, as in pretraining. The run is `epochs` passes over the train split
    (`for_task`) unless max_steps or time_budget sizes it (docs/tuning.md: the protocol)."""

    batch_size: int = setting(16, "examples per step", check="positive")
    eval_batch_size: int = setting(64, "examples per forward pass when evaluating", check="positive")
    max_eval_examples: int = setting(0, "evaluate on the first N dev examples only; 0 = all", check="non_negative")
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass: less memory, more time")
    lr: float | None = override(LoopConfig, "lr", None)
    max_steps: int | None = override(
        LoopConfig,
        "max_steps",
        None,
        help="optimizer steps; given, it fixes the run's length instead of --epochs (default: none, --epochs sizes "
        "the run)",
    )
    epochs: float | None = setting(
        3.0,
        "passes over the train split: max-steps = ceil(epochs x train examples / batch size), unless --max-steps or "
        "--time-budget is given (docs/tuning.md: the protocol)",
        check="positive",
        type=float,
    )
    warmup_steps: int = override(LoopConfig, "warmup_steps", 10)
    eval_every: int = override(LoopConfig, "eval_every", 100)
    log_every: int = override(LoopConfig, "log_every", 10)
    patience: int = override(
        LoopConfig, "patience", 3, help="stop after this many evaluations without a better dev macro-F1; 0 = never"
    )
    seed: int = override(LoopConfig, "seed", 0, help="seed of the new parameters and the data order")
    train_per_label: int = setting(
        0,
        "a small labelled budget: train on K examples of every label, drawn from the train split with --seed; "
        "0 = the whole split",
        check="non_negative",
        metavar="K",
    )

    def sized(self) -> bool:
        """A step count, a time budget, or passes over the train split (which `for_task` turns into steps)."""
        return super().sized() or self.epochs is not None

    def train_examples(self, task: Task) -> list[Example]:
        """The examples the run trains on: the train split, or its `per_label_sample` of train_per_label per label."""
        return per_label_sample(task.split("train"), self.train_per_label, self.seed, task.labels)

    def for_method(self, method: str) -> TuneConfig:
        """This config with lr filled in: the method's default when none was given."""
        return self if self.lr is not None else type(self)(**{**self.to_dict(), "lr": DEFAULT_LR[method]})

    def for_task(self, n_train: int) -> TuneConfig:
        """This config with max_steps filled in from `epochs` over `n_train` examples, unless a step count or a time
        budget sizes the run."""
        if self.max_steps is not None or self.time_budget is not None:
            return self
        return type(self)(**{**self.to_dict(), "max_steps": steps_for_epochs(self.epochs, n_train, self.batch_size)})


def per_label_sample(examples: list[Example], k: int, seed: int, labels: list[str] | None = None) -> list[Example]:
    """D_k = the first k of a seeded permutation of {(x, y) in D : y = c}, for every label c: k per label, in the
    split's order; k = 0: all of D. Drawn with its own generator, so one seed gives one sample everywhere.

    labels: the task's label names, for the error when a label has fewer than k examples.
    """
    if k == 0:
        return list(examples)
    generator = torch.Generator().manual_seed(seed)
    by_label: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_label.setdefault(e.label, []).append(i)
    chosen = []
    for label in range(len(labels)) if labels else sorted(by_label):
        rows = by_label.get(label, [])
        if len(rows) < k:
            name = labels[label] if labels else str(label)
            raise ValueError(
                f"--train-per-label {k}: label {name!r} has only {len(rows)} train examples; give {len(rows)} or fewer"
            )
        chosen += [rows[i] for i in torch.randperm(len(rows), generator=generator)[:k].tolist()]
    return [examples[i] for i in sorted(chosen)]


def steps_for_epochs(epochs: float, n_examples: int, batch_size: int) -> int:
    """S = ceil(epochs x N / B): the optimizer steps that pass `epochs` times over N examples in batches of B."""
    return max(1, math.ceil(epochs * n_examples / batch_size))


@torch.no_grad()
def predict(model: TunedModel, tokenizer: Tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Class probabilities softmax(s(x)) (N, C) for every text, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = model.encode(tokenizer, texts[i : i + batch_size])
            out.append(torch.softmax(model(batch["input_ids"], batch["attention_mask"]).float(), dim=-1).cpu())
        return torch.cat(out)
    finally:
        model.train(was_training)


def evaluate(model: TunedModel, tokenizer: Tokenizer, examples: list[Example], batch_size: int = 64) -> dict[str, Any]:
    """Mean cross-entropy and `classification_report` of the model on `examples`."""
    probs = predict(model, tokenizer, [e.text for e in examples], batch_size)
    gold = torch.tensor([e.label for e in examples])
    report = classification_report(probs.argmax(dim=-1).tolist(), gold.tolist(), model.labels)
    report["loss"] = float(-probs[torch.arange(len(gold)), gold].clamp_min(1e-12).log().mean())
    return report


class TuneTrainer(TunedLoop):
    """Tunes `model` on `task`'s train split, evaluating on dev; writes into `out_dir`."""

    kind = "tune"
    metric = "macro_f1"
    higher_is_better = True
    args_file = ARGS_FILE

    def __init__(
        self,
        model: TunedModel,
        tokenizer: Tokenizer,
        task: Task,
        config: TuneConfig,
        out_dir: str | os.PathLike[str],
        resume: bool = False,
        log: Callable[[str], None] = print,
        extra_metadata: dict[str, Any] | None = None,
    ) -> None:
        self.train_examples, self.dev_examples = config.train_examples(task), task.split("dev")
        config = config.for_method(model.method.name).for_task(len(self.train_examples))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(model, config, out_dir, log)
        self.tokenizer, self.task, self.extra = tokenizer, task, extra_metadata or {}
        self.model.base.gradient_checkpointing = config.gradient_checkpointing
        if config.max_eval_examples:
            self.dev_examples = self.dev_examples[: config.max_eval_examples]
        self.generator = torch.Generator().manual_seed(config.seed)
        self.order, self.position = torch.randperm(len(self.train_examples), generator=self.generator), 0
        if resume:
            self.load_checkpoint()

    def next_batch(self) -> list[Example]:
        """The next batch_size examples of a seeded shuffle, reshuffled at every epoch."""
        batch = []
        while len(batch) < self.config.batch_size:
            if self.position == len(self.order):
                self.order, self.position = torch.randperm(len(self.train_examples), generator=self.generator), 0
            take = self.order[self.position : self.position + self.config.batch_size - len(batch)]
            batch += [self.train_examples[i] for i in take.tolist()]
            self.position += len(take)
        return batch

    def forward_backward(self) -> tuple[float, int]:
        batch = self.next_batch()
        inputs = self.model.encode(self.tokenizer, [e.text for e in batch])
        labels = torch.tensor([e.label for e in batch], device=self.device)
        with self.autocast():
            scores = self.model(inputs["input_ids"], inputs["attention_mask"])
        loss = F.cross_entropy(scores.float(), labels)
        loss.backward()
        return loss.item(), len(batch)

    def evaluate(self) -> dict[str, Any]:
        with self.autocast():
            return evaluate(self.model, self.tokenizer, self.dev_examples, self.config.eval_batch_size)

    def describe(self, metrics: dict[str, Any]) -> str:
        return (
            f"dev loss {metrics['loss']:.4f} | accuracy {metrics['accuracy']:.4f} | macro-F1 {metrics['macro_f1']:.4f}"
        )

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: metrics[k] for k in SUMMARY}

    def data_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def restore_data(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]

    def planned(self, plan: Plan) -> None:
        """The time budget's decision in tune_args.json and in the settings every saved tuned.json carries."""
        super().planned(plan)
        if isinstance(self.extra.get("tune_args"), dict):
            self.extra["tune_args"] = {**self.extra["tune_args"], **plan.settings()}

    def upgrade_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A state written before the loop was shared (no "kind" key) in today's form."""
        if "kind" not in state and "trainable" in state:
            return {**state, "kind": self.kind, "rng_states": [state["rng_state"]], "seen": state["examples_seen"]}
        return state
