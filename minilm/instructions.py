"""Instruction data: JSONL of {instruction, input, output}, laid out as one sequence for instruction tuning.

    Instruction: {instruction}
    Input: {input}
    Output: {output}[EOS]

The output tokens (with the final [EOS], so the model learns to stop) are marked in `output_mask`; the
loss is `objectives.instruction_loss`. When an example is longer than the context only the input is cut:
the instruction, the prompt's literal text and the whole output are kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from minilm.prompting import Template
from minilm.tasks import read_jsonl
from minilm.tokenizer import EOS_ID, PAD_ID, Tokenizer

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
        raise ValueError(f"an output of {len(output)} tokens does not fit in the context of {max_len} with its prompt: "
                         f"shorten it ({example.output[:40]!r}...)")
    prompt = prompt_ids(tokenizer, example, max_len - len(output))
    return prompt + output, [False] * len(prompt) + [True] * len(output)


def instruction_batch(tokenizer: Tokenizer, examples: list[Instruction], max_len: int) -> dict[str, Tensor]:
    """input_ids, attention_mask and output_mask (B, T), right-padded with [PAD]."""
    rows = [encode_instruction(tokenizer, e, max_len) for e in examples]
    T = max(len(ids) for ids, _ in rows)
    batch = {"input_ids": torch.full((len(rows), T), PAD_ID, dtype=torch.long),
             "attention_mask": torch.zeros(len(rows), T, dtype=torch.long),
             "output_mask": torch.zeros(len(rows), T, dtype=torch.bool)}
    for b, (ids, out) in enumerate(rows):
        batch["input_ids"][b, : len(ids)] = torch.tensor(ids)
        batch["attention_mask"][b, : len(ids)] = 1
        batch["output_mask"][b, : len(ids)] = torch.tensor(out)
    return batch


@torch.no_grad()
def answer(model, tokenizer: Tokenizer, example: Instruction, max_new_tokens: int = 32) -> str:
    """The model's greedy answer to an instruction: the text it writes after "Output:" up to [EOS]."""
    from minilm.generate import generate

    max_len = model.config.max_len
    ids = prompt_ids(tokenizer, example, max_len - min(max_new_tokens, max_len // 2))  # a long input is cut, not the answer
    device = model.tok_emb.weight.device
    n_new = min(max_new_tokens, max_len - len(ids))
    out = generate(model, torch.tensor([ids], device=device), n_new, temperature=0.0)[0, len(ids):].tolist()
    if EOS_ID in out:
        out = out[: out.index(EOS_ID)]
    return tokenizer.decode(out).strip()


def exact_match(model, tokenizer: Tokenizer, examples: list[Instruction], max_new_tokens: int = 32) -> dict[str, float]:
    """Fraction of examples answered exactly (after stripping spaces), overall and per instruction."""
    hits: dict[str, list[bool]] = {}
    for e in examples:
        hits.setdefault(e.instruction, []).append(answer(model, tokenizer, e, max_new_tokens) == e.output.strip())
    every = [h for v in hits.values() for h in v]
    return {"all": sum(every) / len(every), **{k: sum(v) / len(v) for k, v in hits.items()}}
