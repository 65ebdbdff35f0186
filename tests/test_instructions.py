"""Instruction data: the JSONL loader, the one-sequence layout, the output mask, and input-only truncation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_model

from minilm.tokenizer import EOS_ID, PAD_ID
from minilm.tuning.instructions import (
    Instruction,
    answer,
    answers,
    encode_instruction,
    instruction_batch,
    load_instructions,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Instruction("Repeat the input.", "to be or not to be", "to be or not to be")


def test_the_sequence_is_prompt_then_output_and_eos_with_the_output_marked(tokenizer):
    ids, output = encode_instruction(tokenizer, EXAMPLE, max_len=200)
    text = "Instruction: Repeat the input.\nInput: to be or not to be\nOutput: to be or not to be"
    assert ids[:-1] == tokenizer.encode(text) and ids[-1] == EOS_ID
    answer = tokenizer.encode(" to be or not to be") + [EOS_ID]
    assert [i for i, o in zip(ids, output) if o] == answer
    assert output == [False] * (len(ids) - len(answer)) + [True] * len(answer)


def test_a_long_example_is_cut_in_its_input_only(tokenizer):
    long = Instruction("Repeat the input.", "whether tis nobler in the mind to suffer " * 20, "the end")
    ids, output = encode_instruction(tokenizer, long, max_len=80)
    assert len(ids) == 80
    assert tokenizer.decode(ids).startswith("Instruction: Repeat the input.\nInput: whether tis")
    assert tokenizer.decode([i for i, o in zip(ids, output) if o]) == " the end"  # the [EOS] is skipped by decode
    assert "\nOutput:" in tokenizer.decode(ids)
    with pytest.raises(ValueError, match="does not fit in the context"):
        encode_instruction(tokenizer, Instruction("Repeat.", "x", "to be or not to be " * 10), max_len=20)


def test_a_batch_is_right_padded_and_pads_are_not_output(tokenizer):
    short = Instruction("Give the first word.", "to be", "to")
    batch = instruction_batch(tokenizer, [EXAMPLE, short], max_len=200)
    n = int(batch["attention_mask"][1].sum())
    assert (batch["input_ids"][1, n:] == PAD_ID).all() and not batch["output_mask"][1, n:].any()
    assert batch["output_mask"][1, :n].sum() == len(tokenizer.encode(" to")) + 1


def test_the_loader_reads_jsonl_and_names_the_line_of_a_bad_record(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"instruction": "Repeat.", "input": "", "output": "x"}) + "\n\n", encoding="utf-8")
    assert load_instructions(good) == [Instruction("Repeat.", "", "x")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"instruction": "Repeat.", "input": "a", "output": "a"})
        + "\n"
        + json.dumps({"instruction": "x"})
        + "\n"
    )
    with pytest.raises(ValueError, match=r"bad.jsonl line 2: each line needs string fields"):
        load_instructions(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        load_instructions(bad)
    bad.write_text(json.dumps({"instruction": "Repeat.", "input": "a", "output": " "}) + "\n")
    with pytest.raises(ValueError, match="must not be empty"):
        load_instructions(bad)


def test_the_shipped_instruction_data_is_what_its_generator_writes(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_instructions", ROOT / "data" / "instructions" / "make_instructions.py"
    )
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    monkeypatch.setattr(make, "HERE", tmp_path)
    (tmp_path.parent / "tinyshakespeare.txt").write_text(
        (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8"), encoding="utf-8"
    )
    make.main()
    for name in ("train.jsonl", "dev.jsonl", "dev_new_phrasing.jsonl"):
        assert (tmp_path / name).read_bytes() == (ROOT / "data" / "instructions" / name).read_bytes(), name
    train = load_instructions(ROOT / "data" / "instructions" / "train.jsonl")
    dev = load_instructions(ROOT / "data" / "instructions" / "dev.jsonl")
    assert len(train) == 3000 and len(dev) == 300
    assert not {e.input for e in dev} & {e.input for e in train}, "a dev input also appears in train"


def test_answers_in_a_left_padded_batch_equal_the_answers_one_at_a_time(tokenizer):
    model = tiny_model(seed=3, vocab_size=tokenizer.vocab_size, max_len=96, attention="math")
    examples = [
        EXAMPLE,
        Instruction("Give the first word.", "to be", "to"),
        Instruction("Count the words.", "whether tis nobler in the mind", "6"),
    ]
    together = answers(model, tokenizer, examples, max_new_tokens=8)
    assert together == [answer(model, tokenizer, e, max_new_tokens=8) for e in examples]
    assert any(together), "the model wrote nothing, so the comparison means nothing"
