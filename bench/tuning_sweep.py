"""Sweep tuning settings on one base and one task: what docs/tuning.md's defaults were chosen from.

    python bench/tuning_sweep.py --base runs/tapt-causal --task data/sentiment_rt \
        --grid 'prompt:prompt_len=8,init=vocab:lr=0.3,0.03,0.003' 'prefix:prefix_len=8:lr=3e-3,3e-4' ...

Each grid item is METHOD:HP=V,HP=V:lr=A,B,...; every combination is tuned with TuneTrainer (early stopping
on dev macro-F1) and a markdown table of the best dev accuracy / macro-F1, the step it was reached at and
the time per step is printed (and written as JSON with --json). Seeds are fixed; --seeds repeats.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from minilm.training import load_run
from minilm.tuning import DEFAULT_LR, ClassificationHead, TunedModel, VerbalizerReadout, build_method
from minilm.tuning.tasks import load_task
from minilm.tuning.trainer import TuneConfig, TuneTrainer, evaluate


def parse_item(item: str) -> tuple[str, dict, list[float]]:
    """'METHOD[:HP=V,HP=V][:lr=A,B]' -> (method, hyper-parameters, learning rates); a value may hold ':'
    (init=text:...)."""
    method, _, rest = item.partition(":")
    lrs: list[float] = []
    if rest.startswith("lr=") or ":lr=" in rest:
        rest, _, lr_part = rest.rpartition("lr=")
        rest = rest.removesuffix(":")
        lrs = [float(x) for x in lr_part.split(",")]
    hp: dict = {}
    for kv in filter(None, rest.split(",")):
        key, value = kv.split("=", 1)
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        if value in ("true", "false"):
            value = value == "true"
        hp[key] = value
    return method, hp, lrs


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--grid", nargs="+", required=True)
    p.add_argument("--readout", choices=["verbalizer", "head"], default="verbalizer")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    task = load_task(a.task)
    rows = []
    print(
        f"# base {a.base}, task {a.task}, readout {a.readout}, {a.precision}, max_steps {a.max_steps}, "
        f"batch {a.batch_size}, eval every {a.eval_every}, patience {a.patience}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print(
        "| method | settings | lr | seed | zero-step dev acc | best dev acc | best dev macro-F1 | best at step | "
        "steps run | s/step |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for item in a.grid:
        method, hp, lrs = parse_item(item)
        for lr in lrs or [DEFAULT_LR[method]]:
            for seed in a.seeds:
                base, tokenizer, _ = load_run(a.base, "best", "cpu")
                m = build_method(method, base, tokenizer, seed=seed, **hp)
                readout = (
                    VerbalizerReadout.from_words(tokenizer, [task.label_words[label] for label in task.labels])
                    if a.readout == "verbalizer"
                    else ClassificationHead(base.config.d_model, len(task.labels), seed=seed)
                )
                model = TunedModel(base, m, readout, task.labels)
                config = TuneConfig(
                    lr=lr,
                    max_steps=a.max_steps,
                    batch_size=a.batch_size,
                    eval_every=a.eval_every,
                    patience=a.patience,
                    seed=seed,
                    precision=a.precision,
                )
                with tempfile.TemporaryDirectory() as out:
                    zero = evaluate(model, tokenizer, task.split("dev"))["accuracy"]
                    start = time.perf_counter()
                    summary = TuneTrainer(model, tokenizer, task, config, out, log=lambda _: None).fit()
                    seconds = time.perf_counter() - start
                    records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
                dev = [r for r in records if r["split"] == "dev"]
                best = max(dev, key=lambda r: r["macro_f1"])
                row = {
                    "method": method,
                    "settings": hp,
                    "lr": lr,
                    "seed": seed,
                    "zero_step_accuracy": zero,
                    "best_accuracy": best["accuracy"],
                    "best_macro_f1": best["macro_f1"],
                    "best_step": best["step"],
                    "steps": summary["step"],
                    "seconds": seconds,
                    "step_s": seconds / summary["step"],
                }
                rows.append(row)
                settings = ",".join(f"{k}={v}" for k, v in hp.items()) or "-"
                print(
                    f"| {method} | {settings} | {lr:g} | {seed} | {zero:.3f} | {best['accuracy']:.3f} | "
                    f"{best['macro_f1']:.3f} | {best['step']} | {summary['step']} | {row['step_s']:.3f} |",
                    flush=True,
                )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
