"""The comparison: every way of turning one pretrained base to a task, on the same data, seeds fixed.

    zero-shot     template + verbalizer, no training
    few-shot      k demonstrations per label in front of the query (a new draw of demonstrations per seed)
    tuned         prompt tuning, prompt encoder, prefix tuning, first-k freezing, BitFit, LoRA, full fine-tuning,
                  each read out by the template's label words (PET-style) and by a classification head

For the tuned methods each seed is a separate run (new parameters, data order and dropout), tuned with the
method's DEFAULT_LR and early stopping on dev macro-F1; the best checkpoint is evaluated. Reported: mean and
standard deviation over the seeds, trainable numbers, training time per step, and the peak tensor memory of a
training step (parameters + optimiser state + the step's activations and gradients), measured once per method.

Docs: docs/results.md (the measured comparison), docs/prompting.md (the comparison command).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from minilm.experiments.memory import peak_bytes, tensor_bytes
from minilm.files import atomic_write
from minilm.model import Transformer
from minilm.outputs import OutputKind, check_output, claim_output
from minilm.prompting import (
    Template,
    Verbalizer,
    base_logits,
    demonstration,
    few_shot_demonstrations,
    few_shot_prefixes,
    label_scores,
)
from minilm.settings import RUNS, check_fields, override, setting
from minilm.tokenizer import Tokenizer
from minilm.training.budget import format_duration
from minilm.training.device import resolve_device, resolve_precision
from minilm.training.loop import LoopConfig
from minilm.training.run import INSTRUCT, PRETRAIN, load_run
from minilm.tuning.metrics import classification_report
from minilm.tuning.readouts import READOUTS, ClassificationHead, VerbalizerReadout
from minilm.tuning.registry import METHODS, build_method
from minilm.tuning.tasks import Task, load_task
from minilm.tuning.trainer import TuneConfig, TuneTrainer, evaluate
from minilm.tuning.tuned import TUNE, TunedModel

DEFAULT_TEMPLATES = {True: "{text} It was", False: "{text} It was [MASK]."}
COMPARE = OutputKind(
    "compare", "a comparison", ("results.md", "results.json"), resumable=False, legacy=("results.md", "results.json")
)


@dataclass(frozen=True)
class CompareConfig:
    """How the comparison runs; each tuned run takes the tuning loop's defaults unless these say otherwise."""

    seeds: tuple[int, ...] = setting(
        (0, 1, 2), "seeds of the tuned runs (and of the few-shot draws)", check="non_negative"
    )
    max_steps: int = setting(TuneConfig.max_steps, "tuning steps per run", check="positive")
    eval_every: int = setting(TuneConfig.eval_every, "steps between dev evaluations (early stopping)", check="positive")
    patience: int = setting(
        TuneConfig.patience,
        "evaluations without a better dev macro-F1 before a run stops; 0 = never",
        check="non_negative",
    )
    batch_size: int = setting(TuneConfig.batch_size, "examples per tuning step", check="positive")
    shots: int = setting(4, "few-shot demonstrations per label", check="positive")
    readouts: tuple[str, ...] = setting(("verbalizer", "head"), "readouts of the tuned methods", choices=READOUTS)
    methods: tuple[str, ...] = setting(tuple(METHODS), "tuned methods to run", choices=tuple(METHODS))
    template: str | None = setting(
        None,
        f'default: "{DEFAULT_TEMPLATES[True]}" (causal) or "{DEFAULT_TEMPLATES[False]}" (masked)',
        type=str,
        metavar="TEXT",
    )
    max_eval_examples: int = setting(
        0, "evaluate on the first N dev (and test) examples only; 0 = all", check="non_negative"
    )
    device: str = override(LoopConfig, "device", LoopConfig.device)
    precision: str = override(LoopConfig, "precision", LoopConfig.precision)

    def __post_init__(self) -> None:
        check_fields(self)


QUICK = {
    "seeds": (0,),
    "max_steps": 4,
    "eval_every": 2,
    "patience": 0,
    "batch_size": 4,
    "shots": 1,
    "max_eval_examples": 32,
}
"""--quick: a smoke run of every row in seconds (what the tests run)."""


@dataclass
class Row:
    method: str
    readout: str
    trainable: int
    base: int
    dev_accuracy: list[float] = field(default_factory=list)
    dev_macro_f1: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    step_s: float | None = None
    peak_mib: float | None = None


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def markdown(rows: list[Row], has_test: bool) -> str:
    head = (
        "| method | readout | trainable (% of base) | dev accuracy | dev macro-F1 |"
        + (" test accuracy |" if has_test else "")
        + " s/step | peak MiB |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = (
            [
                r.method,
                r.readout,
                f"{r.trainable:,} ({100 * r.trainable / r.base:.2f}%)",
                _mean_std(r.dev_accuracy),
                _mean_std(r.dev_macro_f1),
            ]
            + ([_mean_std(r.test_accuracy)] if has_test else [])
            + [
                f"{r.step_s:.3f}" if r.step_s is not None else "-",
                f"{r.peak_mib:.1f}" if r.peak_mib is not None else "-",
            ]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_memory_mib(model: TunedModel, tokenizer: Tokenizer, task: Task, config: CompareConfig) -> float:
    """Persistent (parameters + AdamW state) plus the peak of one training step, after two warm-up steps."""
    device = torch.device(config.device)
    optimizer = torch.optim.AdamW(list(model.trainable().values()), lr=1e-4)
    texts = [e.text for e in task.split("train")[: config.batch_size]]
    labels = torch.tensor([e.label for e in task.split("train")[: config.batch_size]], device=device)
    batch = model.encode(tokenizer, texts)

    def step() -> None:
        F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]).float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    step()
    step()
    state = [t for s in optimizer.state.values() for t in s.values()]
    persistent = tensor_bytes([*model.parameters(), *model.buffers(), *state])
    return (persistent + peak_bytes(step, device)) / 2**20


def compare(
    load_base: Callable[[], Transformer],
    tokenizer: Tokenizer,
    task: Task,
    config: CompareConfig,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Run every row of the comparison; `load_base()` gives a fresh copy of the base each time."""
    base = load_base()
    causal, max_len, n_base = base.config.causal, base.config.max_len, base.num_parameters()
    template = config.template or DEFAULT_TEMPLATES[causal]
    if not task.label_words:
        raise ValueError(
            f"task {task.name} has no label words (task.json label_words): the verbalizer needs one word per label"
        )
    words = [task.label_words[label] for label in task.labels]
    dev, test = task.split("dev"), task.splits.get("test")
    if config.max_eval_examples:
        dev = dev[: config.max_eval_examples]
        test = test[: config.max_eval_examples] if test else test
    rows: list[Row] = []

    def prompted(name: str, prefixes_for: Callable[[list], list] | None, seeds: tuple[int, ...]) -> Row:
        row = Row(name, "verbalizer", 0, n_base)
        for seed in seeds:
            for split, examples in (("dev", dev), ("test", test)):
                if not examples:
                    continue
                values = [{"text": e.text} for e in examples]
                prefix = prefixes_for(values, seed) if prefixes_for else None
                scores = label_scores(
                    base_logits(base),
                    tokenizer,
                    Template(template),
                    Verbalizer.from_words(tokenizer, words),
                    values,
                    causal,
                    max_len,
                    prefix_ids=prefix,
                )
                report = classification_report(scores.argmax(dim=-1).tolist(), [e.label for e in examples], task.labels)
                if split == "dev":
                    row.dev_accuracy.append(report["accuracy"])
                    row.dev_macro_f1.append(report["macro_f1"])
                else:
                    row.test_accuracy.append(report["accuracy"])
        log(f"{name}: dev accuracy {_mean_std(row.dev_accuracy)}")
        return row

    base.eval()
    rows.append(prompted("zero-shot", None, (0,)))
    train = task.split("train")

    def few_shot(values: list, seed: int) -> list:
        chosen = few_shot_demonstrations(train, [e.label for e in train], config.shots, seed)
        demos = [
            demonstration(tokenizer, Template(template), {"text": train[i].text}, words[train[i].label]) for i in chosen
        ]
        longest = max(len(tokenizer.encode(w)) for w in words)
        return few_shot_prefixes(tokenizer, Template(template), demos, values, longest, causal, max_len)

    rows.append(prompted(f"few-shot ({config.shots} per label)", few_shot, config.seeds))

    for method, spec in METHODS.items():  # each with its default settings, as the command line tunes it
        if method not in config.methods:
            continue
        name = spec.describe()
        for readout_kind in config.readouts:

            def fresh(seed: int, method: str = method, readout_kind: str = readout_kind) -> TunedModel:
                base = load_base()
                readout = (
                    VerbalizerReadout.from_template(tokenizer, template, [[w] for w in words])
                    if readout_kind == "verbalizer"
                    else ClassificationHead(base.config.d_model, len(task.labels), seed=seed)
                )
                return TunedModel(base, build_method(method, base, tokenizer, seed=seed), readout, task.labels)

            row = None
            for seed in config.seeds:
                if row is None:  # the first seed also measures memory, on a model of its own (the probe takes steps)
                    probe = fresh(seed)
                    counts = probe.counts()
                    row = Row(name, readout_kind, counts["tuned"], counts["base"])
                    row.peak_mib = step_memory_mib(probe, tokenizer, task, config)
                model = fresh(seed)
                tune_config = TuneConfig(
                    lr=spec.lr,
                    max_steps=config.max_steps,
                    eval_every=config.eval_every,
                    patience=config.patience,
                    batch_size=config.batch_size,
                    seed=seed,
                    device=config.device,
                    precision=config.precision,
                    max_eval_examples=config.max_eval_examples,
                )
                with tempfile.TemporaryDirectory() as out:
                    start = time.perf_counter()
                    trainer = TuneTrainer(model, tokenizer, task, tune_config, out, log=lambda _: None)
                    trainer.fit()
                    best = TunedModel.load(out, load_base().to(config.device)).eval()
                step_s = trainer.train_seconds / max(trainer.step, 1)
                row.step_s = (
                    step_s
                    if row.step_s is None
                    else (row.step_s * len(row.dev_accuracy) + step_s) / (len(row.dev_accuracy) + 1)
                )
                report = evaluate(best, tokenizer, dev)
                row.dev_accuracy.append(report["accuracy"])
                row.dev_macro_f1.append(report["macro_f1"])
                if test:
                    row.test_accuracy.append(evaluate(best, tokenizer, test)["accuracy"])
                log(
                    f"{name} / {readout_kind} / seed {seed}: dev accuracy {report['accuracy']:.3f}, macro-F1 "
                    f"{report['macro_f1']:.3f}, {trainer.step} steps, {time.perf_counter() - start:.0f} s"
                )
            rows.append(row)
    return rows


def rows_as_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [r.__dict__.copy() for r in rows]


def write_results(rows: list[Row], has_test: bool, folder: Path, header: str) -> str:
    """results.md (the table under `header`) and results.json in `folder` (claimed with claim_output); returns
    the table."""
    table = markdown(rows, has_test)
    atomic_write(folder / "results.md", header + "\n\n" + table + "\n")
    atomic_write(folder / "results.json", json.dumps(rows_as_json(rows), indent=2) + "\n")
    return table


def default_folder(task_name: str) -> Path:
    """Where `compare` writes without --out: runs/compare-<task>."""
    return RUNS / f"compare-{task_name}"


def compare_run(
    base: str,
    task_dir: str,
    out: str | None = None,
    config: CompareConfig | None = None,
    *,
    quick: bool = False,
    overwrite: bool = False,
    command: str = "",
    log: Callable[[str], None] = print,
) -> list[Row]:
    """`train.py compare`: every row on the run `base` and the task folder `task_dir`, written to OUT/results.md and
    results.json (default runs/compare-<task>). `command` is the command line the table's header repeats."""
    config = config or CompareConfig()
    if quick:
        config = CompareConfig(**{**config.__dict__, **QUICK})
    task = load_task(task_dir)
    folder = Path(out) if out else default_folder(task.name)
    check_output(
        folder,
        COMPARE,
        overwrite=overwrite,
        reads=[("--base", base), ("--task", task_dir)],
        known=[PRETRAIN, TUNE, INSTRUCT],
    )
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    config = CompareConfig(**{**config.__dict__, "device": device, "precision": precision})
    model, tokenizer, _ = load_run(base, "best", device)
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    def load_base() -> Transformer:
        fresh = Transformer(model.config)
        fresh.load_state_dict(weights)
        return fresh.to(device)

    start = time.perf_counter()
    log(
        f"compare on {base} ({'causal' if model.config.causal else 'masked'}, {model.num_parameters():,} parameters), "
        f"task {task.name}: seeds {list(config.seeds)}, {config.max_steps} steps per tuned run, {precision}"
    )
    rows = compare(load_base, tokenizer, task, config, log)
    header = (
        f"`{command or 'python train.py compare'}`: {len(rows)} rows in "
        f"{format_duration(time.perf_counter() - start)}, seeds {list(config.seeds)}, {precision}, "
        f"torch {torch.__version__}"
    )
    claim_output(folder, COMPARE, fresh=True)
    log(write_results(rows, "test" in task.splits, folder, header))
    log(f"written to {folder / 'results.md'} and results.json")
    return rows
