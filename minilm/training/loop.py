"""The one training loop: what pretraining, tuning and instruction tuning share, written once.

    for t in 0 .. S-1:
        eta = eta(t)                                   warm-up + cosine (minilm.training.optimizer)
        g = grad L(batch_t)                            the subclass's forward_backward (autocast, accumulation, DDP)
        g = g * min(1, c / ||g||)                      clipping at grad_clip
        theta = AdamW(theta, g, eta, lambda)           the one weight-decay rule: matrices of linear layers only
        every log_every steps:  a progress line (step, loss, lr, tokens or examples per second, ETA) and metrics.jsonl
        every eval_every steps: evaluate; keep the best checkpoint; write the training state; stop early after
                                `patience` evaluations without a better value of the chosen metric

S = max_steps, or, with a time budget instead, the steps that fit in it on this machine: the first steps are timed
and undone, then S, the warm-up and the evaluation cadence are fixed (minilm.training.budget) and recorded in the
run's settings file, so the run and its resumption are the fixed-step run of that length.

A subclass says how one step's loss is computed (`forward_backward`), how it evaluates, what "best" saves and what
else its checkpoint holds (the data position). Every file is written atomically, and the training state holds the
weights, the optimizer, the step, the random generators and the data position, so `resume=True` continues bitwise
where an interrupted run stopped. Under `torchrun` (pretraining) only rank 0 evaluates and writes; with `--fsdp` every
process evaluates (and saves its shards), and still only rank 0 writes the other files.

Docs: docs/training.md (one optimizer step; checkpoints, early stopping and exact resume).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn

from minilm.files import atomic_write, load_state, read_json, save_state
from minilm.settings import check_fields, setting
from minilm.training.budget import Plan, duration, format_duration, measuring_seconds, parse_duration, plan_steps
from minilm.training.device import DEVICES, PRECISIONS, autocast, resolve_device, resolve_precision
from minilm.training.optimizer import learning_rate, make_optimizer
from minilm.training.sharding import Sharding

STATE_FILE, METRICS_FILE = "train_state.pt", "metrics.jsonl"


@dataclass(frozen=True)
class LoopConfig:
    """What every loop reads. Each trainer's config subclasses it and sets its own defaults (settings.override)."""

    max_steps: int | None = setting(
        2000, "optimizer steps; given, it fixes the run's length (no time budget)", check="positive", type=int
    )
    time_budget: str | None = setting(
        None,
        "train for this long, e.g. 90s, 10m, 1h30m: the first steps measure this machine's speed and fix max-steps, "
        "the warm-up and the evaluation cadence (used when max-steps is not given)",
        type=str,
        parse=duration,
        metavar="DURATION",
    )
    lr: float = setting(1e-3, "peak learning rate", check="positive")
    min_lr: float | None = setting(
        0.0, "learning rate at the end of the cosine decay", check="non_negative", type=float
    )
    warmup_steps: int = setting(100, "linear warm-up steps", check="non_negative")
    weight_decay: float = setting(
        0.0, "AdamW weight decay on the weight matrices of linear layers", check="non_negative"
    )
    beta1: float = setting(0.9, "AdamW beta1", check="probability")
    beta2: float = setting(0.999, "AdamW beta2", check="probability")
    grad_clip: float = setting(1.0, "largest gradient norm; larger gradients are scaled down to it", check="positive")
    eval_every: int = setting(200, "steps between evaluations and checkpoints", check="positive")
    log_every: int = setting(20, "steps between progress lines", check="positive")
    patience: int = setting(0, "stop after this many evaluations without improvement; 0 = never", check="non_negative")
    seed: int = setting(0, "seed of the data order and dropout", check="non_negative")
    device: str = setting("auto", "auto = cuda when available", choices=DEVICES)
    precision: str = setting(
        "auto", "bf16 autocast or fp32; auto = bf16 where the CPU/GPU computes bf16 natively", choices=PRECISIONS
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.sized():
            raise ValueError("give --max-steps (a fixed step count) or --time-budget (the steps that fit the time)")
        if self.time_budget is not None:
            parse_duration(self.time_budget)  # a one-line error for a duration that does not read
        if self.lr is not None and self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"need lr > 0 and 0 <= min-lr <= lr, got lr={self.lr}, min-lr={self.min_lr}")

    def sized(self) -> bool:
        """Whether the settings say how long the run is (a step count or a time budget)."""
        return self.max_steps is not None or self.time_budget is not None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Processes:
    """Where this process sits in a torchrun launch (rank 0 of 1 when started plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Processes:
        return cls(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The device setting resolved for this process: with several processes on CUDA, GPU number local_rank."""
        device = torch.device(resolve_device(name))
        if device.type == "cuda" and self.world_size > 1:
            return torch.device("cuda", self.local_rank)
        return device


def truncate_metrics(path: Path, step: int) -> None:
    """Forget the metrics logged after `step` (a resumed run does those steps again)."""
    if path.exists():
        kept = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step
        ]
        atomic_write(path, "".join(line + "\n" for line in kept))


class Loop(ABC):
    """The loop of the module docstring. Subclasses set the class attributes and implement the hooks below."""

    kind: ClassVar[str] = ""
    """Written into train_state.pt; a state written by another kind of loop is refused on resume."""
    unit: ClassVar[str] = "examples"
    """What the progress line counts per second: "tokens" or "examples"."""
    eval_split: ClassVar[str] = "dev"
    metric: ClassVar[str] = "loss"
    """The evaluation number that picks the best checkpoint and drives early stopping."""
    higher_is_better: ClassVar[bool] = False
    args_file: ClassVar[str | None] = None
    """The run's settings file in out_dir; a time budget's decision is recorded there."""

    def __init__(
        self,
        model: nn.Module,
        config: LoopConfig,
        out_dir: str | os.PathLike[str],
        log: Callable[[str], None] = print,
        procs: Processes | None = None,
        sharding: Sharding | None = None,
    ) -> None:
        self.config, self.out_dir, self.procs = config, Path(out_dir), procs or Processes()
        self.sharding = sharding
        """FSDP2 (minilm.training.sharding), when the model was sharded over the processes before it came here: then
        every process evaluates (a sharded forward needs them all) and checkpoints go through DCP."""
        self.log = log if self.procs.is_main else (lambda _: None)
        self.device = self.procs.device(config.device)
        self.precision = resolve_precision(config.precision, self.device.type)
        torch.manual_seed(config.seed + self.procs.rank)  # dropout draws from the global generator
        self.model = model.to(self.device).train()
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("nothing to train: every parameter is frozen")
        self.optimizer = make_optimizer(model, config.lr, config.weight_decay, (config.beta1, config.beta2))
        self.step, self.evals_since_best, self.seen = 0, 0, 0
        self.best = -math.inf if self.higher_is_better else math.inf
        self.train_seconds = 0.0
        """Time spent in training steps (evaluations and checkpoints excluded), this process only."""
        self.clock: Callable[[], float] = time.perf_counter
        """Where the loop reads the time (seconds): for the progress line and a time budget's measurements."""

    # ---- what a subclass provides --------------------------------------------------------------------------
    @abstractmethod
    def forward_backward(self) -> tuple[float, int]:
        """Compute this step's loss and call backward on it; return (mean loss, tokens or examples processed)."""

    @abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """The evaluation numbers; `metric` is one of them."""

    def describe(self, metrics: dict[str, Any]) -> str:
        """The evaluation line's numbers."""
        return f"{self.eval_split} {self.metric} {metrics[self.metric]:.4f}"

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """What of the evaluation goes into metrics.jsonl."""
        return metrics

    @abstractmethod
    def save_best(self, metrics: dict[str, Any]) -> None:
        """Write the best checkpoint (called when `metric` improved; on every process of a sharded run)."""

    @abstractmethod
    def write_checkpoint(self) -> None:
        """Write the latest model for inference beside the training state (on every process of a sharded run)."""

    @abstractmethod
    def checkpoint_state(self) -> dict[str, Any]:
        """The subclass's part of train_state.pt: the trained tensors and the data position."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Load `checkpoint_state`'s part back."""

    # ---- the loop -------------------------------------------------------------------------------------------
    def autocast(self):
        return autocast(self.precision, self.device)

    def train_step(self) -> float:
        """One optimizer step: set eta(t), forward and backward, clip, AdamW; returns the step's mean loss."""
        lr = learning_rate(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, items = self.forward_backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.seen += items
        return loss

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to max_steps or until `patience` evaluations pass without a better `metric`. `stop_at` ends the loop
        before that step without saving, like a crash (how tests check that resuming is exact)."""
        if self.config.max_steps is None:
            if self.step:
                raise ValueError(
                    f"the run in {self.out_dir} is at step {self.step} but has no max_steps: resume it with --max-steps"
                )
            plan = self.plan()
        else:
            plan = None
        cfg = self.config
        start_step, start_seen, start, losses = self.step, self.seen, self.clock(), []
        stopped_early = False
        try:
            while self.step < cfg.max_steps and not stopped_early:
                if stop_at is not None and self.step >= stop_at:
                    return {"step": self.step, "interrupted": True}
                step_start = self.clock()
                losses.append(self.train_step())
                self.train_seconds += self.clock() - step_start
                if self.step % cfg.log_every == 0 or self.step == 1:
                    self._progress(losses, self.clock() - start, self.step - start_step, self.seen - start_seen)
                    losses = []
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    stopped_early = self._evaluate_and_checkpoint(self.clock() - start)
        except KeyboardInterrupt:
            self.log(
                f"\ninterrupted at step {self.step}; the last checkpoint in {self.out_dir} is intact: continue it "
                "with --resume"
            )
            raise
        summary = {
            "step": self.step,
            "stopped_early": stopped_early,
            f"best_{self.eval_split}_{self.metric}": self.best,
        }
        if plan is not None:
            summary["budget_used_s"] = plan.measured_s + self.clock() - start
            self.log(
                f"time budget {format_duration(plan.budget_s)}: measuring and {self.step:,} steps took "
                f"{format_duration(summary['budget_used_s'])}"
            )
        return summary

    def plan(self) -> Plan:
        """Size the run by config.time_budget: time the first steps, undo them, and fix max_steps, the warm-up and the
        evaluation cadence to what fits (minilm.training.budget); the decision goes into the run's settings file."""
        cfg, start = self.config, self.clock()
        budget = parse_duration(cfg.time_budget)
        self.log(f"time budget {format_duration(budget)}: timing the first steps on this machine (then undone)")
        before = (
            copy.deepcopy(self.checkpoint_state()),
            copy.deepcopy(self.optimizer.state_dict()),
            torch.get_rng_state(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            copy.deepcopy(self.model.state_dict()) if self.sharding else None,  # this process's shards
        )

        def undo() -> None:
            self.restore(copy.deepcopy(before[0]))
            if before[4] is not None:
                self.model.load_state_dict(before[4])
            self.optimizer.load_state_dict(before[1])
            torch.set_rng_state(before[2])
            if before[3] is not None:
                torch.cuda.set_rng_state_all(before[3])
            self.step = self.seen = 0

        self.config = dataclasses.replace(cfg, max_steps=2**31 - 1)  # any length: the schedule of these steps is undone
        for _ in range(2):  # the first steps pay for memory allocation (and compilation): not timed
            self.train_step()
        durations, timed = [], self.clock()
        while len(durations) < 3 or self.clock() - timed < measuring_seconds(budget):
            before_step = self.clock()
            self.train_step()
            durations.append(self.clock() - before_step)
        step_s, steps = statistics.median(durations), len(durations) + 2  # the median: robust to a stray slow step
        undo()
        timed = self.clock()
        if self.takes_part():
            self.evaluate()
        undo()  # an evaluation draws no random numbers, but the checkpoint must hold the state of step 0
        self._save_state()
        eval_s = self.clock() - timed
        times = torch.tensor([step_s, eval_s], dtype=torch.float64)
        if self.procs.world_size > 1:  # the slowest process sets the pace; every process decides the same plan
            dist.all_reduce(times, op=dist.ReduceOp.MAX)
        plan = plan_steps(
            budget,
            self.clock() - start,
            float(times[0]),
            float(times[1]),
            steps,
            cfg.warmup_steps,
            cfg.eval_every,
        )
        self.config = dataclasses.replace(cfg, **plan.settings())
        self.train_seconds = 0.0
        self.planned(plan)
        self.log(plan.describe())
        return plan

    def planned(self, plan: Plan) -> None:
        """Record a time budget's decision in the run's settings file (args_file), so --resume continues it."""
        path = self.out_dir / self.args_file if self.args_file else None
        if self.procs.is_main and path is not None and path.is_file():
            args = {**read_json(path, "run settings"), **plan.settings(), "time_budget_plan": plan.record()}
            atomic_write(path, json.dumps(args, indent=2) + "\n")

    def _progress(self, losses: list[float], elapsed: float, steps: int, items: int) -> None:
        per_step, rate = elapsed / steps, items / elapsed
        record = {
            "step": self.step,
            "split": "train",
            "loss": sum(losses) / len(losses),
            "lr": learning_rate(self.step - 1, self.config),
            f"{self.unit}_per_s": rate,
            self.unit: self.seen,
            "step_s": per_step,
            "elapsed_s": elapsed,
        }
        speed = f"{rate / 1e3:.1f}k tok/s" if self.unit == "tokens" else f"{rate:.0f} ex/s"
        self.log(
            f"step {self.step:>6}/{self.config.max_steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
            f"{speed} | ETA {format_duration(per_step * (self.config.max_steps - self.step))}"
        )
        self._write_metrics(record)

    def _evaluate_and_checkpoint(self, elapsed: float) -> bool:
        """Evaluate, keep the best checkpoint, write the training state; True when patience ran out."""
        stop = torch.zeros(1)
        if self.takes_part():
            metrics = self.evaluate()
            if self.sharding is not None:  # every process evaluated; all go by rank 0's numbers
                box = [metrics]
                dist.broadcast_object_list(box, src=0)
                metrics = box[0]
            value = metrics[self.metric]
            improved = value > self.best if self.higher_is_better else value < self.best
            if improved:
                self.best, self.evals_since_best = value, 0
                self.save_best(metrics)
            else:
                self.evals_since_best += 1
            self.log(
                f"eval step {self.step}: {self.describe(metrics)}"
                + (" | best" if improved else f" | no improvement for {self.evals_since_best} evals")
            )
            self._write_metrics(
                {"step": self.step, "split": self.eval_split, "elapsed_s": elapsed, **self.record(metrics)}
            )
            if self.config.patience and self.evals_since_best >= self.config.patience:
                self.log(
                    f"early stop: {self.eval_split} {self.metric.replace('_', ' ')} has not improved for "
                    f"{self.config.patience} evaluations"
                )
                stop[0] = 1
        self._save_state()
        if self.procs.world_size > 1:
            dist.broadcast(stop, src=0)
        return bool(stop.item())

    def takes_part(self) -> bool:
        """Whether this process evaluates and writes a checkpoint's weights: rank 0, or every process when the model is
        sharded (a sharded forward, and gathering its weights, need them all; only rank 0 writes files)."""
        return self.procs.is_main or self.sharding is not None

    # ---- files ----------------------------------------------------------------------------------------------
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
        if self.sharding is not None:  # every process writes its shards (and takes part in gathering the weights)
            trained = {"sharded": self.sharding.save(self.out_dir, self.step, self.model, self.optimizer)}
        else:
            trained = {"optimizer": self.optimizer.state_dict()}
        if self.takes_part():
            self.write_checkpoint()
        if not self.procs.is_main:
            return
        save_state(
            {
                "kind": self.kind,
                "step": self.step,
                **trained,
                "rng_states": rng_states,
                "best": self.best,
                "evals_since_best": self.evals_since_best,
                "seen": self.seen,
                "world_size": self.procs.world_size,
                **self.checkpoint_state(),
            },
            self.out_dir / STATE_FILE,
        )
        if "sharded" in trained:  # train_state.pt now names the new shards: the older ones can go
            self.sharding.remove_older(self.out_dir, trained["sharded"])

    def upgrade_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A state in an older layout, in today's (a subclass that changed its layout reads the old one here)."""
        return state

    def load_checkpoint(self) -> None:
        """Continue from OUT/train_state.pt: weights, optimizer, step, generators, data position."""
        path = self.out_dir / STATE_FILE
        state = self.upgrade_state(load_state(path))
        if state.get("kind") != self.kind:
            raise ValueError(
                f"{path} is not the training state of a {self.kind} run (it says {state.get('kind')!r}): "
                "resume it with the command that wrote it, or start a new run in another --out"
            )
        if ("sharded" in state) != (self.sharding is not None):
            raise ValueError(
                f"{path} was written {'with' if 'sharded' in state else 'without'} --fsdp: resume it "
                f"{'under torchrun with' if 'sharded' in state else 'without'} --fsdp"
            )
        if self.sharding is not None:
            self.sharding.load(self.out_dir, state["sharded"], self.model, self.optimizer)
        self.restore(state)
        if self.sharding is None:
            self.optimizer.load_state_dict(state["optimizer"])
        rng_states = state["rng_states"]
        if len(rng_states) == self.procs.world_size:
            torch.set_rng_state(rng_states[self.procs.rank])
        self.step, self.best, self.evals_since_best, self.seen = (
            state["step"],
            state["best"],
            state["evals_since_best"],
            state["seen"],
        )
        if self.procs.is_main:
            truncate_metrics(self.out_dir / METRICS_FILE, self.step)
        self.log(f"resumed from step {self.step}")
