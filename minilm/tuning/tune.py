"""`train.py tune` as one function: a pretrained run + a task folder + a method -> a tuned model folder.

    settings = defaults (TuneTarget, TuneConfig, the method's settings dataclass) <- the resumed tune's tune_args.json
               <- the flags given

Before anything is written the inputs are checked: the output folder (minilm.outputs), the task, the readout, and
that the method fits the base (a soft prompt that leaves room for text, no more frozen blocks than the base has).
Then the loop trains with early stopping on dev; the test split is never evaluated here.

Docs: docs/tuning.md, docs/cli.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minilm.files import atomic_write
from minilm.model import ModelConfig
from minilm.outputs import check_output, claim_output
from minilm.settings import RUNS, setting
from minilm.training.budget import run_length
from minilm.training.device import resolve_device, resolve_precision
from minilm.training.run import INSTRUCT, PRETRAIN, load_run
from minilm.tuning.methods import FreezeSettings
from minilm.tuning.methods.base import PRETRAINED, pretrained_folder
from minilm.tuning.pretrained import LENGTH_SETTING, init_flag, pretrained_start
from minilm.tuning.readouts import READOUTS, Readout, build_readout
from minilm.tuning.registry import (
    METHODS,
    MethodSpec,
    method_spec,
    setting_flags,
    setting_keys,
    settings_from,
    with_task_words,
)
from minilm.tuning.tasks import Task, load_task
from minilm.tuning.trainer import TuneConfig, TuneTrainer
from minilm.tuning.tuned import ARGS_FILE, LAST_DIR, META_FILE, TUNE, TunedModel, read_metadata


def parse_label_words(text: str) -> tuple[str, ...]:
    """' bad, good' -> (' bad', ' good'): comma-separated, taken literally (a leading space is part of the word)."""
    words = tuple(text.split(","))
    if len(words) < 2 or not all(w.strip() for w in words):
        raise ValueError('expected at least two comma-separated label words in label order, e.g. " bad, good"')
    return words


@dataclass(frozen=True)
class TuneTarget:
    """What to tune, with what readout, and where it goes."""

    base: str | None = setting(
        None, "a run directory written by pretrain (required unless --resume)", type=str, metavar="RUN_DIR"
    )
    weights: str = setting("best", "which weights of the base", choices=("best", "last"))
    method: str | None = setting(None, "tuning method (required unless --resume)", type=str, choices=tuple(METHODS))
    task: str | None = setting(None, "task folder (required unless --resume)", type=str, metavar="TASK_DIR")
    out: str | None = setting(
        None, "where the tuned model goes (default: runs/tune-<task>-<method>)", type=str, metavar="DIR"
    )
    readout: str | None = setting(
        None,
        "classification head, or the LM scoring a label word (default: verbalizer when "
        "label words are known, else head)",
        type=str,
        choices=READOUTS,
    )
    template: str | None = setting(
        None,
        "prompt-based fine-tuning: the verbalizer scores the label words at the answer "
        'slot of this template, e.g. "{text} All in all, it was" (causal: the answer follows '
        'the end) or "{text} It was [MASK]." (masked); without it, the task.json template, else the text alone',
        type=str,
        metavar="TEXT",
    )
    label_words: tuple[str, ...] | None = setting(
        None,
        "verbalizer words in label order, comma-separated and taken "
        'literally, e.g. " bad, good" (default: task.json\'s label_words)',
        type=tuple,
        parse=parse_label_words,
        metavar="WORDS",
    )


TARGET_SETTINGS = tuple(f.name for f in dataclasses.fields(TuneTarget))
LOOP_SETTINGS = tuple(f.name for f in dataclasses.fields(TuneConfig))
APPLIES: dict[str, list[str]] = {}
"""Each method setting's key -> the methods it belongs to."""
FLAGS: dict[str, str] = {}
"""Each method setting's key -> its flag (--no-reparam for reparameterize)."""
for _spec in METHODS.values():
    for _key, _flag in zip(setting_keys(_spec), setting_flags(_spec)):
        APPLIES.setdefault(_key, []).append(_spec.name)
        FLAGS[_key] = _flag
FIXED_FOR_A_TUNE = (
    "base",
    "weights",
    "task",
    "method",
    "readout",
    "label_words",
    "template",
    "seed",
    "train_per_label",
    *APPLIES,
)
"""What a resumed tune must keep."""


def flag(key: str) -> str:
    return FLAGS.get(key, "--" + key.replace("_", "-"))


def tune_settings(given: dict[str, Any], resume: bool = False) -> tuple[dict[str, Any], Path]:
    """The settings of a tune (see the module docstring) and its output folder; every mistake is one line."""
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    for key in ("base", "task"):  # kept absolute, so --resume and classify work from any folder
        if given.get(key):
            given[key] = str(Path(given[key]).resolve())
    for key in ("init", "prefix_init"):  # a pre-trained start's folder too
        if pretrained_folder(given.get(key)):
            given[key] = PRETRAINED + str(Path(pretrained_folder(given[key])).resolve())
    if not resume:
        missing = [f"--{k}" for k in ("base", "method", "task") if not given.get(k)]
        if missing:
            raise ValueError(f"the following arguments are required: {', '.join(missing)}")
    if given.get("out"):
        out = Path(given["out"])
    elif given.get("task") and given.get("method"):
        out = RUNS / f"tune-{Path(given['task']).name}-{given['method']}"
    else:
        raise ValueError("--resume needs --out DIR (or --task and --method, to find runs/tune-<task>-<method>)")
    saved: dict[str, Any] = {}
    if resume:
        args_path = out / ARGS_FILE
        if not args_path.is_file():
            raise ValueError(
                f"--resume: {out} holds no tune to continue (no tune_args.json); start one without --resume"
            )
        saved = json.loads(args_path.read_text(encoding="utf-8"))
    method = given.get("method") or saved.get("method")
    spec = method_spec(method)
    for key in given:
        if key in APPLIES and method not in APPLIES[key]:
            users = " or ".join(f"--method {m}" for m in APPLIES[key])
            raise ValueError(f"{flag(key)} does not apply to --method {method}: it is a setting of {users}")
    for key in FIXED_FOR_A_TUNE if resume else ():
        if key in given and given[key] != saved.get(key):
            raise ValueError(
                f"--resume: the tune in {out} was run with {key}={saved.get(key)!r}, not {given[key]!r}; "
                f"drop {flag(key)} to continue it, or start a new tune with another --out"
            )
    s = {**dataclasses.asdict(TuneTarget()), **TuneConfig().to_dict(), "min_lr": spec.min_lr}
    s.update({k: v for k, v in saved.items() if k in s or k in setting_keys(spec)})
    s.update(given)
    s.update(run_length(given, resume))
    if "epochs" in given and ("max_steps" in given or "time_budget" in given):
        raise ValueError("give --epochs, --max-steps or --time-budget: one of them sizes the run")
    if "epochs" in given:  # the step count follows from the train split's size (tune fills it in)
        s["max_steps"], s["time_budget"] = None, None
    elif "max_steps" in given or "time_budget" in given:
        s["epochs"] = None
    s["out"] = str(out)
    settings = settings_from(spec, s)  # the method's settings, validated
    s.update(method_settings_keys(spec, settings))
    if s["lr"] is None:
        s["lr"] = spec.lr
    return s, out


def method_settings_keys(spec: MethodSpec, settings: Any) -> dict[str, Any]:
    """The settings as flat keys (what tune_args.json stores)."""
    if isinstance(settings, FreezeSettings):
        return {
            key: (settings.k if recipe == settings.recipe else None)
            for (recipe, _), key in zip(FreezeSettings.FLAGS.items(), setting_keys(spec))
        }
    return {key: getattr(settings, f.name) for f, key in zip(dataclasses.fields(settings), setting_keys(spec))}


def check_fits(spec: MethodSpec, settings: Any, config: ModelConfig, readout: Readout) -> None:
    """The method's sizes against the base's: one line naming the numbers, before anything is built."""
    n = getattr(settings, "prompt_len", 0) if spec.name in ("prompt", "prompt-encoder") else 0
    extra = readout.extra_tokens(config.causal)
    if config.max_len - n - extra < 1:
        taken = ", ".join(
            ([f"the soft prompt takes {n}"] if n else []) + ([f"the {readout.kind} {extra} more"] if extra else [])
        )
        fix = (
            f"use --prompt-len {config.max_len - extra - 1} or less"
            if n and config.max_len - extra > 1
            else "use shorter label words"
        )
        raise ValueError(
            f"{'--prompt-len ' + str(n) if n else 'the readout'} leaves no room for text: the base's context "
            f"(max_len) is {config.max_len} tokens, {taken}; {fix}"
        )
    if isinstance(settings, FreezeSettings) and settings.k > config.n_layers:
        raise ValueError(
            f"{FreezeSettings.FLAGS[settings.recipe][0]} {settings.k}: the base has {config.n_layers} layer(s); "
            f"choose 0..{config.n_layers}"
        )
    if spec.name == "lora" and settings.rank > config.d_model:
        raise ValueError(
            f"--lora-rank {settings.rank} is larger than the base's width d_model={config.d_model}: "
            f"choose 1..{config.d_model}"
        )


def percent(part: int, whole: int) -> str:
    p = 100 * part / whole
    return f"{p:.2f}%" if p >= 0.01 or p == 0 else f"{p:.1g}%"


def describe_split(task: Task, split: str) -> str:
    balance = task.balance(split)
    return f"{split} {sum(balance.values()):,} (" + ", ".join(f"{label}: {n:,}" for label, n in balance.items()) + ")"


def tune(
    given: dict[str, Any], *, resume: bool = False, overwrite: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Tune as `train.py tune` does; `given` holds the settings named on the command line. Returns the loop's summary
    with the best dev report ("dev") and the output folder ("out")."""
    s, out = tune_settings(given, resume)
    spec = method_spec(s["method"])
    settings = settings_from(spec, s)
    base_dir = Path(s["base"])
    source = pretrained_folder(getattr(settings, "init", None))
    check_output(
        out,
        TUNE,
        resume=resume,
        overwrite=overwrite,
        reads=[("--base", base_dir), ("--task", s["task"]), *([(init_flag(settings), source)] if source else [])],
        known=[PRETRAIN, INSTRUCT],
    )
    if resume and not (out / "train_state.pt").is_file():
        raise ValueError(
            f"--resume: {out} holds no checkpoint yet (train_state.pt is written at the first dev evaluation); "
            "start again without --resume"
        )
    device = resolve_device(s["device"])
    task = load_task(s["task"])
    config = TuneConfig(**{**{k: s[k] for k in LOOP_SETTINGS}, "device": device})
    train_split, dev_split = (
        config.train_examples(task),
        task.split("dev"),
    )  # a missing dev split (or a label with fewer than --train-per-label examples) is an error now, not after setup
    config = config.for_task(len(train_split))
    s["max_steps"] = config.max_steps  # epochs as steps, for the log line and tune_args.json
    base, tokenizer, _ = load_run(str(base_dir), s["weights"], device)
    c = base.config
    readout, words = build_readout(task, tokenizer, c.d_model, s["readout"], s["label_words"], s["template"], s["seed"])
    s["readout"], s["label_words"] = readout.kind, words
    known_words = words or ([task.label_words[label] for label in task.labels] if task.label_words else None)
    resolved = with_task_words(settings, known_words, task.prefix_text)
    resolved, start = pretrained_start(
        spec.name, resolved, base, given_length=given.get(LENGTH_SETTING.get(spec.name, ""))
    )  # P_0 = P*_source for a pretrained:DIR init (its length and offset in the settings), else None
    check_fits(spec, resolved, c, readout)
    method = spec.method.for_base(base, resolved, seed=s["seed"], tokenizer=tokenizer, start=start)
    model = TunedModel(base, method, readout, task.labels)
    if resume and (out / LAST_DIR / META_FILE).is_file():
        if read_metadata(out / LAST_DIR).get("base_weights_sha256") != model.base_sha256:
            raise ValueError(
                f"--resume: the tune in {out} started from other weights than {base_dir}'s {s['weights']} "
                "weights now (was the base trained further?); start a new tune with another --out"
            )

    counts = model.counts()
    log(
        f"base: {base_dir} ({s['weights']} weights), {'causal' if c.causal else 'masked'} LM with "
        f"{counts['base']:,} parameters ({c.n_layers} layers x {c.d_model} wide, context {c.max_len}) on {device}"
    )
    test_note = f" | test {len(task.splits['test']):,}, not evaluated while tuning" if "test" in task.splits else ""
    log(
        f"task {task.name}: labels {', '.join(task.labels)} | {describe_split(task, 'train')} | "
        f"{describe_split(task, 'dev')}{test_note}"
    )
    if config.train_per_label:
        log(
            f"labelled budget: {config.train_per_label} train examples per label, drawn with seed {s['seed']}: "
            f"{len(train_split):,} of the {len(task.split('train')):,}"
        )
    if words:
        log(
            "readout: verbalizer, the LM scores "
            + ", ".join(f"{label} -> {w!r}" for label, w in zip(task.labels, words))
        )
    else:
        log(
            f"readout: classification head on the {'last real token' if c.causal else '[CLS] position'} "
            f"({counts['readout']:,} parameters)"
        )
    hp = ", ".join(f"{k}={v}" for k, v in method.hyperparameters().items())
    log(
        f"method {spec.name}{f' ({hp})' if hp else ''}: trainable: {counts['trainable']:,} parameters "
        f"({percent(counts['trainable'], counts['base'])} of the base's {counts['base']:,}); "
        f"saved for inference: {counts['tuned']:,}"
    )
    room = model.max_text_tokens()
    texts = [e.text for e in train_split + dev_split]
    cut = sum(len(e.ids) > room for e in tokenizer.backend.encode_batch(texts, add_special_tokens=False))
    if cut:
        log(
            f"note: {cut:,} of the {len(texts):,} train and dev texts are longer than the {room} text tokens that fit "
            f"in the base's context of {c.max_len}; their ends are cut"
        )
    epochs_note = f" ({s['epochs']:g} epochs)" if s["epochs"] else ""
    log(
        f"training: {resolve_precision(s['precision'], device)}, lr {s['lr']:g}, "
        f"{s['max_steps'] or 'the'} steps{'' if s['max_steps'] else ' that fit in ' + s['time_budget']} of "
        f"{s['batch_size']} examples{epochs_note}, dev evaluation every {s['eval_every']} steps "
        f"(patience {s['patience'] or 'off'}); out {out}"
    )

    claim_output(out, TUNE, fresh=not resume)  # only now that every input is known to be good
    saved = {**{k: v for k, v in s.items() if k != "device"}, "out": str(out.resolve())}
    atomic_write(out / ARGS_FILE, json.dumps(saved, indent=2) + "\n")
    extra = {"base_run": str(base_dir), "base_weights": s["weights"], "task": s["task"], "tune_args": saved}
    trainer = TuneTrainer(model, tokenizer, task, config, out, resume=resume, log=log, extra_metadata=extra)
    summary = trainer.fit()
    meta = read_metadata(out)
    dev = meta["dev"]
    early = " (stopped early: dev macro-F1 stopped improving)" if summary.get("stopped_early") else ""
    log(
        f"done at step {summary['step']}{early}; best on dev at step {meta['step']}: accuracy {dev['accuracy']:.4f}, "
        f"macro-F1 {dev['macro_f1']:.4f} ({dev['n']:,} examples)"
    )
    log(
        f"saved in {out}/ (tuned.json, tuned.safetensors: {counts['tuned']:,} numbers on top of the base; "
        f"the latest state in {out / LAST_DIR}/)"
    )
    log(f'classify a text: python train.py classify --from {out} --text "..."')
    if "test" in task.splits:
        log(
            f"the test split was not evaluated; once the settings are chosen on dev: "
            f"python train.py classify --from {out} --task {s['task']} --split test"
        )
    return {**summary, "dev": dev, "out": str(out)}
