"""Pretraining: the loop (minilm.training.loop) on batches of a corpus, with accumulation and, under torchrun, DDP
(a copy of the model per process) or FSDP2 (`--fsdp`: the model sharded over them, minilm.training.sharding).

One optimizer step t:
    g = (1/A) sum_{a=1..A} grad L(batch_a)          A = grad_accum micro-batches (and, under DDP or FSDP, the
                                                    mean over processes, each holding a slice of batch_a)
    g = g * min(1, c / ||g||)                       gradient clipping at norm c
    theta = AdamW(theta, g, eta(t), lambda)         weight decay lambda only on weight matrices

L is the causal LM loss or the masked LM loss (minilm.training.objectives). The best checkpoint is the one with
the lowest validation loss; at the end the best weights are scored on the whole validation split.

Docs: docs/training.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from minilm.files import load_weights
from minilm.model import Transformer
from minilm.settings import override, setting
from minilm.tokenizer import Tokenizer
from minilm.training.corpus import Corpus, pack_lines, sample_blocks, sample_windows, token_byte_lengths
from minilm.training.evaluate import evaluate_causal, evaluate_masked
from minilm.training.loop import LoopConfig, Processes
from minilm.training.objectives import causal_lm_loss, mask_tokens, masked_lm_loss_on_selected
from minilm.training.run import BEST_WEIGHTS, TRAIN_ARGS, RunLoop
from minilm.training.sharding import Sharding

OBJECTIVES = ("causal", "masked")


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """How to pretrain (the model's sizes are in ModelConfig). batch_size counts sequences per optimizer step,
    summed over accumulation steps and processes, so a run means the same thing on 1 or N processes.

    The defaults are `python train.py`'s: chosen by measuring on 2 CPU cores (docs/training.md, docs/performance.md).
    The run's length is a time budget by default (minilm.training.budget); max_steps fixes a step count instead.
    """

    objective: str = setting("causal", "causal LM or masked LM", choices=OBJECTIVES)
    batch_size: int = setting(32, "sequences per step, over all processes", check="positive")
    grad_accum: int = setting(1, "micro-batches per step", check="positive")
    mask_prob: float = setting(0.15, "masked objective: share of tokens selected", check="probability")
    eval_windows: int = setting(64, "validation windows (or blocks) per periodic evaluation", check="positive")
    compile: bool = setting(
        False,
        "torch.compile the training step (one graph; 1.0-1.1x the steps per second on 2 CPU cores after ~25 s of "
        "compiling, docs/performance.md)",
    )
    fsdp: bool = setting(
        False,
        "under torchrun: shard parameters, gradients and optimizer state over the processes (FSDP2) instead of "
        "copying the model to each (DDP), for models that do not fit one device",
    )
    max_steps: int | None = override(
        LoopConfig,
        "max_steps",
        None,
        help="optimizer steps; given, it fixes the run's length instead of --time-budget (default: none, the time "
        "budget sizes the run)",
    )
    time_budget: str | None = override(
        LoopConfig,
        "time_budget",
        "10m",
        help="train for this long, e.g. 90s, 10m, 1h30m: the first steps measure this machine's speed and fix "
        "max-steps, the warm-up and the evaluation cadence; evaluating the best weights and the sample come after",
    )
    lr: float = override(LoopConfig, "lr", 2e-3)
    min_lr: float | None = override(LoopConfig, "min_lr", 2e-4)
    weight_decay: float = override(LoopConfig, "weight_decay", 0.1)
    beta2: float = override(LoopConfig, "beta2", 0.95)
    seed: int = override(LoopConfig, "seed", 0, help="seed of the weights, the data order and dropout")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch-size {self.batch_size} must be a multiple of grad-accum {self.grad_accum}")


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
        corrupted, labels = mask_tokens(
            input_ids, self.vocab_size, self.generator, attention_mask, self.config.mask_prob
        )
        return {"input_ids": corrupted, "attention_mask": attention_mask, "labels": labels}


class Trainer(RunLoop):
    """Pretrains `model` on `corpus`, writing checkpoints and metrics into `out_dir` (rank 0 only)."""

    kind = "pretrain"
    unit = "tokens"
    eval_split = "val"
    args_file = TRAIN_ARGS

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
        procs = Processes.from_env()
        if config.batch_size % (config.grad_accum * procs.world_size):
            raise ValueError(
                f"batch-size {config.batch_size} must be a multiple of grad-accum x processes "
                f"= {config.grad_accum * procs.world_size}"
            )
        sharding = Sharding(model, procs.device(config.device)) if config.fsdp else None
        super().__init__(model, config, out_dir, log, procs, sharding)
        if sharding is not None:
            held, total = sharding.share(model)
            self.log(f"FSDP2: rank 0 holds {held:,} of the {total:,} parameter numbers ({held / total:.1%})")
        self.loss_fn: nn.Module = PretrainingLoss(self.model, config.objective)
        if procs.world_size > 1 and sharding is None:
            self.loss_fn = DistributedDataParallel(
                self.loss_fn, device_ids=[self.device] if self.device.type == "cuda" else None
            )
        if config.compile:
            self.loss_fn = torch.compile(self.loss_fn)
        T = model.config.max_len
        self.batches = Batches(corpus, config, T, model.config.vocab_size)
        self.data_generator = self.batches.generator
        self.corpus, self.token_bytes = corpus, token_byte_lengths(tokenizer)
        if config.objective == "masked":
            self.val_blocks, self.val_lengths = pack_lines(corpus.val, T)
        if resume:
            self.load_checkpoint()

    def forward_backward(self) -> tuple[float, int]:
        """batch_size sequences in grad_accum micro-batches; under DDP or FSDP each process takes its slice of each."""
        cfg, procs = self.config, self.procs
        micro = cfg.batch_size // cfg.grad_accum
        share = micro // procs.world_size
        total = torch.zeros((), device=self.device)
        for a in range(cfg.grad_accum):
            batch = self.batches.next(micro)  # every process draws the same global micro-batch ...
            batch = {k: v[procs.rank * share : (procs.rank + 1) * share].to(self.device) for k, v in batch.items()}
            last = a == cfg.grad_accum - 1  # ... and keeps its slice; gradients are averaged on the last one
            if self.sharding is not None:
                self.sharding.gradient_sync(last)
            sync = nullcontext() if last or procs.world_size == 1 or self.sharding else self.loss_fn.no_sync()
            with sync:
                with self.autocast():
                    loss = self.loss_fn(**batch)
                (loss / cfg.grad_accum).backward()
            total += loss.detach() / cfg.grad_accum
        return total.item(), cfg.batch_size * self.model.config.max_len  # one host sync per step

    def evaluate(self, full: bool = False, model: Transformer | None = None) -> dict[str, float]:
        """Validation metrics: a fixed subset of eval_windows windows/blocks, or the whole split if `full`."""
        model = model or self.model
        limit = None if full else self.config.eval_windows
        if self.config.objective == "causal":
            return evaluate_causal(model, self.corpus.val, self.token_bytes, max_windows=limit)
        return evaluate_masked(
            model,
            self.val_blocks,
            self.val_lengths,
            max_blocks=limit,
            mask_prob=self.config.mask_prob,
            seed=self.config.seed,
        )

    def describe(self, metrics: dict[str, Any]) -> str:
        bpb = f" | {metrics['bits_per_byte']:.3f} bits/byte" if "bits_per_byte" in metrics else ""
        return f"val loss {metrics['loss']:.4f} | ppl {metrics['perplexity']:.2f}{bpb}"

    def upgrade_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A state written before the loop was shared (no "kind" key) in today's form."""
        if "kind" not in state and "best_val_loss" in state:
            return {**state, "kind": self.kind, "best": state["best_val_loss"], "seen": state["tokens_seen"]}
        return state

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Loop.fit, then the best weights scored on the whole validation split (summary["val"])."""
        summary = super().fit(stop_at)
        if summary.get("interrupted") or not self.procs.is_main:
            return summary
        best = Transformer(self.model.config).to(self.device)  # not a copy of self.model: that may be sharded
        load_weights(best, self.out_dir / BEST_WEIGHTS)
        summary["val"] = self.evaluate(full=True, model=best)
        self._write_metrics({"step": self.step, "split": "val_full_best", **summary["val"]})
        return summary
