"""Instruction tuning: a causal run trained on {instruction, input, output} examples with the loop, by full
fine-tuning or by any tuning method of the registry (prompt, prefix, LoRA, adapters, BitFit, freezing).

    L = L_LM + alpha L_align          (or L_align alone: output_only)       minilm.training.objectives.instruction_loss

Batches are drawn uniformly with replacement from the training instructions by a seeded generator (the data
position). Every `eval_every` steps the model answers `eval_examples` dev instructions greedily; the weights with
the best exact-match rate are kept, and `patience` evaluations without a better rate stop the run.

    --method full (the default)   every weight trains; the output is a run directory (config.json, tokenizer.json,
                                  best.safetensors), so `generate --from`, `eval` and `export` work on it
    --method prompt|prefix|...    the base is frozen and only the method's tensors train, through the same hooks as
                                  `tune` (the model reads `TunedModel.token_logits`); the output is a tuned folder
                                  (tuned.json with the base's hash, tuned.safetensors with only the tuned tensors),
                                  which `generate --from` answers with: the base plus the tuned parameters

Docs: docs/prompting.md (the instruction tuning loss; instruction data and the instruct command).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from minilm.files import atomic_write, load_weights
from minilm.model import ModelConfig, Transformer
from minilm.outputs import OutputKind, check_output, claim_output
from minilm.settings import PROJECT, RUNS, override, setting
from minilm.tokenizer import Tokenizer
from minilm.training.device import resolve_device, resolve_precision
from minilm.training.loop import METRICS_FILE, STATE_FILE, LoopConfig
from minilm.training.objectives import instruction_loss
from minilm.training.run import BEST_WEIGHTS, INSTRUCT, PRETRAIN, RunLoop, load_run, write_run_files
from minilm.tuning.instructions import Instruction, answer, exact_match, instruction_batch, load_instructions
from minilm.tuning.methods.base import count
from minilm.tuning.readouts import LanguageModelReadout
from minilm.tuning.registry import METHODS, method_spec, setting_keys, settings_from, with_task_words
from minilm.tuning.tuned import LAST_DIR, META_FILE, REPARAM_FILE, TUNED_FILE, TunedModel
from minilm.tuning.tuned_loop import TunedLoop

DEFAULT_DATA = PROJECT / "data" / "instructions"
DEFAULT_OUT = RUNS / "instruct"
ARGS_FILE = "instruct_args.json"
FULL_LR = 1e-3
"""Full fine-tuning's peak rate on instructions (docs/prompting.md); another method starts from its `tune` rate."""
INSTRUCT_TUNE = OutputKind(
    "instruct-tune",
    "an instruction-tuned method",
    (META_FILE, TUNED_FILE, REPARAM_FILE, STATE_FILE, METRICS_FILE, ARGS_FILE, f"{LAST_DIR}/", "loss.png"),
)


@dataclass(frozen=True)
class InstructConfig(LoopConfig):
    """How to instruction-tune. The default schedule is 20 warm-up steps, then a constant rate (min_lr None)."""

    method: str = setting(
        "full",
        "what trains: every weight (full, written as a run directory), or a tuning method on the frozen base "
        "(written as a tuned folder)",
        choices=tuple(METHODS),
    )
    lr: float | None = override(
        LoopConfig,
        "lr",
        None,
        help=f"peak learning rate (default: {FULL_LR:g} for full fine-tuning; another method's tune default: "
        + ", ".join(f"{name} {spec.lr:g}" for name, spec in METHODS.items() if name != "full")
        + ")",
    )
    alpha: float = setting(1.0, "weight of the output-only loss L_align", check="non_negative")
    output_only: bool = setting(False, "train on L_align alone (no loss on the instruction and input)")
    batch_size: int = setting(16, "examples per step", check="positive")
    eval_examples: int = setting(60, "dev examples answered at every evaluation (and at the end)", check="positive")
    max_steps: int = override(LoopConfig, "max_steps", 600)
    min_lr: float | None = override(
        LoopConfig,
        "min_lr",
        None,
        help="learning rate at the end of the cosine decay (default: none, the rate stays at --lr after warm-up)",
    )
    warmup_steps: int = override(LoopConfig, "warmup_steps", 20)
    eval_every: int = override(LoopConfig, "eval_every", 100)
    log_every: int = override(LoopConfig, "log_every", 50)

    def __post_init__(self) -> None:
        super().__post_init__()
        method_spec(self.method)

    def peak_lr(self) -> float:
        """lr, or the method's default when none was given."""
        if self.lr is not None:
            return self.lr
        return FULL_LR if self.method == "full" else method_spec(self.method).lr

    def with_peak_lr(self) -> InstructConfig:
        """This config with lr filled in (`peak_lr`), as the loop runs it and instruct_args.json stores it."""
        return self if self.lr is not None else dataclasses.replace(self, lr=self.peak_lr())


def check_causal(config: ModelConfig) -> None:
    if not config.causal:
        raise ValueError("instruction tuning needs a causal model; this one is masked (bidirectional)")


class InstructionSteps(ABC):
    """The step and the evaluation every instruction loop shares: a batch's L_LM + alpha L_align through
    `logits`, and the dev exact match of greedy answers."""

    metric = "exact_match"
    higher_is_better = True
    args_file = ARGS_FILE
    config: InstructConfig
    model: Any
    device: torch.device

    def use_data(
        self, tokenizer: Tokenizer, train: list[Instruction], dev: list[Instruction], max_len: int, resume: bool
    ) -> None:
        """The instructions, the room a sequence has (`max_len` tokens), the seeded data position; then the saved
        state when resuming."""
        self.tokenizer, self.train_set, self.dev_set = tokenizer, train, dev[: self.config.eval_examples]
        self.max_len = max_len
        self.data_generator = torch.Generator().manual_seed(self.config.seed)
        if resume:
            self.load_checkpoint()  # type: ignore[attr-defined]

    @abstractmethod
    def logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Next-token logits (B, T, V) at the batch's token positions."""

    def forward_backward(self) -> tuple[float, int]:
        cfg = self.config
        rows = torch.randint(0, len(self.train_set), (cfg.batch_size,), generator=self.data_generator).tolist()
        batch = instruction_batch(self.tokenizer, [self.train_set[i] for i in rows], self.max_len)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self.autocast():  # type: ignore[attr-defined]
            logits = self.logits(batch["input_ids"], batch["attention_mask"])
        loss = instruction_loss(
            logits.float(),
            batch["input_ids"],
            batch["output_mask"],
            alpha=cfg.alpha,
            output_only=cfg.output_only,
            attention_mask=batch["attention_mask"],
        )
        loss.backward()
        return loss.item(), cfg.batch_size

    def evaluate(self) -> dict[str, Any]:
        scores = exact_match(self.model, self.tokenizer, self.dev_set)
        return {"exact_match": scores.pop("all"), "per_instruction": scores, "n": len(self.dev_set)}

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"dev exact match {metrics['exact_match']:.3f} on {metrics['n']} examples"


class InstructTrainer(InstructionSteps, RunLoop):
    """Instruction-tunes every weight of `model` on `train`, picking the best weights by exact match on `dev`; writes
    a run directory."""

    kind = "instruct"

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        train: list[Instruction],
        dev: list[Instruction],
        config: InstructConfig,
        out_dir: str | os.PathLike[str],
        resume: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        check_causal(model.config)
        super().__init__(model, config.with_peak_lr(), out_dir, log)
        self.use_data(tokenizer, train, dev, model.config.max_len, resume)

    def logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids, attention_mask=attention_mask)


class InstructTuner(InstructionSteps, TunedLoop):
    """Instruction-tunes a method's tensors on the frozen base (`model` is a TunedModel read as a language model);
    the best by dev exact match is saved as a tuned folder."""

    kind = "instruct-tune"

    def __init__(
        self,
        model: TunedModel,
        tokenizer: Tokenizer,
        train: list[Instruction],
        dev: list[Instruction],
        config: InstructConfig,
        out_dir: str | os.PathLike[str],
        resume: bool = False,
        log: Callable[[str], None] = print,
        extra_metadata: dict[str, Any] | None = None,
    ) -> None:
        check_causal(model.base.config)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(model, config.with_peak_lr(), out_dir, log)
        self.extra = extra_metadata or {}
        # the room a sequence has: the soft prompt's (or a prefix text's) positions come first
        self.use_data(tokenizer, train, dev, model.max_text_tokens(), resume)

    def logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.token_logits(input_ids, attention_mask)

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"exact_match": metrics["exact_match"], "n": metrics["n"]}

    def data_state(self) -> dict[str, Any]:
        return {"data_generator": self.data_generator.get_state()}

    def restore_data(self, state: dict[str, Any]) -> None:
        self.data_generator.set_state(state["data_generator"])


def instruct(
    base: str,
    out: str | None = None,
    data: str | os.PathLike[str] = DEFAULT_DATA,
    config: InstructConfig | None = None,
    *,
    method_settings: dict[str, Any] | None = None,
    question: Instruction | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Instruction-tune the causal run `base` as `train.py instruct` does; then report the best weights' dev exact
    match per instruction and answer `question` (default: the first of data/dev_new_phrasing.jsonl).

    method_settings: the method's settings as flat keys (the command line's: lora_rank, adapter_size, ...)."""
    config = config or InstructConfig()
    config = config.with_peak_lr()
    spec = method_spec(config.method)
    given = {k: v for k, v in (method_settings or {}).items() if v is not None}
    foreign = sorted(set(given) - set(setting_keys(spec)))
    if foreign:
        raise ValueError(
            f"--{foreign[0].replace('_', '-')} is not a setting of --method {spec.name}"
            + (
                f" (its settings: {', '.join('--' + k.replace('_', '-') for k in setting_keys(spec))})"
                if setting_keys(spec)
                else ""
            )
        )
    settings = with_task_words(settings_from(spec, given), None)  # no label words: labels -> vocab, task -> random
    full = spec.name == "full"
    data, folder = Path(data), Path(out) if out else DEFAULT_OUT
    for name in ("train.jsonl", "dev.jsonl"):
        if not (data / name).is_file():
            raise FileNotFoundError(
                f"{data / name} does not exist: --data needs a folder with train.jsonl and dev.jsonl"
            )
    kind = INSTRUCT if full else INSTRUCT_TUNE
    others = [PRETRAIN] + ([INSTRUCT_TUNE] if full else [INSTRUCT])
    check_output(
        folder, kind, resume=resume, overwrite=overwrite, reads=[("--base", base), ("--data", data)], known=others
    )
    train_set, dev_set = load_instructions(data / "train.jsonl"), load_instructions(data / "dev.jsonl")
    device = resolve_device(config.device)
    model, tokenizer, _ = load_run(base, "best", device)
    if not model.config.causal:
        raise ValueError(f"{base} holds a masked model: instruction tuning needs a causal one")
    if question is None and (data / "dev_new_phrasing.jsonl").is_file():
        question = load_instructions(data / "dev_new_phrasing.jsonl")[0]
    loss_text = "L_align" if config.output_only else f"L_LM + {config.alpha:g} L_align"
    n_base = model.num_parameters()
    args = {
        "base": str(Path(base).resolve()),
        "data": str(data.resolve()),
        **{k: v for k, v in config.to_dict().items() if k != "device"},
    }
    what = "full fine-tuning"
    if not full:
        method = spec.method.for_base(model, settings, seed=config.seed, tokenizer=tokenizer)
        tuned = TunedModel(model, method, LanguageModelReadout())
        counts = tuned.counts()
        hp = ", ".join(f"{k}={v}" for k, v in tuned.method.hyperparameters().items())
        what = f"{spec.name}{f' ({hp})' if hp else ''}, {counts['trainable']:,} trainable"
        args.update(tuned.method.hyperparameters())
    log(
        f"instruct: {base} ({n_base:,} parameters, {what}) on {len(train_set):,} "
        f"instructions, loss {loss_text}, {config.max_steps} steps of {config.batch_size}, lr {config.lr:g}, "
        f"{resolve_precision(config.precision, device)}"
    )
    claim_output(folder, kind, fresh=not resume)
    if full:
        write_run_files(folder, tokenizer, model.config, args, args_file=ARGS_FILE)
        trainer = InstructTrainer(model, tokenizer, train_set, dev_set, config, folder, resume=resume, log=log)
        summary = trainer.fit()
        best: Transformer | TunedModel = copy.deepcopy(trainer.model).eval()
        load_weights(best, folder / BEST_WEIGHTS)
    else:
        atomic_write(folder / ARGS_FILE, json.dumps(args, indent=2) + "\n")
        extra = {"base_run": args["base"], "base_weights": "best", "instruct_args": args}
        tuner = InstructTuner(
            tuned, tokenizer, train_set, dev_set, config, folder, resume=resume, log=log, extra_metadata=extra
        )
        summary = tuner.fit()
        best = TunedModel.load(folder, load_run(base, "best", device)[0]).eval()
    scores = exact_match(best, tokenizer, dev_set[: config.eval_examples])
    summary["dev"] = scores
    log(
        f"dev exact match on {min(config.eval_examples, len(dev_set))} unseen inputs (the best weights): "
        f"{scores['all']:.3f} | " + " | ".join(f"{k} {v:.2f}" for k, v in scores.items() if k != "all")
    )
    if question is not None:
        reply = answer(best, tokenizer, question)
        summary["answer"] = reply
        log(f"unseen instruction: {question.instruction!r} input: {question.input!r}")
        log(f"answer: {reply!r}")
    if full:
        log(f"saved in {folder}/ (a run directory: python train.py generate --from {folder} ...)")
    else:
        log(
            f"saved in {folder}/ (tuned.json, tuned.safetensors: {count(best.tuned_state()):,} numbers on top of the "
            f"base): python train.py generate --from {folder} --instruction ... --input ..."
        )
    return {**summary, "out": str(folder)}
