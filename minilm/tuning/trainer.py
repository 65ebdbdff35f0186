"""The tuning loop: AdamW on the trainable parameters only, early stopping on the dev split.

    theta_tuned <- AdamW(theta_tuned, grad L),   L = cross-entropy(softmax(s(x)), y)   over the class scores s

Only `TunedModel.trainable()` reaches the optimiser, so a frozen parameter cannot change (no gradient,
no weight decay, no optimiser state: what makes prompt and prefix tuning cheap in memory). After every
evaluation the best model (by dev macro-F1) is saved in OUT/, the current one with the optimiser in
OUT/last/ and OUT/train_state.pt, so `resume=True` continues bitwise where an interrupted run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from minilm.checkpoint import load_state, save_state
from minilm.metrics import classification_report
from minilm.tasks import Example, Task
from minilm.tokenizer import Tokenizer
from minilm.trainer import autocast, check_integers, format_duration, learning_rate, truncate_metrics
from minilm.tuning.tuned import TunedModel

STATE_FILE, METRICS_FILE, LAST_DIR = "train_state.pt", "metrics.jsonl", "last"


@dataclass(frozen=True)
class TuneConfig:
    """How to tune. lr follows a linear warm-up then a cosine decay to min_lr (as in pretraining)."""

    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 10
    max_steps: int = 300
    batch_size: int = 16
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_batch_size: int = 64
    max_eval_examples: int = 0
    """0: the whole dev split at every evaluation."""
    patience: int = 4
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    """fp32, or bf16 autocast for the forward pass (parameters, gradients and optimiser state stay fp32)."""
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        check_integers(self, positive=("max_steps", "batch_size", "eval_every", "eval_batch_size", "log_every"),
                       non_negative=("warmup_steps", "patience", "seed", "max_eval_examples"))
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"need lr > 0 and 0 <= min-lr <= lr, got lr={self.lr}, min-lr={self.min_lr}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.grad_clip <= 0 or self.weight_decay < 0:
            raise ValueError("need grad-clip > 0 and weight-decay >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@torch.no_grad()
def predict(model: TunedModel, tokenizer: Tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Class probabilities softmax(s(x)) (N, C) for every text, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = model.encode(tokenizer, texts[i: i + batch_size])
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


class TuneTrainer:
    """Tunes `model` on `task`'s train split, evaluating on dev; writes into `out_dir`."""

    def __init__(self, model: TunedModel, tokenizer: Tokenizer, task: Task, config: TuneConfig,
                 out_dir: str | os.PathLike[str], resume: bool = False, log: Callable[[str], None] = print,
                 extra_metadata: dict[str, Any] | None = None) -> None:
        self.model, self.tokenizer, self.task, self.config = model, tokenizer, task, config
        self.out_dir, self.log, self.extra = Path(out_dir), log, extra_metadata or {}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(config.device)
        self.model.to(self.device).train()
        self.model.base.gradient_checkpointing = config.gradient_checkpointing
        torch.manual_seed(config.seed)  # dropout draws from the global generator
        self.train_examples, self.dev_examples = task.split("train"), task.split("dev")
        if config.max_eval_examples:
            self.dev_examples = self.dev_examples[: config.max_eval_examples]
        trainable = model.trainable()
        if not trainable:
            raise ValueError("nothing to train: the method left every parameter frozen")
        decay = [p for n, p in trainable.items() if p.dim() >= 2 and not n.startswith("method.")]
        no_decay = [p for n, p in trainable.items() if not (p.dim() >= 2 and not n.startswith("method."))]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.order, self.position = torch.randperm(len(self.train_examples), generator=self.generator), 0
        self.step, self.best, self.evals_since_best, self.examples_seen = 0, -math.inf, 0, 0
        self.train_seconds = 0.0
        """Time spent in training steps (evaluations and checkpoints excluded), this process only."""
        if resume:
            self._load_state()

    def next_batch(self) -> list[Example]:
        """The next batch_size examples of a seeded shuffle, reshuffled at every epoch."""
        batch = []
        while len(batch) < self.config.batch_size:
            if self.position == len(self.order):
                self.order, self.position = torch.randperm(len(self.train_examples), generator=self.generator), 0
            take = self.order[self.position: self.position + self.config.batch_size - len(batch)]
            batch += [self.train_examples[i] for i in take.tolist()]
            self.position += len(take)
        return batch

    def _autocast(self):
        return autocast(self.config.precision, self.device)

    def train_step(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.config)
        batch = self.next_batch()
        inputs = self.model.encode(self.tokenizer, [e.text for e in batch])
        labels = torch.tensor([e.label for e in batch], device=self.device)
        with self._autocast():
            scores = self.model(inputs["input_ids"], inputs["attention_mask"])
        loss = F.cross_entropy(scores.float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.model.trainable().values()), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.examples_seen += len(batch)
        return loss.item()

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to max_steps or until dev macro-F1 stops improving for `patience` evaluations.
        `stop_at` ends the loop after that step without saving, like a crash (for resume tests)."""
        cfg = self.config
        start_step, start, losses = self.step, time.perf_counter(), []
        stopped_early = False
        while self.step < cfg.max_steps and not stopped_early:
            if stop_at is not None and self.step >= stop_at:
                return {"step": self.step, "interrupted": True}
            step_start = time.perf_counter()
            losses.append(self.train_step())
            self.train_seconds += time.perf_counter() - step_start
            if self.step % cfg.log_every == 0 or self.step == 1:
                elapsed = time.perf_counter() - start
                per_step = elapsed / (self.step - start_step)
                record = {"step": self.step, "split": "train", "loss": sum(losses) / len(losses),
                          "lr": learning_rate(self.step - 1, cfg), "examples_per_s": (self.step - start_step) * cfg.batch_size / elapsed,
                          "step_s": per_step, "elapsed_s": elapsed}
                losses = []
                self.log(f"step {self.step:>5}/{cfg.max_steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
                         f"{record['examples_per_s']:.0f} ex/s | ETA {format_duration(per_step * (cfg.max_steps - self.step))}")
                self._write_metrics(record)
            if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                stopped_early = self._evaluate_and_checkpoint()
        return {"step": self.step, "stopped_early": stopped_early, "best_dev_macro_f1": self.best}

    def _evaluate_and_checkpoint(self) -> bool:
        with self._autocast():
            report = evaluate(self.model, self.tokenizer, self.dev_examples, self.config.eval_batch_size)
        improved = report["macro_f1"] > self.best
        if improved:
            self.best, self.evals_since_best = report["macro_f1"], 0
            self.model.save(self.out_dir, {**self.extra, "step": self.step, "dev": _summary(report)})
        else:
            self.evals_since_best += 1
        self.log(f"eval step {self.step}: dev loss {report['loss']:.4f} | accuracy {report['accuracy']:.4f} | "
                 f"macro-F1 {report['macro_f1']:.4f}" + (" | best" if improved else f" | no improvement for {self.evals_since_best} evals"))
        self._write_metrics({"step": self.step, "split": "dev", **_summary(report)})
        self._save_state()
        if self.config.patience and self.evals_since_best >= self.config.patience:
            self.log(f"early stop: dev macro-F1 has not improved for {self.config.patience} evaluations")
            return True
        return False

    def _write_metrics(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _save_state(self) -> None:
        self.model.save(self.out_dir / LAST_DIR, {**self.extra, "step": self.step})
        save_state({
            "step": self.step,
            "trainable": {n: p.detach().cpu() for n, p in self.model.trainable().items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(), "order": self.order, "position": self.position,
            "rng_state": torch.get_rng_state(),
            "best": self.best, "evals_since_best": self.evals_since_best, "examples_seen": self.examples_seen,
        }, self.out_dir / STATE_FILE)

    def _load_state(self) -> None:
        state = load_state(self.out_dir / STATE_FILE)
        trainable = self.model.trainable()
        if set(state["trainable"]) != set(trainable):
            raise ValueError(f"the tuning run in {self.out_dir} trained other parameters (another method or settings); "
                             "resume it with the same flags, or start a new run in another --out")
        with torch.no_grad():
            for name, p in trainable.items():
                if state["trainable"][name].shape != p.shape:
                    raise ValueError(f"the tuning run in {self.out_dir} has {name} of shape {tuple(state['trainable'][name].shape)}, "
                                     f"this setup {tuple(p.shape)}: resume with the same flags")
                p.copy_(state["trainable"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]
        torch.set_rng_state(state["rng_state"])
        self.step, self.best = state["step"], state["best"]
        self.evals_since_best, self.examples_seen = state["evals_since_best"], state["examples_seen"]
        truncate_metrics(self.out_dir / METRICS_FILE, self.step)
        self.log(f"resumed from step {self.step}")


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("loss", "accuracy", "macro_f1", "n")}
