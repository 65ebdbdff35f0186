"""What each tuning method costs to train: trainable parameters, time per step and peak memory, vs full fine-tuning.

    python bench/tuning_cost.py --threads 2                   # all 7 methods on the default pretraining model
    python bench/tuning_cost.py --methods prompt lora full --readout verbalizer --masked
    python bench/tuning_cost.py --layers 2 --width 64 --steps 3 --json cost.json

Every method gets a fresh base built with the same seed (vocabulary V, L layers, width d, h heads,
d_ff, context = max_len, dropout; causal or masked), the method on top, and the readout (a
classification head, or a verbalizer scoring one-token label words), wrapped in a `TunedModel`. As in
the tuning trainer, AdamW sees `model.trainable()` only, so frozen parameters get neither gradients nor
optimiser state. One training step is what `TuneTrainer.train_step` does, on a fixed random batch
(B rows of `--seq` real tokens, all unpadded, random class labels):

    forward -> class scores (B, C) -> cross-entropy -> backward -> clip_grad_norm_(1.0) -> AdamW step
    -> zero_grad(set_to_none=True)

Columns
    trainable    numbers that train (method + readout, plus whatever base parameters the method unfreezes);
                 "% of base" is that over the base's own parameters (LoRA's adapters not counted as base)
    ms/step      median of the timed steps, after `--warmup` untimed steps per method. The timed steps go
                 round-robin over the methods (step i of every method, then step i + 1 ...), so a slow patch
                 of a shared machine hits all methods alike.
    persistent   bytes live between steps, summed over tensors: every parameter (frozen base included,
                 tied tensors once) + buffers + AdamW's state (exp_avg, exp_avg_sq, step) of the trainable
                 ones. Gradients are not in it: zero_grad(set_to_none=True) frees them after every step.
    step peak    the most bytes a training step holds above what was live when it started: activations
                 saved for backward, gradients (allocated in backward, freed by zero_grad), temporaries.
                 Measured on one step after warm-up, when AdamW's lazily created state already exists.
    peak         persistent + step peak: the memory high-water mark of training.
    x full       the value over full fine-tuning's, both measured in this same run (full is always run).

How the step peak is measured
    CUDA: torch.cuda.max_memory_allocated() - memory_allocated() around the step, after
          reset_peak_memory_stats() (the caching allocator's live-tensor bytes, not its reserve).
    CPU:  PyTorch keeps no high-water mark for CPU tensors, so the step runs under
          torch.profiler.profile(activities=[CPU], profile_memory=True). The profiler records one
          "[memory]" event per CPU allocation (+bytes) and per free (-bytes) with a nanosecond timestamp;
          sorted by time, the maximum of their running sum is the peak of live tensor bytes above the
          level at the start of the step. Checked against known allocations at every run
          (`check_cpu_peak`, printed above the table): allocating 1 MiB, 0.25 MiB, freeing the 1 MiB and
          allocating 3 MiB must read exactly 3.25 MiB. Also checked by hand on a training step whose
          peak is known: Linear(1024, 1024) without bias on a (256, 1024) input, loss = sum(y^2), SGD,
          reads exactly 6 MiB (y 1 + dL/dy 1 + weight gradient 4), the same with 1 and 2 threads.
          The smoke test checks that full fine-tuning's step peak holds all its gradients (trainable x 4 B).
    The profiler only sees PyTorch's allocator, not Python objects, the allocator's own caches, or
    memory the process holds but no tensor uses, so this is tensor memory, not the process's RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from minilm import ModelConfig, Transformer
from minilm.experiments.memory import cpu_peak_bytes, tensor_bytes
from minilm.tokenizer import NUM_SPECIAL_TOKENS
from minilm.tuning import METHODS, ClassificationHead, TunedModel, VerbalizerReadout, build_method

MiB = 1 << 20


def check_cpu_peak() -> float:
    """Profiled peak in MiB of: allocate 1 MiB, 0.25 MiB, free the 1 MiB, allocate 3 MiB (exactly 3.25 if right)."""

    def known() -> None:
        a = torch.empty(MiB, dtype=torch.uint8)
        b = torch.empty(MiB // 4, dtype=torch.uint8)
        del a
        c = torch.empty(3 * MiB, dtype=torch.uint8)
        del b, c

    return cpu_peak_bytes(known) / MiB


def parse_freeze(text: str) -> dict[str, Any]:
    recipe, _, k = text.partition(":")
    if recipe not in ("first", "last") or not k.isdigit():
        raise SystemExit(f"--freeze: {text!r} is not first:K or last:K (e.g. last:1)")
    return {"recipe": recipe, "k": int(k)}


def method_hyperparameters(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "prompt": {"prompt_len": args.prompt_len, "init": "vocab", "seed": 0},
        "prompt-encoder": {"prompt_len": args.prompt_len, "hidden": args.hidden},
        "prefix": {
            "prefix_len": args.prefix_len,
            "d_prime": args.d_prime,
            "hidden": args.hidden,
            "reparameterize": not args.no_reparameterize,
        },
        "freeze": parse_freeze(args.freeze),
        "bitfit": {},
        "lora": {"rank": args.lora_rank, "alpha": args.lora_alpha},
        "full": {},
    }


class Run:
    """One method on its own fresh base, with its optimiser, ready to take training steps."""

    def __init__(
        self, name: str, hp: dict[str, Any], config: ModelConfig, readout: str, n_classes: int, device: str
    ) -> None:
        self.name, self.hp, self.device = name, hp, device
        base = Transformer(config, seed=0)
        method = build_method(name, base, **hp)
        if readout == "head":
            head: ClassificationHead | VerbalizerReadout = ClassificationHead(config.d_model, n_classes)
        else:  # one-token label words: the cheapest verbalizer, one forward pass for all classes
            head = VerbalizerReadout.from_ids([[NUM_SPECIAL_TOKENS + i] for i in range(n_classes)])
        self.model = TunedModel(base, method, head).to(device).train()
        self.counts = self.model.counts()
        self.optimizer = torch.optim.AdamW(list(self.model.trainable().values()), lr=1e-3)
        self.times: list[float] = []

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def step(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> None:
        loss = F.cross_entropy(self.model(ids, mask).float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.model.trainable().values()), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed_step(self, *batch: torch.Tensor) -> float:
        self.synchronize()
        start = time.perf_counter()
        self.step(*batch)
        self.synchronize()
        return time.perf_counter() - start

    def persistent_bytes(self) -> int:
        """Parameters (all) + buffers + optimiser state: what stays live between steps."""
        state = [t for s in self.optimizer.state.values() for t in s.values()]
        return tensor_bytes([*self.model.parameters(), *self.model.buffers(), *state])

    def step_peak_bytes(self, *batch: torch.Tensor) -> int:
        """The most bytes one step holds above what was live at its start (see the module docstring)."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            self.step(*batch)
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - before
        return cpu_peak_bytes(lambda: self.step(*batch))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="methods to measure (full fine-tuning is always added: the ratios need it)",
    )
    g = parser.add_argument_group("base model (defaults: the default pretraining model of train.py)")
    g.add_argument("--vocab", type=int, default=1024)
    g.add_argument("--layers", type=int, default=4)
    g.add_argument("--width", type=int, default=256, help="d_model")
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--ffn", type=int, default=None, help="d_ff (default: 4 x width)")
    g.add_argument("--context", type=int, default=128, help="max_len")
    g.add_argument("--dropout", type=float, default=0.1)
    objective = g.add_mutually_exclusive_group()
    objective.add_argument("--causal", dest="causal", action="store_true", default=True, help="causal base (default)")
    objective.add_argument("--masked", dest="causal", action="store_false", help="bidirectional (masked LM) base")
    g = parser.add_argument_group("task and timing")
    g.add_argument("--readout", choices=["head", "verbalizer"], default="head")
    g.add_argument("--classes", type=int, default=2)
    g.add_argument("--batch", type=int, default=16, help="rows per step (the tuning trainer's default)")
    g.add_argument("--seq", type=int, default=64, help="real text tokens per row")
    g.add_argument("--steps", type=int, default=10, help="timed steps per method (median reported)")
    g.add_argument(
        "--warmup", type=int, default=3, help="untimed steps per method first (at least 1: creates AdamW's state)"
    )
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    g.add_argument("--json", metavar="FILE", help="also write the settings and numbers here")
    g = parser.add_argument_group("method hyper-parameters")
    g.add_argument("--prompt-len", type=int, default=20, help="prompt, prompt-encoder: soft prompt length")
    g.add_argument("--prefix-len", type=int, default=16, help="prefix: prefix length")
    g.add_argument(
        "--hidden", type=int, default=256, help="prompt-encoder, prefix: hidden width of the reparameterisation MLP"
    )
    g.add_argument("--d-prime", type=int, default=64, help="prefix: width d' of the MLP's input P'")
    g.add_argument("--no-reparameterize", action="store_true", help="prefix: train the prefixes directly, no MLP")
    g.add_argument("--freeze", default="last:1", metavar="RECIPE:K", help="freeze: train the first or last K blocks")
    g.add_argument("--lora-rank", type=int, default=8)
    g.add_argument("--lora-alpha", type=float, default=16.0)
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (AdamW creates its state at the first step)")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = list(dict.fromkeys([*args.methods, "full"]))
    config = ModelConfig(
        vocab_size=args.vocab,
        d_model=args.width,
        n_heads=args.heads,
        n_layers=args.layers,
        d_ff=args.ffn or 4 * args.width,
        max_len=args.context,
        dropout=args.dropout,
        causal=args.causal,
    )
    hps = method_hyperparameters(args)
    runs = [Run(name, hps[name], config, args.readout, args.classes, args.device) for name in methods]
    for run in runs:
        room = run.model.max_text_tokens()
        if args.seq > room:
            raise SystemExit(
                f"--seq {args.seq} does not fit {run.name}: the context of {args.context} leaves room for "
                f"{room} text tokens; use a shorter --seq or a longer --context"
            )

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(NUM_SPECIAL_TOKENS, args.vocab, (args.batch, args.seq), generator=g).to(args.device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    labels = torch.randint(0, args.classes, (args.batch,), generator=g).to(args.device)
    batch = (ids, mask, labels)

    settings = {k: v for k, v in vars(args).items() if k != "json"}
    flags = " ".join(f"--{key.replace('_', '-')}={value}" for key, value in settings.items() if key != "methods")
    print(f"# tuning cost: --methods {' '.join(methods)} {flags}")
    print(
        f"# device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"base: V={config.vocab_size} L={config.n_layers} d={config.d_model} h={config.n_heads} d_ff={config.d_ff} "
        f"max_len={config.max_len} {'causal' if config.causal else 'masked'}, {runs[0].counts['base']:,} parameters; "
        f"batch {args.batch}x{args.seq} tokens, {args.classes} classes, {args.readout} readout"
    )
    print("# hyper-parameters: " + "; ".join(f"{name} {hps[name]}" for name in methods if hps[name]))
    cpu_check = None
    if args.device == "cpu":
        cpu_check = check_cpu_peak()
        print(
            f"# CPU peak check: profiling 1 MiB + 0.25 MiB - 1 MiB + 3 MiB allocations reads {cpu_check:.3f} MiB "
            "(exact: 3.250)"
        )
    if hasattr(os, "getloadavg"):
        print(f"# load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")

    for run in runs:
        for _ in range(args.warmup):
            run.step(*batch)
    for _ in range(args.steps):  # round-robin: step i of every method before step i + 1 of any
        for run in runs:
            run.times.append(run.timed_step(*batch))
    rows = []
    for run in runs:
        persistent = run.persistent_bytes()
        step_peak = run.step_peak_bytes(*batch)
        trainable, base = run.counts["trainable"], run.counts["base"]
        rows.append(
            {
                "method": run.name,
                "hyperparameters": run.hp,
                "trainable": trainable,
                "base_parameters": base,
                "trainable_pct_of_base": 100 * trainable / base,
                "ms_per_step": 1e3 * statistics.median(run.times),
                "step_times_ms": [1e3 * t for t in run.times],
                "persistent_bytes": persistent,
                "step_peak_bytes": step_peak,
                "peak_bytes": persistent + step_peak,
            }
        )
    if hasattr(os, "getloadavg"):
        print(f"# load average after: {os.getloadavg()[0]:.2f} (1 min)")

    full = next(r for r in rows if r["method"] == "full")
    for row in rows:
        for key in ("trainable", "ms_per_step", "persistent_bytes", "step_peak_bytes", "peak_bytes"):
            row[f"{key}_vs_full"] = row[key] / full[key]
    print()
    print(
        "persistent = parameters (frozen too) + buffers + AdamW state, live between steps; "
        "step peak = most bytes one step adds on top (activations, gradients, temporaries), "
        "measured on a step after warm-up; "
        "peak = persistent + step peak; x full = ratio to full fine-tuning in this run."
    )
    print()
    print(
        "| method | trainable | % of base | x full | ms/step | x full | persistent MiB | step peak MiB | x full "
        "| peak MiB | x full |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['trainable']:,} | {r['trainable_pct_of_base']:.2f}% | "
            f"{r['trainable_vs_full']:.4f} | "
            f"{r['ms_per_step']:.1f} | {r['ms_per_step_vs_full']:.2f} | {r['persistent_bytes'] / MiB:.2f} | "
            f"{r['step_peak_bytes'] / MiB:.2f} | {r['step_peak_bytes_vs_full']:.2f} | {r['peak_bytes'] / MiB:.2f} | "
            f"{r['peak_bytes_vs_full']:.2f} |"
        )

    if args.json:
        report = {
            "settings": settings,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "model_config": config.to_dict(),
            "cpu_peak_check_mib": cpu_check,
            "rows": rows,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return rows


if __name__ == "__main__":
    main()
