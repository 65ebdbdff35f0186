"""Every flag's printed default is the value the code uses when the flag is left out.

The help of every command is read as a user reads it ("(default: X)"), and X is compared with what the library
resolves with no flags: pretrain's and tune's settings functions, the config dataclasses of instruct and compare,
and the parsed arguments of the commands that pass them straight on.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from minilm.cli import build_parser
from minilm.cli.flags import show
from minilm.experiments.compare import CompareConfig, default_folder
from minilm.settings import RUNS
from minilm.training.optimizer import learning_rate
from minilm.training.pretrain import pretrain_settings
from minilm.tuning.instruct import DEFAULT_DATA, DEFAULT_OUT, FULL_LR, InstructConfig
from minilm.tuning.methods import FreezeSettings
from minilm.tuning.readouts import build_readout
from minilm.tuning.registry import METHODS, settings_from
from minilm.tuning.tasks import Example, Task
from minilm.tuning.tune import APPLIES, tune_settings

DEFAULT = re.compile(r"\(default: (.+?)\)$", re.S)
DESCRIBED = {  # defaults the help describes in words; the tests named here check that the code does what they say
    ("classify", "base"): "the base_run recorded in DIR/tuned.json",  # test_cli_tune.py: classify without --base
    ("eval", "data"): "the run's validation split",  # test_cli.py::test_eval_reports_loss_perplexity_and_bits_per_byte
    ("plot", "output"): "DIR/loss.png",  # test_cli.py::test_plot_draws_a_png_or_says_how_to_get_matplotlib
    ("classify", "report"): "DIR/eval-<split>.json",  # test_cli_tune.py::test_classify_a_split_writes_a_report_with_...
    ("instruct", "instruction"): "one from dev_new_phrasing.jsonl",  # test_instruct_answers_the_first_new_phrasing_...
    ("attention", "output"): "attention-L<layer>.png in the current folder",  # test_attention_map.py: the CLI
}
MINIMAL = {
    "generate": ["--from", "r", "--prompt", "x"],
    "fill-mask": ["--from", "r", "--text", "x"],
    "eval": ["--from", "r"],
    "plot": ["--from", "r"],
    "classify": ["--from", "t", "--text", "x"],
    "export": ["--from", "r", "--to", "d"],
    "attention": ["--from", "r", "--text", "x"],
}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices


def printed_defaults(command: str) -> dict[str, str]:
    """dest -> the default its help prints, for every flag whose help prints one."""
    out = {}
    for action in subparsers()[command]._actions:
        match = DEFAULT.search(" ".join((action.help or "").split()))
        if match and action.dest != "help":
            out[action.dest] = match.group(1)
    return out


def test_the_reader_finds_the_printed_defaults():
    assert printed_defaults("pretrain")["time_budget"] == show(pretrain_settings({})["time_budget"]) == "10m"
    assert len(printed_defaults("tune")) > 20 and len(printed_defaults("pretrain")) > 25


def test_pretrain_prints_the_defaults_it_trains_with():
    used = pretrain_settings({})
    for dest, printed in printed_defaults("pretrain").items():
        if dest == "d_ff":
            assert printed == "4 x --width" and used["d_ff"] == 4 * used["d_model"]
        elif dest == "out":
            assert printed == "runs/<objective>" and Path(used["out"]) == RUNS / used["objective"]
        elif dest == "max_steps":
            assert printed == "none, the time budget sizes the run" and used["max_steps"] is None
        elif dest == "cache_dir":
            assert (
                printed == ".cache next to --out"
                and Path(used["cache_dir"]) == (Path(used["out"]).parent / ".cache").resolve()
            )
        else:
            assert printed == show(used[dest]), dest


@pytest.mark.parametrize("method", METHODS)
def test_tune_prints_the_defaults_it_tunes_with(method):
    s, _ = tune_settings({"base": "runs/base", "method": method, "task": "data/task"})
    for dest, printed in printed_defaults("tune").items():
        if dest == "lr":
            assert f"{method} {s['lr']:g}" in printed
        elif dest == "min_lr":
            assert f"{method} {'none (constant)' if s['min_lr'] is None else format(s['min_lr'], 'g')}" in printed
        elif dest == "max_steps":
            assert printed == "none, --epochs sizes the run" and s["max_steps"] is None and s["epochs"] == 3.0
        elif dest in ("freeze_first", "freeze_last"):
            assert printed == "--freeze-first 1" and settings_from(METHODS["freeze"], {}) == FreezeSettings("first", 1)
        elif dest in APPLIES and method not in APPLIES[dest]:
            continue
        elif dest == "out":
            assert printed == "runs/tune-<task>-<method>" and Path(s["out"]) == RUNS / f"tune-task-{method}"
        elif dest in ("readout", "label_words"):  # resolved with the task: tested below
            assert s[dest] is None
        else:
            assert printed == show(s[dest]), dest


@pytest.mark.parametrize(
    "command, config", [("instruct", InstructConfig()), ("compare", CompareConfig())], ids=["instruct", "compare"]
)
def test_instruct_and_compare_print_their_configs_defaults(command, config):
    values = dataclasses.asdict(config)
    printed = printed_defaults(command)
    assert printed
    for dest, text in printed.items():
        if dest == "min_lr" and command == "instruct":
            assert text == "none, the rate stays at --lr after warm-up" and values["min_lr"] is None
            resolved = dataclasses.replace(config, lr=config.peak_lr())
            steps = range(config.warmup_steps, config.max_steps)
            assert {learning_rate(t, resolved) for t in steps} == {resolved.lr}
        elif dest == "lr" and command == "instruct":  # None: per method, full fine-tuning's own rate first
            assert values["lr"] is None and text.startswith(f"{FULL_LR:g} for full fine-tuning")
            assert config.peak_lr() == FULL_LR  # the default method is full
            for name, spec in METHODS.items():
                rate = InstructConfig(method=name).peak_lr()
                assert rate == (FULL_LR if name == "full" else spec.lr) and (
                    name == "full" or f"{name} {rate:g}" in text
                )
        elif dest in values:
            assert text == show(values[dest]), dest
        elif command == "instruct" and dest in APPLIES:  # tune's method flags, whose defaults tune's test checks
            assert text == printed_defaults("tune")[dest], dest
        elif (command, dest) in DESCRIBED:
            assert text == DESCRIBED[command, dest]
        elif dest == "data":
            assert text == "data/instructions" and Path(subparsers()[command].get_default("data")) == DEFAULT_DATA
        elif command == "instruct":
            assert dest == "out" and text == "runs/instruct" and DEFAULT_OUT == RUNS / "instruct"
        else:
            assert dest == "out" and text == "runs/compare-<task>" and default_folder("sst") == RUNS / "compare-sst"


@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_commands_that_pass_flags_on_print_the_values_they_pass(command):
    args = subparsers()[command].parse_args(MINIMAL[command])
    for dest, printed in printed_defaults(command).items():
        if (command, dest) in DESCRIBED:
            assert printed == DESCRIBED[command, dest] and getattr(args, dest) is None
        else:
            assert printed == show(getattr(args, dest)), dest


def test_a_shared_method_flag_has_one_default_for_every_method_it_belongs_to():
    for key, methods in APPLIES.items():
        values = {show(tune_settings({"base": "b", "method": m, "task": "t"})[0][key]) for m in methods}
        assert len(values) == 1, (key, values)


def test_the_readout_defaults_to_the_verbalizer_when_the_task_has_label_words(tokenizer):
    printed = printed_defaults("tune")
    assert printed["readout"] == "verbalizer when label words are known, else head"
    assert printed["label_words"] == "task.json's label_words"
    examples = {"train": [Example("to be", 0), Example("or not", 1)]}
    with_words = Task("t", ["0", "1"], examples, {"0": " be", "1": " not"})
    readout, words = build_readout(with_words, tokenizer, 32)
    assert readout.kind == "verbalizer" and words == [" be", " not"]
    readout, words = build_readout(Task("t", ["0", "1"], examples), tokenizer, 32)
    assert readout.kind == "head" and words is None
