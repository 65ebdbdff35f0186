"""Instruction tuning: full fine-tuning of a causal run on {instruction, input, output} examples with the loop.

    L = L_LM + alpha L_align          (or L_align alone: output_only)       minilm.training.objectives.instruction_loss

Batches are drawn uniformly with replacement from the training instructions by a seeded generator (the data
position). Every `eval_every` steps the model answers `eval_examples` dev instructions greedily; the weights with
the best exact-match rate are kept (best.safetensors), and `patience` evaluations without a better rate stop the
run. The output is a run directory (config.json, tokenizer.json, the weights), so `generate --from` works on it.

Docs: docs/prompting.md (the instruction tuning loss; instruction data and the instruct command).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minilm.files import load_weights
from minilm.model import Transformer
from minilm.outputs import check_output, claim_output
from minilm.settings import PROJECT, RUNS, override, setting
from minilm.tokenizer import Tokenizer
from minilm.training.device import resolve_device, resolve_precision
from minilm.training.loop import LoopConfig
from minilm.training.objectives import instruction_loss
from minilm.training.run import BEST_WEIGHTS, INSTRUCT, PRETRAIN, RunLoop, load_run, write_run_files
from minilm.tuning.instructions import Instruction, answer, exact_match, instruction_batch, load_instructions

DEFAULT_DATA = PROJECT / "data" / "instructions"
DEFAULT_OUT = RUNS / "instruct"
ARGS_FILE = "instruct_args.json"


@dataclass(frozen=True)
class InstructConfig(LoopConfig):
    """How to instruction-tune. The default schedule is 20 warm-up steps, then a constant rate (min_lr None)."""

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


class InstructTrainer(RunLoop):
    """Instruction-tunes `model` on `train`, picking the best weights by exact match on `dev`; writes a run
    directory."""

    kind = "instruct"
    metric = "exact_match"
    higher_is_better = True
    args_file = ARGS_FILE

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
        if not model.config.causal:
            raise ValueError("instruction tuning needs a causal model; this one is masked (bidirectional)")
        super().__init__(model, config, out_dir, log)
        self.tokenizer, self.train_set, self.dev_set = tokenizer, train, dev[: config.eval_examples]
        self.data_generator = torch.Generator().manual_seed(config.seed)
        if resume:
            self.load_checkpoint()

    def forward_backward(self) -> tuple[float, int]:
        cfg = self.config
        rows = torch.randint(0, len(self.train_set), (cfg.batch_size,), generator=self.data_generator).tolist()
        batch = instruction_batch(self.tokenizer, [self.train_set[i] for i in rows], self.model.config.max_len)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self.autocast():
            logits = self.model(batch["input_ids"], attention_mask=batch["attention_mask"])
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


def instruct(
    base: str,
    out: str | None = None,
    data: str | os.PathLike[str] = DEFAULT_DATA,
    config: InstructConfig | None = None,
    *,
    question: Instruction | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Instruction-tune the causal run `base` as `train.py instruct` does; then report the best weights' dev exact
    match per instruction and answer `question` (default: the first of data/dev_new_phrasing.jsonl)."""
    config = config or InstructConfig()
    data, folder = Path(data), Path(out) if out else DEFAULT_OUT
    for name in ("train.jsonl", "dev.jsonl"):
        if not (data / name).is_file():
            raise FileNotFoundError(
                f"{data / name} does not exist: --data needs a folder with train.jsonl and dev.jsonl"
            )
    check_output(
        folder,
        INSTRUCT,
        resume=resume,
        overwrite=overwrite,
        reads=[("--base", base), ("--data", data)],
        known=[PRETRAIN],
    )
    train_set, dev_set = load_instructions(data / "train.jsonl"), load_instructions(data / "dev.jsonl")
    device = resolve_device(config.device)
    model, tokenizer, _ = load_run(base, "best", device)
    if not model.config.causal:
        raise ValueError(f"{base} holds a masked model: instruction tuning needs a causal one")
    if question is None and (data / "dev_new_phrasing.jsonl").is_file():
        question = load_instructions(data / "dev_new_phrasing.jsonl")[0]
    loss_text = "L_align" if config.output_only else f"L_LM + {config.alpha:g} L_align"
    log(
        f"instruct: {base} ({model.num_parameters():,} parameters, full fine-tuning) on {len(train_set):,} "
        f"instructions, loss {loss_text}, {config.max_steps} steps of {config.batch_size}, lr {config.lr:g}, "
        f"{resolve_precision(config.precision, device)}"
    )
    claim_output(folder, INSTRUCT, fresh=not resume)
    write_run_files(
        folder,
        tokenizer,
        model.config,
        {
            "base": str(Path(base).resolve()),
            "data": str(data.resolve()),
            **{k: v for k, v in config.to_dict().items() if k != "device"},
        },
        args_file=ARGS_FILE,
    )
    trainer = InstructTrainer(model, tokenizer, train_set, dev_set, config, folder, resume=resume, log=log)
    summary = trainer.fit()
    best = copy.deepcopy(trainer.model).eval()
    load_weights(best, folder / BEST_WEIGHTS)
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
    log(f"saved in {folder}/ (a run directory: python train.py generate --from {folder} ...)")
    return {**summary, "out": str(folder)}
