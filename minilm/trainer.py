"""Pretraining: AdamW, warmup + cosine learning rate, clipping, accumulation, evaluation, early stopping,
atomic checkpoints and exact resume; data-parallel (DDP) when started by `torchrun`.

One optimizer step t:
    g = (1/A) sum_{a=1..A} grad L(batch_a)          A = grad_accum micro-batches (and, under DDP, the
                                                    mean over processes, each holding a slice of batch_a)
    g = g * min(1, c / ||g||)                       gradient clipping at norm c
    theta = AdamW(theta, g, eta(t), lambda)         weight decay lambda only on weight matrices

A run directory holds config.json, tokenizer.json, train_args.json (written by train.py),
model.safetensors (last weights), best.safetensors (lowest validation loss), train_state.pt
(everything needed to continue: weights, optimizer, step, random generators) and metrics.jsonl.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from minilm.checkpoint import atomic_write, load_state, load_weights, save_state, save_weights
from minilm.data import Corpus, pack_lines, sample_blocks, sample_windows, token_byte_lengths
from minilm.evaluate import evaluate_causal, evaluate_masked
from minilm.model import Transformer
from minilm.objectives import causal_lm_loss, mask_tokens, masked_lm_loss_on_selected
from minilm.tokenizer import Tokenizer

OBJECTIVES = ("causal", "masked")
PRECISIONS = ("fp32", "bf16")
STATE_FILE, LAST_WEIGHTS, BEST_WEIGHTS, METRICS_FILE = "train_state.pt", "model.safetensors", "best.safetensors", "metrics.jsonl"


def check_integers(config: Any, positive: tuple[str, ...], non_negative: tuple[str, ...]) -> None:
    """Each named field of `config` is an int (not a bool), >= 1 or >= 0; the message names the command-line flag."""
    for names, low, what in ((positive, 1, "a positive"), (non_negative, 0, "a non-negative")):
        for name in names:
            value = getattr(config, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name.replace('_', '-')} must be {what} integer, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the model's sizes are in ModelConfig). batch_size counts sequences per optimizer step,
    summed over accumulation steps and processes, so a run means the same thing on 1 or N processes."""

    objective: str = "causal"
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    mask_prob: float = 0.15
    eval_every: int = 200
    eval_windows: int = 64
    log_every: int = 20
    patience: int = 0
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        check_integers(self, positive=("batch_size", "grad_accum", "max_steps", "eval_every", "eval_windows", "log_every"),
                       non_negative=("warmup_steps", "patience", "seed"))
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"need lr > 0 and 0 <= min-lr <= lr, got lr={self.lr}, min-lr={self.min_lr}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch-size {self.batch_size} must be a multiple of grad-accum {self.grad_accum}")
        if self.grad_clip <= 0 or self.weight_decay < 0 or not 0 < self.mask_prob < 1:
            raise ValueError("need grad-clip > 0, weight-decay >= 0 and 0 < mask-prob < 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def learning_rate(step: int, config: TrainConfig) -> float:
    """eta(t) = eta_max (t+1)/W for t < W, then eta_min + (eta_max - eta_min) (1 + cos(pi (t-W)/(S-W))) / 2.

    W = warmup_steps, S = max_steps: a linear warm-up to the peak, then a cosine decay to eta_min at S.
    """
    W, S = config.warmup_steps, config.max_steps
    if step < W:
        return config.lr * (step + 1) / W
    progress = min(1.0, (step - W) / max(1, S - W))
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on the weight matrices of linear layers; none on biases, LayerNorm and embeddings."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW(betas=(beta1, beta2)) over `parameter_groups`; the learning rate is set every step."""
    return torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr,
                             betas=(config.beta1, config.beta2))


class PretrainingLoss(nn.Module):
    """The objective as one module, so DistributedDataParallel sees a single forward per micro-batch.

    causal: L = -(1/N) sum_i log p(x_i | x_<i)
    masked: L = -(1/|M|) sum_{i in M} log p(x_i | x_\\M), logits computed only at the positions in M
    """

    def __init__(self, model: Transformer, objective: str) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        if self.objective == "causal":
            return causal_lm_loss(self.model(input_ids, attention_mask=attention_mask), input_ids, attention_mask)
        hidden = self.model.hidden_states(input_ids, attention_mask=attention_mask)
        return masked_lm_loss_on_selected(hidden, self.model.tok_emb.weight, labels)


class Batches:
    """Training batches from one seeded generator: random windows (causal) or packed, masked blocks (masked).

    The generator is the whole data position: saving and restoring its state resumes the exact sequence.
    """

    def __init__(self, corpus: Corpus, config: TrainConfig, T: int, vocab_size: int) -> None:
        self.corpus, self.config, self.T, self.vocab_size = corpus, config, T, vocab_size
        self.generator = torch.Generator().manual_seed(config.seed)
        if config.objective == "causal":
            sample_windows(corpus.train, 1, T, torch.Generator())  # fails early if the split is too short
            self.blocks = self.lengths = None
        else:
            self.blocks, self.lengths = pack_lines(corpus.train, T)

    def next(self, batch_size: int) -> dict[str, Tensor]:
        if self.config.objective == "causal":
            return {"input_ids": sample_windows(self.corpus.train, batch_size, self.T, self.generator)}
        input_ids, attention_mask = sample_blocks(self.blocks, self.lengths, batch_size, self.generator)
        corrupted, labels = mask_tokens(input_ids, self.vocab_size, self.generator, attention_mask, self.config.mask_prob)
        return {"input_ids": corrupted, "attention_mask": attention_mask, "labels": labels}


@dataclass(frozen=True)
class Processes:
    """Where this process sits in a torchrun launch (rank 0 of 1 when started plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Processes:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def autocast(precision: str, device: torch.device):
    """bf16 autocast of the forward pass (parameters, gradients and optimiser state stay fp32), or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def truncate_metrics(path: Path, step: int) -> None:
    """Forget the metrics logged after `step` (a resumed run does those steps again)."""
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["step"] <= step]
        atomic_write(path, "".join(line + "\n" for line in kept))


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Trainer:
    """Trains `model` on `corpus`, writing checkpoints and metrics into `out_dir` (rank 0 only)."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        corpus: Corpus,
        config: TrainConfig,
        out_dir: str | os.PathLike[str],
        resume: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config, self.out_dir, self.procs = config, Path(out_dir), Processes.from_env()
        if config.batch_size % (config.grad_accum * self.procs.world_size):
            raise ValueError(f"batch-size {config.batch_size} must be a multiple of grad-accum x processes "
                             f"= {config.grad_accum * self.procs.world_size}")
        self.log = log if self.procs.is_main else (lambda _: None)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and self.procs.world_size > 1:
            self.device = torch.device("cuda", self.procs.local_rank)
        torch.manual_seed(config.seed + self.procs.rank)  # dropout draws from the global generator
        self.model = model.to(self.device).train()
        self.loss_fn: nn.Module = PretrainingLoss(self.model, config.objective)
        if self.procs.world_size > 1:
            self.loss_fn = DistributedDataParallel(self.loss_fn, device_ids=[self.device] if self.device.type == "cuda" else None)
        if config.compile:
            self.loss_fn = torch.compile(self.loss_fn)
        self.optimizer = make_optimizer(self.model, config)
        T = model.config.max_len
        self.batches = Batches(corpus, config, T, model.config.vocab_size)
        self.corpus, self.token_bytes = corpus, token_byte_lengths(tokenizer)
        if config.objective == "masked":
            self.val_blocks, self.val_lengths = pack_lines(corpus.val, T)
        self.step, self.best_val_loss, self.evals_since_best, self.tokens_seen = 0, math.inf, 0, 0
        if resume:
            self._load_state()

    # ---- one optimizer step ----------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.config.precision, self.device)

    def train_step(self) -> float:
        """One optimizer step over batch_size sequences; returns this process's mean loss."""
        cfg, procs = self.config, self.procs
        lr = learning_rate(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        micro = cfg.batch_size // cfg.grad_accum
        share = micro // procs.world_size
        total = 0.0
        for a in range(cfg.grad_accum):
            batch = self.batches.next(micro)  # every process draws the same global micro-batch ...
            batch = {k: v[procs.rank * share : (procs.rank + 1) * share].to(self.device) for k, v in batch.items()}
            last = a == cfg.grad_accum - 1  # ... and keeps its slice; DDP averages gradients on the last one
            sync = nullcontext() if last or procs.world_size == 1 else self.loss_fn.no_sync()
            with sync:
                with self._autocast():
                    loss = self.loss_fn(**batch)
                (loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += cfg.batch_size * self.model.config.max_len
        return total

    # ---- evaluation ------------------------------------------------------------------------------
    def evaluate(self, full: bool = False, model: Transformer | None = None) -> dict[str, float]:
        """Validation metrics: a fixed subset of eval_windows windows/blocks, or the whole split if `full`."""
        model = model or self.model
        limit = None if full else self.config.eval_windows
        if self.config.objective == "causal":
            return evaluate_causal(model, self.corpus.val, self.token_bytes, max_windows=limit)
        return evaluate_masked(model, self.val_blocks, self.val_lengths, max_blocks=limit,
                               mask_prob=self.config.mask_prob, seed=self.config.seed)

    # ---- the loop --------------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to max_steps (or early stop). `stop_at` ends the loop after that step without saving,
        like a crash, which is how tests check that --resume continues exactly."""
        cfg = self.config
        start_step, start_time, losses = self.step, time.perf_counter(), []
        stopped_early = False
        while self.step < cfg.max_steps and not stopped_early:
            if stop_at is not None and self.step >= stop_at:
                return {"step": self.step, "interrupted": True}
            losses.append(self.train_step())
            if self.step % cfg.log_every == 0 or self.step == 1:
                elapsed = time.perf_counter() - start_time
                per_step = elapsed / (self.step - start_step)
                tokens_per_s = (self.step - start_step) * cfg.batch_size * self.model.config.max_len / elapsed
                record = {"step": self.step, "split": "train", "loss": sum(losses) / len(losses),
                          "lr": learning_rate(self.step - 1, cfg), "tokens_per_s": tokens_per_s,
                          "elapsed_s": elapsed, "tokens": self.tokens_seen}
                losses = []
                self.log(f"step {self.step:>6}/{cfg.max_steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
                         f"{tokens_per_s / 1e3:.1f}k tok/s | ETA {format_duration(per_step * (cfg.max_steps - self.step))}")
                self._write_metrics(record)
            if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                stopped_early = self._evaluate_and_checkpoint(time.perf_counter() - start_time)
        summary = {"step": self.step, "stopped_early": stopped_early, "best_val_loss": self.best_val_loss}
        if self.procs.is_main:
            best = copy.deepcopy(self.model)
            load_weights(best, self.out_dir / BEST_WEIGHTS)
            summary["val"] = self.evaluate(full=True, model=best)
            self._write_metrics({"step": self.step, "split": "val_full_best", **summary["val"]})
        return summary

    def _evaluate_and_checkpoint(self, elapsed: float) -> bool:
        """Evaluate, keep the best weights, write the training state; True when patience ran out."""
        stop = torch.zeros(1)
        if self.procs.is_main:
            metrics = self.evaluate()
            improved = metrics["loss"] < self.best_val_loss
            if improved:
                self.best_val_loss, self.evals_since_best = metrics["loss"], 0
                save_weights(self.model, self.out_dir / BEST_WEIGHTS, {"step": str(self.step), "val_loss": repr(metrics["loss"])})
            else:
                self.evals_since_best += 1
            bpb = f" | {metrics['bits_per_byte']:.3f} bits/byte" if "bits_per_byte" in metrics else ""
            self.log(f"eval step {self.step}: val loss {metrics['loss']:.4f} | ppl {metrics['perplexity']:.2f}{bpb}"
                     + (" | best" if improved else f" | no improvement for {self.evals_since_best} evals"))
            self._write_metrics({"step": self.step, "split": "val", "elapsed_s": elapsed, **metrics})
            if self.config.patience and self.evals_since_best >= self.config.patience:
                self.log(f"early stop: validation loss has not improved for {self.config.patience} evaluations")
                stop[0] = 1
        self._save_state()
        if self.procs.world_size > 1:
            dist.broadcast(stop, src=0)
        return bool(stop.item())

    # ---- files -----------------------------------------------------------------------------------
    def _write_metrics(self, record: dict[str, Any]) -> None:
        if self.procs.is_main:
            with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _save_state(self) -> None:
        rng_states = [torch.get_rng_state()]
        if self.procs.world_size > 1:  # each process's dropout generator, so a resumed DDP run is exact too
            gathered: list[Any] = [None] * self.procs.world_size
            dist.all_gather_object(gathered, torch.get_rng_state())
            rng_states = gathered
        if not self.procs.is_main:
            return
        save_weights(self.model, self.out_dir / LAST_WEIGHTS, {"step": str(self.step)})
        save_state({
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_generator": self.batches.generator.get_state(),
            "rng_states": rng_states,
            "best_val_loss": self.best_val_loss,
            "evals_since_best": self.evals_since_best,
            "tokens_seen": self.tokens_seen,
            "world_size": self.procs.world_size,
        }, self.out_dir / STATE_FILE)

    def _load_state(self) -> None:
        state = load_state(self.out_dir / STATE_FILE)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ValueError(f"the saved run in {self.out_dir} has a different model size; resume it with the same "
                             f"size flags, or start a new run in another --out ({str(e).splitlines()[0]})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.generator.set_state(state["data_generator"])
        rng_states = state["rng_states"]
        if len(rng_states) == self.procs.world_size:
            torch.set_rng_state(rng_states[self.procs.rank])
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.best_val_loss, self.evals_since_best = state["best_val_loss"], state["evals_since_best"]
        if self.procs.is_main:
            truncate_metrics(self.out_dir / METRICS_FILE, self.step)
        self.log(f"resumed from step {self.step}")
