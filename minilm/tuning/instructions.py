"""Instruction data: JSONL of {instruction, input, output}, laid out as one sequence for instruction tuning.

    Instruction: {instruction}
    Input: {input}
    Output: {output}[EOS]

The output tokens (with the final [EOS], so the model learns to stop) are marked in `output_mask`; the
loss is `objectives.instruction_loss`. When an example is longer than the context only the input is cut:
the instruction, the prompt's literal text and the whole output are kept. Answers are greedy continuations up to
[EOS], a batch of prompts at a time (left-padded, so every row's last real token is the last column), always valid
UTF-8 (minilm.model.utf8), by a plain run or by a tuned model (its base with the tuned parameters).

Docs: docs/prompting.md (instruction data and the instruct command).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from minilm.files import read_jsonl
from minilm.model import Transformer, generate
from minilm.model.utf8 import Utf8Constraint
from minilm.prompting import Template
from minilm.tokenizer import EOS_ID, PAD_ID, Tokenizer
from minilm.tuning.tuned import TunedModel

PROMPT = Template("Instruction: {instruction}\nInput: {input}\nOutput:")
FIELDS = ("instruction", "input", "output")


@dataclass(frozen=True)
class Instruction:
    instruction: str
    input: str
    output: str


def load_instructions(path: str | os.PathLike[str]) -> list[Instruction]:
    """Read a JSONL file of {"instruction", "input", "output"} objects; problems name the file and line."""
    path = os.fspath(path)
    examples = []
    for lineno, record in read_jsonl(path):
        if not isinstance(record, dict) or any(not isinstance(record.get(k), str) for k in FIELDS):
            raise ValueError(f"{path} line {lineno}: each line needs string fields instruction, input and output")
        if not record["instruction"].strip() or not record["output"].strip():
            raise ValueError(f"{path} line {lineno}: the instruction and the output must not be empty")
        examples.append(Instruction(record["instruction"], record["input"], record["output"]))
    if not examples:
        raise ValueError(f"{path} holds no instructions")
    return examples


def prompt_ids(tokenizer: Tokenizer, example: Instruction, budget: int) -> list[int]:
    """The prompt up to "Output:", at most `budget` ids, cutting only the input."""
    values = {"instruction": example.instruction, "input": example.input or "-"}
    return PROMPT.render(tokenizer, values, budget, slot_tokens=0, cut=["input"]).ids


def encode_instruction(tokenizer: Tokenizer, example: Instruction, max_len: int) -> tuple[list[int], list[bool]]:
    """(ids, output_mask) of one example: the prompt, then " output" and [EOS], which output_mask marks."""
    output = tokenizer.encode(" " + example.output.strip()) + [EOS_ID]
    if len(output) >= max_len:
        raise ValueError(
            f"an output of {len(output)} tokens does not fit in the context of {max_len} with its prompt: "
            f"shorten it ({example.output[:40]!r}...)"
        )
    prompt = prompt_ids(tokenizer, example, max_len - len(output))
    return prompt + output, [False] * len(prompt) + [True] * len(output)


def instruction_batch(tokenizer: Tokenizer, examples: list[Instruction], max_len: int) -> dict[str, Tensor]:
    """input_ids, attention_mask and output_mask (B, T), right-padded with [PAD]."""
    rows = [encode_instruction(tokenizer, e, max_len) for e in examples]
    T = max(len(ids) for ids, _ in rows)
    batch = {
        "input_ids": torch.full((len(rows), T), PAD_ID, dtype=torch.long),
        "attention_mask": torch.zeros(len(rows), T, dtype=torch.long),
        "output_mask": torch.zeros(len(rows), T, dtype=torch.bool),
    }
    for b, (ids, out) in enumerate(rows):
        batch["input_ids"][b, : len(ids)] = torch.tensor(ids)
        batch["attention_mask"][b, : len(ids)] = 1
        batch["output_mask"][b, : len(ids)] = torch.tensor(out)
    return batch


@torch.no_grad()
def answers(
    model: Transformer | TunedModel,
    tokenizer: Tokenizer,
    examples: list[Instruction],
    max_new_tokens: int = 32,
    batch_size: int = 32,
) -> list[str]:
    """The model's greedy answers: the text it writes after "Output:" up to [EOS], for each instruction.

    A tuned model answers with its base plus the tuned parameters (its soft prompt and prefixes go into the first
    step and the KV cache). Prompts are cut so that `max_new_tokens` (at most half the context) fit after them and
    after what the method puts in front (a soft prompt, a prefix's text); a long input is cut, not the answer's room.
    """
    tuned = isinstance(model, TunedModel)
    base = model.base if tuned else model
    inputs = model.generation_inputs() if tuned else {}
    max_len = base.config.max_len - (model.method.prompt_length + model.method.position_offset if tuned else 0)
    budget = max_len - min(max_new_tokens, max_len // 2)
    device = base.tok_emb.weight.device
    utf8 = Utf8Constraint.from_tokenizer(tokenizer, base.config.vocab_size)
    out: list[str] = []
    for start in range(0, len(examples), batch_size):
        prompts = [prompt_ids(tokenizer, e, budget) for e in examples[start : start + batch_size]]
        batch = tokenizer.pad(prompts, side="left")
        T = batch["input_ids"].size(1)
        n_new = min(max_new_tokens, max_len - T)
        ids = generate(
            base,
            batch["input_ids"].to(device),
            n_new,
            attention_mask=batch["attention_mask"].to(device),
            temperature=0.0,
            utf8=utf8,
            **inputs,
        )
        for row in ids[:, T:].tolist():
            if EOS_ID in row:
                row = row[: row.index(EOS_ID)]
            out.append(utf8.text([t for t in row if t != PAD_ID]).strip())
    return out


def answer(
    model: Transformer | TunedModel, tokenizer: Tokenizer, example: Instruction, max_new_tokens: int = 32
) -> str:
    """The model's greedy answer to one instruction."""
    return answers(model, tokenizer, [example], max_new_tokens)[0]


def exact_match(
    model: Transformer | TunedModel, tokenizer: Tokenizer, examples: list[Instruction], max_new_tokens: int = 32
) -> dict[str, float]:
    """Fraction of examples answered exactly (after stripping spaces), overall ("all") and per instruction."""
    hits: dict[str, list[bool]] = {}
    for e, a in zip(examples, answers(model, tokenizer, examples, max_new_tokens)):
        hits.setdefault(e.instruction, []).append(a == e.output.strip())
    every = [h for v in hits.values() for h in v]
    return {"all": sum(every) / len(every), **{k: sum(v) / len(v) for k, v in hits.items()}}
