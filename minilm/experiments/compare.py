"""The comparison: every way of turning one pretrained base to a task, on the same data, seeds fixed.

    majority class        the most frequent train label, for every example              (baseline: no base)
    bag-of-n-grams LR     logistic regression on binary unigrams + bigrams, fitted on train  (baseline: no base)
    zero-shot             template + verbalizer, no training
    calibrated zero-shot  zero-shot divided by the scores of the content-free input "N/A" (Zhao et al. 2021)
    few-shot              k demonstrations per label in front of the query (a new draw of demonstrations per seed)
    prompt search         the template with [T] trigger tokens after {text}, searched on train (AutoPrompt), per seed
    tuned                 prompt tuning, prompt encoder, prefix tuning, first-k freezing, BitFit, LoRA, full
                          fine-tuning, each read out by the template's label words (PET-style) and by a head

The template: --template, else the task.json's, else DEFAULT_TEMPLATES. The baselines (minilm/experiments/baselines.py)
see the train split only and are deterministic: one value per column.

For the tuned methods each seed is a separate run (new parameters, data order and dropout), tuned as
docs/tuning.md's protocol says: the method's default settings, learning rate and schedule (minilm.tuning.registry),
--epochs passes over train with early stopping on dev macro-F1, read out by the label words (--readouts adds the
head); the best checkpoint is evaluated. Reported: mean and
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

from minilm.experiments.baselines import INSTALL, MissingScikitLearn, bag_of_ngrams_logistic_regression, majority_class
from minilm.experiments.memory import peak_bytes, tensor_bytes
from minilm.files import atomic_write
from minilm.model import Transformer
from minilm.outputs import OutputKind, check_output, claim_output
from minilm.prompting import (
    DEFAULT_TEMPLATES,
    Template,
    Verbalizer,
    base_logits,
    calibrate,
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
from minilm.tuning.prompt_search import SearchConfig, TriggerEmbeddings, label_words_of, search_prompt, with_triggers
from minilm.tuning.readouts import READOUTS, ClassificationHead, VerbalizerReadout
from minilm.tuning.registry import METHODS, build_method
from minilm.tuning.tasks import Example, Task, load_task
from minilm.tuning.trainer import TuneConfig, TuneTrainer, evaluate, predict
from minilm.tuning.tuned import TUNE, TunedModel

COMPARE = OutputKind(
    "compare", "a comparison", ("results.md", "results.json"), resumable=False, legacy=("results.md", "results.json")
)


@dataclass(frozen=True)
class CompareConfig:
    """How the comparison runs; each tuned run takes the tuning loop's defaults unless these say otherwise."""

    seeds: tuple[int, ...] = setting(
        (0, 1, 2), "seeds of the tuned runs (and of the few-shot draws)", check="non_negative"
    )
    max_steps: int | None = setting(None, "tuning steps per run, instead of --epochs", check="positive", type=int)
    epochs: float = setting(
        TuneConfig.epochs,
        "passes over the train split per tuned run: max-steps = ceil(epochs x train examples / batch size)",
        check="positive",
        type=float,
    )
    eval_every: int = setting(TuneConfig.eval_every, "steps between dev evaluations (early stopping)", check="positive")
    patience: int = setting(
        TuneConfig.patience,
        "evaluations without a better dev macro-F1 before a run stops; 0 = never",
        check="non_negative",
    )
    batch_size: int = setting(TuneConfig.batch_size, "examples per tuning step", check="positive")
    shots: int = setting(4, "few-shot demonstrations per label", check="positive")
    readouts: tuple[str, ...] = setting(
        ("verbalizer",),
        "readouts of the tuned methods (docs/tuning.md: the label words measured best)",
        choices=READOUTS,
    )
    methods: tuple[str, ...] = setting(tuple(METHODS), "tuned methods to run", choices=tuple(METHODS))
    search_iterations: int = setting(
        SearchConfig.iterations,
        "prompt search: iterations per seed, each updating one [T] trigger token; 0 = no prompt-search row",
        check="non_negative",
    )
    template: str | None = setting(
        None,
        f'default: the task.json template, else "{DEFAULT_TEMPLATES[True]}" (causal) or '
        f'"{DEFAULT_TEMPLATES[False]}" (masked)',
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
    "search_iterations": 2,
    "max_eval_examples": 32,
}
"""--quick: a smoke run of every row in seconds (what the tests run)."""


KINDS = ("baseline", "prompted", "tuned")
"""Row.kind: no base at all; the frozen base prompted, nothing trained; a tuning method trained on the base."""
CONTENT_FREE = "N/A"
"""The content-free input of calibrated zero-shot."""
NO_SKLEARN = f"bag-of-words logistic regression: skipped, scikit-learn is not installed ({INSTALL})"


@dataclass
class Row:
    method: str
    readout: str
    trainable: int
    """Learned numbers: tuned parameters, or a baseline's own coefficients (which are not part of the base)."""
    base: int
    """Parameters of the base the row uses (0 for a baseline: it uses none)."""
    kind: str
    """One of KINDS."""
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
                f"{r.trainable:,} (no base used)"
                if r.kind == "baseline"
                else f"{r.trainable:,} ({100 * r.trainable / r.base:.2f}%)",
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


def record(row: Row, split: str, predicted: list[int], examples: list[Example], labels: list[str]) -> None:
    """Append the accuracy (and on dev the macro-F1) of `predicted` on `examples` to the row's `split` columns."""
    report = classification_report(predicted, [e.label for e in examples], labels)
    if split == "dev":
        row.dev_accuracy.append(report["accuracy"])
        row.dev_macro_f1.append(report["macro_f1"])
    else:
        row.test_accuracy.append(report["accuracy"])


def baseline_rows(
    task: Task, train: list[Example], dev: list[Example], test: list[Example], log: Callable[[str], None] = print
) -> list[Row]:
    """The majority class and bag-of-n-grams rows, fitted on `train` alone and scored on dev (and test when given);
    without scikit-learn the second is left out and NO_SKLEARN logged."""
    labels, y = task.labels, [e.label for e in train]
    evaluated = [("dev", dev), ("test", test)]
    majority = Row("majority class", "-", 0, 0, "baseline")
    y_major = majority_class(y, len(labels))
    for split, examples in evaluated:
        if examples:
            record(majority, split, [y_major] * len(examples), examples, labels)
    log(f"majority class ({labels[y_major]}): dev accuracy {_mean_std(majority.dev_accuracy)}")
    try:
        fitted = bag_of_ngrams_logistic_regression([e.text for e in train], y, [e.text for e in dev + test])
    except MissingScikitLearn:
        log(NO_SKLEARN)
        return [majority]
    ngrams = Row("bag-of-n-grams logistic regression", "-", fitted.n_parameters, 0, "baseline")
    predicted = {"dev": fitted.predictions[: len(dev)], "test": fitted.predictions[len(dev) :]}
    for split, examples in evaluated:
        if examples:
            record(ngrams, split, predicted[split], examples, labels)
    log(f"bag-of-n-grams logistic regression (C = {fitted.C:g}): dev accuracy {_mean_std(ngrams.dev_accuracy)}")
    return [majority, ngrams]


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


def prompt_search_row(
    load_base: Callable[[], Transformer],
    tokenizer: Tokenizer,
    task: Task,
    template: str,
    config: CompareConfig,
    dev: list[Example],
    test: list[Example],
    log: Callable[[str], None] = print,
) -> Row:
    """The "prompt search" row: per seed, the triggers of the template with [T] x n put after {text}, searched on
    train with SearchConfig's defaults and `config.search_iterations`, then the found prompt scored on dev (and
    test). Nothing trains: the row counts 0 trainable numbers."""
    n = SearchConfig.triggers
    search_template = with_triggers(template, n)
    row = Row(f"prompt search ([T] x{n})", "verbalizer", 0, load_base().num_parameters(), "prompted")
    for seed in config.seeds:
        base = load_base()
        search = SearchConfig(iterations=config.search_iterations, seed=seed, device=config.device)
        start = time.perf_counter()
        result = search_prompt(base, tokenizer, task, search_template, search, log=lambda _: None)
        model = TunedModel(base, TriggerEmbeddings(), result.readout(), task.labels)
        for split, examples in (("dev", dev), ("test", test)):
            if examples:
                predicted = predict(model, tokenizer, [e.text for e in examples]).argmax(dim=-1).tolist()
                record(row, split, predicted, examples, task.labels)
        log(
            f"prompt search / seed {seed}: found {result.found_template!r}, dev accuracy {row.dev_accuracy[-1]:.3f}, "
            f"{config.search_iterations} iterations, {time.perf_counter() - start:.0f} s"
        )
    return row


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
    template = config.template or task.template or DEFAULT_TEMPLATES[causal]
    words = label_words_of(task)
    dev, test = task.split("dev"), task.splits.get("test")
    if config.max_eval_examples:
        dev = dev[: config.max_eval_examples]
        test = test[: config.max_eval_examples] if test else test
    train = task.split("train")
    rows = baseline_rows(task, train, dev, test or [], log)

    def scores_of(values: list[dict[str, str]], prefix: list | None = None) -> torch.Tensor:
        verbalizer = Verbalizer.from_words(tokenizer, words)
        args = (base_logits(base), tokenizer, Template(template), verbalizer, values, causal, max_len)
        return label_scores(*args, prefix_ids=prefix)

    def prompted(
        name: str, prefixes_for: Callable[[list], list] | None, seeds: tuple[int, ...], calibrated: bool = False
    ) -> list[Row]:
        """The row `name` and, when `calibrated`, "calibrated <name>": the same scores calibrated by "N/A"'s."""
        reads: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {name: lambda scores: scores}
        if calibrated:
            content_free = scores_of([{"text": CONTENT_FREE}])
            reads[f"calibrated {name}"] = lambda scores: calibrate(scores, content_free)
        out = {n: Row(n, "verbalizer", 0, n_base, "prompted") for n in reads}
        for seed in seeds:
            for split, examples in (("dev", dev), ("test", test)):
                if not examples:
                    continue
                values = [{"text": e.text} for e in examples]
                scores = scores_of(values, prefixes_for(values, seed) if prefixes_for else None)
                for n, read in reads.items():
                    record(out[n], split, read(scores).argmax(dim=-1).tolist(), examples, task.labels)
        for row in out.values():
            log(f"{row.method}: dev accuracy {_mean_std(row.dev_accuracy)}")
        return list(out.values())

    base.eval()
    rows += prompted("zero-shot", None, (0,), calibrated=True)

    def few_shot(values: list, seed: int) -> list:
        chosen = few_shot_demonstrations(train, [e.label for e in train], config.shots, seed)
        demos = [
            demonstration(tokenizer, Template(template), {"text": train[i].text}, words[train[i].label]) for i in chosen
        ]
        longest = max(len(tokenizer.encode(w)) for w in words)
        return few_shot_prefixes(tokenizer, Template(template), demos, values, longest, causal, max_len)

    rows += prompted(f"few-shot ({config.shots} per label)", few_shot, config.seeds)
    if config.search_iterations:
        rows.append(prompt_search_row(load_base, tokenizer, task, template, config, dev, test or [], log))

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
                return TunedModel(
                    base, build_method(method, base, tokenizer, seed, words, task.prefix_text), readout, task.labels
                )

            row = None
            for seed in config.seeds:
                if row is None:  # the first seed also measures memory, on a model of its own (the probe takes steps)
                    probe = fresh(seed)
                    counts = probe.counts()
                    row = Row(name, readout_kind, counts["tuned"], counts["base"], "tuned")
                    row.peak_mib = step_memory_mib(probe, tokenizer, task, config)
                model = fresh(seed)
                tune_config = TuneConfig(
                    lr=spec.lr,
                    min_lr=spec.min_lr,
                    max_steps=config.max_steps,  # None: the trainer sizes the run by epochs (TuneConfig.for_task)
                    epochs=config.epochs,
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
        f"task {task.name}: seeds {list(config.seeds)}, "
        + (f"{config.max_steps} steps" if config.max_steps else f"{config.epochs:g} epochs")
        + f" per tuned run, {precision}"
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
