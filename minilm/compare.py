"""The comparison: every way of turning one pretrained base to a task, on the same data, seeds fixed.

    zero-shot     template + verbalizer, no training
    few-shot      k demonstrations per label in front of the query (a new draw of demonstrations per seed)
    tuned         prompt tuning, prompt encoder, prefix tuning, first-k freezing, BitFit, LoRA, full fine-tuning,
                  each read out by the template's label words (PET-style) and by a classification head

For the tuned methods each seed is a separate run (new parameters, data order and dropout), tuned with the
method's DEFAULT_LR and early stopping on dev macro-F1; the best checkpoint is evaluated. Reported: mean and
standard deviation over the seeds, trainable numbers, training time per step, and the peak tensor memory of a
training step (parameters + optimiser state + the step's activations and gradients), measured once per method.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from minilm.memory import peak_bytes, tensor_bytes
from minilm.metrics import classification_report
from minilm.model import Transformer
from minilm.prompting import Template, Verbalizer, base_logits, demonstration, few_shot_demonstrations, few_shot_prefixes, label_scores
from minilm.tasks import Task
from minilm.tokenizer import Tokenizer
from minilm.tuning import DEFAULT_LR, ClassificationHead, TemplateVerbalizer, TunedModel, build_method
from minilm.tuning.trainer import TuneConfig, TuneTrainer, evaluate

TUNED = [  # (row name, method, hyper-parameters): the command line's defaults
    ("prompt tuning", "prompt", {"prompt_len": 8}),
    ("prompt encoder", "prompt-encoder", {"prompt_len": 8}),
    ("prefix tuning", "prefix", {"prefix_len": 8}),
    ("first-k freezing (k=1)", "freeze", {"recipe": "first", "k": 1}),
    ("BitFit", "bitfit", {}),
    ("LoRA (r=8)", "lora", {"rank": 8}),
    ("full fine-tuning", "full", {}),
]
DEFAULT_TEMPLATES = {True: "{text} It was", False: "{text} It was [MASK]."}


@dataclass(frozen=True)
class CompareConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 300
    eval_every: int = 50
    patience: int = 4
    batch_size: int = 16
    shots: int = 4
    readouts: tuple[str, ...] = ("verbalizer", "head")
    methods: tuple[str, ...] = tuple(m for _, m, _ in TUNED)
    template: str | None = None
    precision: str = "fp32"
    max_eval_examples: int = 0
    device: str = "cpu"


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
    head = "| method | readout | trainable (% of base) | dev accuracy | dev macro-F1 |" + (" test accuracy |" if has_test else "") \
        + " s/step | peak MiB |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r.method, r.readout, f"{r.trainable:,} ({100 * r.trainable / r.base:.2f}%)", _mean_std(r.dev_accuracy),
                 _mean_std(r.dev_macro_f1)] + ([_mean_std(r.test_accuracy)] if has_test else []) + \
                [f"{r.step_s:.3f}" if r.step_s is not None else "-", f"{r.peak_mib:.1f}" if r.peak_mib is not None else "-"]
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


def compare(load_base: Callable[[], Transformer], tokenizer: Tokenizer, task: Task, config: CompareConfig,
            log: Callable[[str], None] = print) -> list[Row]:
    """Run every row of the comparison; `load_base()` gives a fresh copy of the base each time."""
    base = load_base()
    causal, max_len, n_base = base.config.causal, base.config.max_len, base.num_parameters()
    template = config.template or DEFAULT_TEMPLATES[causal]
    if not task.label_words:
        raise ValueError(f"task {task.name} has no label words (task.json label_words): the verbalizer needs one word per label")
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
                scores = label_scores(base_logits(base), tokenizer, Template(template), Verbalizer.from_words(tokenizer, words),
                                      values, causal, max_len, prefix_ids=prefix)
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
        demos = [demonstration(tokenizer, Template(template), {"text": train[i].text}, words[train[i].label]) for i in chosen]
        longest = max(len(tokenizer.encode(w)) for w in words)
        return few_shot_prefixes(tokenizer, Template(template), demos, values, longest, causal, max_len)

    rows.append(prompted(f"few-shot ({config.shots} per label)", few_shot, config.seeds))

    for name, method, hp in TUNED:
        if method not in config.methods:
            continue
        for readout_kind in config.readouts:

            def fresh(seed: int) -> TunedModel:
                base = load_base()
                readout = (TemplateVerbalizer.from_template(tokenizer, template, [[w] for w in words]) if readout_kind == "verbalizer"
                           else ClassificationHead(base.config.d_model, len(task.labels), seed=seed))
                seeded = {**hp, "seed": seed} if method in ("prompt", "prompt-encoder", "prefix", "lora") else hp
                return TunedModel(base, build_method(method, base, tokenizer, **seeded), readout, task.labels)

            row = None
            for seed in config.seeds:
                if row is None:  # the first seed also measures memory, on a model of its own (the probe takes steps)
                    probe = fresh(seed)
                    counts = probe.counts()
                    row = Row(name, readout_kind, counts["tuned"], counts["base"])
                    row.peak_mib = step_memory_mib(probe, tokenizer, task, config)
                model = fresh(seed)
                tune_config = TuneConfig(lr=DEFAULT_LR[method], max_steps=config.max_steps, eval_every=config.eval_every,
                                         patience=config.patience, batch_size=config.batch_size, seed=seed, device=config.device,
                                         precision=config.precision, max_eval_examples=config.max_eval_examples)
                with tempfile.TemporaryDirectory() as out:
                    start = time.perf_counter()
                    trainer = TuneTrainer(model, tokenizer, task, tune_config, out, log=lambda _: None)
                    trainer.fit()
                    best = TunedModel.load(out, load_base().to(config.device)).eval()
                step_s = trainer.train_seconds / max(trainer.step, 1)
                row.step_s = step_s if row.step_s is None else (row.step_s * len(row.dev_accuracy) + step_s) / (len(row.dev_accuracy) + 1)
                report = evaluate(best, tokenizer, dev)
                row.dev_accuracy.append(report["accuracy"])
                row.dev_macro_f1.append(report["macro_f1"])
                if test:
                    row.test_accuracy.append(evaluate(best, tokenizer, test)["accuracy"])
                log(f"{name} / {readout_kind} / seed {seed}: dev accuracy {report['accuracy']:.3f}, macro-F1 "
                    f"{report['macro_f1']:.3f}, {trainer.step} steps, {time.perf_counter() - start:.0f} s")
            rows.append(row)
    return rows


def rows_as_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [r.__dict__.copy() for r in rows]


def write_results(rows: list[Row], has_test: bool, folder: Path, header: str) -> str:
    """results.md (the table under `header`) and results.json in `folder`; returns the table."""
    import json

    from minilm.checkpoint import atomic_write

    table = markdown(rows, has_test)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "results.md", header + "\n\n" + table + "\n")
    atomic_write(folder / "results.json", json.dumps(rows_as_json(rows), indent=2) + "\n")
    return table
