"""`train.py pretrain` as one function: settings -> tokenizer, cached corpus, model, the loop, a run directory, a demo.

    settings = defaults (ModelConfig, TrainConfig, CorpusConfig) <- a --preset <- a --config file <- the resumed
               run's train_args.json <- the flags given

Under torchrun, rank 0 trains the tokenizer and encodes the corpus; the other processes wait for it, and a failure
there stops every process with the same one-line error.

Docs: docs/training.md, docs/cli.md.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from minilm.model import ModelConfig, Transformer, complete, fill_mask
from minilm.model.generate import format_candidates
from minilm.outputs import check_output, claim_output
from minilm.settings import RUNS, settings_fields
from minilm.tokenizer import Tokenizer
from minilm.training.budget import run_length
from minilm.training.corpus import CorpusConfig, prepare_corpus, read_corpus
from minilm.training.device import resolve_device, resolve_precision
from minilm.training.loop import Processes
from minilm.training.presets import preset
from minilm.training.run import CONFIG, INSTRUCT, PRETRAIN, TOKENIZER, load_run, read_train_args, write_run_files
from minilm.training.trainer import TrainConfig, Trainer

MODEL_SETTINGS = tuple(f.name for f in settings_fields(ModelConfig) if f.metadata["cli"])
TRAIN_SETTINGS = tuple(f.name for f in settings_fields(TrainConfig))
CORPUS_SETTINGS = tuple(f.name for f in settings_fields(CorpusConfig))
FIXED_FOR_A_RUN = (*MODEL_SETTINGS, "objective", "data", "hold_out", "val_fraction", "tokenizer")
"""What a resumed run must keep."""


def default_settings() -> dict[str, Any]:
    """Every pretraining setting at its default: one flat dict over ModelConfig, TrainConfig and CorpusConfig."""
    values = {**dataclasses.asdict(ModelConfig()), **TrainConfig().to_dict(), **dataclasses.asdict(CorpusConfig())}
    values["d_ff"] = None  # 4 x d_model, for whatever width is chosen
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k != "causal"}


def flag(name: str) -> str:
    fields = {f.name: f for cls in (ModelConfig, TrainConfig, CorpusConfig) for f in settings_fields(cls)}
    return fields[name].metadata.get("flag") or "--" + name.replace("_", "-")


def pretrain_settings(given: dict[str, Any], resume: bool = False, config_file: str | None = None) -> dict[str, Any]:
    """The settings of a run (see the module docstring), with `out`, `d_ff` and `preset` filled in."""
    settings = default_settings()
    given = dict(given)
    name = given.pop("preset", None)
    out = Path(given.get("out") or RUNS / given.get("objective", settings["objective"]))
    saved = read_train_args(out) if resume else {}
    if resume and name is not None and name != saved.get("preset", "default"):
        raise ValueError(
            f"--resume: the run in {out} was started with --preset {saved.get('preset', 'default')}, not {name}; "
            "drop --preset to continue it, or start a new run with another --out"
        )
    name = name or saved.get("preset") or "default"
    settings.update(preset(name).values())
    if config_file:
        c = ModelConfig.load(config_file)
        settings.update({key: getattr(c, key) for key in MODEL_SETTINGS}, objective="causal" if c.causal else "masked")
    for key in ("data", "hold_out"):  # kept absolute, so eval and --resume work from any folder
        if key in given:
            given[key] = [str(Path(p).resolve()) for p in given[key]]
    if resume:
        if not saved:
            raise ValueError(
                f"--resume: {out} holds no run to continue (no train_args.json); start one without --resume"
            )
        for key in FIXED_FOR_A_RUN:
            if key in given and given[key] != saved.get(key):
                raise ValueError(
                    f"--resume: the run in {out} was trained with {flag(key)}={saved.get(key)!r}, not "
                    f"{given[key]!r}; drop that flag to continue it, or start a new run with another --out"
                )
        settings.update({k: v for k, v in saved.items() if k in settings})
    settings.update(given)
    settings.update(run_length(given, resume))
    settings["out"], settings["preset"] = str(out), name
    settings["cache_dir"] = str(Path(settings["cache_dir"] or out.parent / ".cache").resolve())
    if settings["d_ff"] is None:
        settings["d_ff"] = 4 * settings["d_model"]
    return settings


def _prepare(s: dict[str, Any], out: Path, resume: bool, overwrite: bool) -> tuple[Tokenizer, ModelConfig, Any]:
    """Rank 0's part of starting a run: check --out, train (or load) the tokenizer, encode the corpus, write the run
    files."""
    reads = (
        [("--data", p) for p in s["data"]]
        + [("--hold-out", p) for p in s["hold_out"]]
        + ([("--tokenizer", s["tokenizer"])] if s["tokenizer"] else [])
    )
    check_output(out, PRETRAIN, resume=resume, overwrite=overwrite, reads=reads, known=[INSTRUCT])
    if resume or s["tokenizer"]:
        tokenizer = Tokenizer.load(out / TOKENIZER if resume else s["tokenizer"])
    else:
        train_texts = read_corpus(s["data"], s["val_fraction"], s["skip_invalid_utf8"], s["hold_out"]).train
        tokenizer = Tokenizer.train(texts=train_texts, vocab_size=s["vocab_size"])
    config = ModelConfig(
        **{
            **{k: s[k] for k in MODEL_SETTINGS},
            "vocab_size": tokenizer.vocab_size,
            "causal": s["objective"] == "causal",
        }
    )
    if resume and ModelConfig.load(out / CONFIG) != config:
        raise ValueError(
            f"--resume: {out}/{CONFIG} describes a different model than these settings; "
            "resume with the flags the run was started with"
        )
    corpus = prepare_corpus(
        s["data"], tokenizer, s["cache_dir"], s["val_fraction"], s["skip_invalid_utf8"], s["hold_out"]
    )
    claim_output(out, PRETRAIN, fresh=not resume)  # only now that the data is known to be good
    write_run_files(out, tokenizer, config, {k: v for k, v in s.items() if k != "device"})
    return tokenizer, config, corpus


def pretrain(
    given: dict[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    config_file: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Pretrain a model as `train.py pretrain` does; `given` holds the settings named on the command line (and `out`).

    Returns the trainer's summary (step, the best weights' metrics on the whole validation split in "val").
    """
    s = pretrain_settings(given, resume, config_file)
    out = Path(s["out"])
    procs = Processes.from_env()
    config = TrainConfig(**{k: s[k] for k in TRAIN_SETTINGS})  # invalid settings fail here, before anything is written
    if config.fsdp and procs.world_size < 2:
        raise ValueError(
            "--fsdp shards the model over the processes of a launch: start the run with "
            "torchrun --nproc_per_node=N (N >= 2) train.py pretrain --fsdp ..."
        )
    owns_group = procs.world_size > 1 and not dist.is_initialized()  # a caller's own process group is left to it
    if owns_group:
        dist.init_process_group("nccl" if resolve_device(config.device) == "cuda" else "gloo")
    say = log if procs.is_main else (lambda _: None)
    overridden = sorted(set(given) & set(preset(s["preset"]).settings))
    say(
        preset(s["preset"]).describe()
        + (f"; given beside it: {', '.join(flag(k) for k in overridden)}" if overridden else "")
    )
    failure = None
    if procs.is_main:
        try:
            tokenizer, model_config, corpus = _prepare(s, out, resume, overwrite)
        except (ValueError, FileNotFoundError) as e:
            failure = e
    if procs.world_size > 1:  # tell the other processes whether rank 0 got the data ready, then they read it
        box = [None if failure is None else str(failure)]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            if owns_group:
                dist.destroy_process_group()
            raise failure if failure is not None else ValueError(box[0])
        if not procs.is_main:
            tokenizer = Tokenizer.load(out / TOKENIZER)
            model_config = ModelConfig.load(out / CONFIG)
            corpus = prepare_corpus(
                s["data"], tokenizer, s["cache_dir"], s["val_fraction"], s["skip_invalid_utf8"], s["hold_out"]
            )
    elif failure is not None:
        raise failure

    model, c = Transformer(model_config, seed=s["seed"]), model_config
    device = resolve_device(config.device)
    say(
        f"minilm: {s['objective']} LM, {model.num_parameters() / 1e6:.2f}M parameters ({c.n_layers} layers x "
        f"{c.d_model} wide, {c.n_heads} heads, context {c.max_len}, vocab {c.vocab_size}) on {device}"
        f"{f' x {procs.world_size} processes' if procs.world_size > 1 else ''}"
        f"{' (FSDP2: parameters, gradients and optimizer state sharded)' if config.fsdp else ''}, "
        f"{resolve_precision(config.precision, device)}"
    )
    say(
        f"data: {len(corpus.train):,} train / {len(corpus.val):,} validation tokens from {len(corpus.files)} file(s)"
        + (
            f" ({corpus.removed_lines:,} lines held out: dev or test texts of {', '.join(s['hold_out'])})"
            if s["hold_out"]
            else ""
        )
        + f"; run directory {out}"
    )
    try:
        trainer = Trainer(model, tokenizer, corpus, config, out, resume=resume, log=say)
        start = time.perf_counter()
        summary = trainer.fit()
        if procs.world_size > 1:
            dist.barrier()  # rank 0 ends with a full evaluation; a process that left the group early aborts in gloo
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
    if not procs.is_main:
        return summary
    val = summary["val"]
    bpb = f", {val['bits_per_byte']:.3f} bits per byte" if "bits_per_byte" in val else ""
    say(
        f"done: {summary['step']} steps in {(time.perf_counter() - start) / 60:.1f} min; best weights: validation loss "
        f"{val['loss']:.4f} per token (perplexity {val['perplexity']:.2f}){bpb} on the whole validation split"
    )
    say(f"saved in {out}/ (best.safetensors, model.safetensors, metrics.jsonl)")
    demo(out, corpus, device, say)
    return summary


def demo(out: Path, corpus: Any, device: str, say: Callable[[str], None]) -> None:
    """A sample from the best weights (causal), or a fill-mask of a validation line (masked)."""
    model, tokenizer, _ = load_run(out, "best", device)
    val_text = tokenizer.decode(corpus.val.ids[:4096].tolist())  # the start of the validation text, for the demo
    if model.config.causal:
        prompt = tokenizer.decode(tokenizer.encode(demo_prompt(val_text))[: model.config.max_len // 4])
        say(f"\nsample (python train.py generate --from {out} --prompt {json.dumps(prompt)}):")
        say(complete(model, tokenizer, prompt, 200, temperature=0.8, seed=0))
    else:
        masked, answer = mask_one_word(val_text, tokenizer)
        say(
            f"\nfill-mask demo (python train.py fill-mask --from {out} --text {json.dumps(masked)}), answer {answer!r}:"
        )
        say(format_candidates(fill_mask(model, tokenizer, masked, top_k=5)))


def demo_prompt(text: str, min_words: int = 4) -> str:
    """A demo prompt from the validation text: its first line with at least `min_words` words."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if len(line.split()) >= min_words), lines[0] if lines else "The")


def mask_one_word(text: str, tokenizer: Tokenizer) -> tuple[str, str]:
    """A fill-mask demo from the validation text: the first line of 6+ words with a word that is one token,
    that word (the one nearest the middle) replaced by [MASK]. Returns (masked line, the hidden word)."""
    for line in [line.strip() for line in text.splitlines()][:200]:
        words = line.split(" ")
        if len(words) < 6:
            continue
        for i in sorted(range(1, len(words)), key=lambda i: abs(i - len(words) / 2)):
            word = words[i].strip(",.;:!?'\"")
            if word.isalpha() and len(tokenizer.encode(" " + word)) == 1:
                masked = " ".join(words[:i] + [words[i].replace(word, "[MASK]", 1)] + words[i + 1 :])
                return masked.replace(" [MASK]", "[MASK]", 1), " " + word
    return text.splitlines()[0] + "[MASK]", "(none)"
