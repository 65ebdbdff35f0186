"""minilm's command line: pretrain a model, then generate, fill masks, evaluate and plot; tune it for a task and classify.

    python train.py                                   # pretrain the default causal model on data/, then sample
    python train.py pretrain --objective masked       # the masked-LM variant, ending with a fill-mask demo
    python train.py generate --from runs/causal --prompt "ROMEO:"
    python train.py fill-mask --from runs/masked --text "To be, or not to [MASK]"
    python train.py eval --from runs/causal           # loss, perplexity and bits per byte
    python train.py plot --from runs/causal           # loss curves to runs/causal/loss.png (needs matplotlib)
    torchrun --nproc_per_node=2 train.py pretrain     # data parallel (gloo on CPU, NCCL on CUDA)
    python train.py tune --base runs/causal --method prompt --task TASK_DIR     # tune for a classification task
    python train.py classify --from runs/tune-TASK-prompt --text "..."          # or --task TASK_DIR --split dev

Every mistake in the input ends with one line saying what is wrong, exit code 2, and no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT / "data" / "tinyshakespeare.txt"

# Defaults of `pretrain`, chosen by measuring on 2 CPU cores (docs/performance.md): the run takes about ten minutes.
MODEL_DEFAULTS: dict[str, Any] = {
    "vocab": 1024, "layers": 4, "width": 256, "heads": 4, "ffn": None, "context": 128, "dropout": 0.1, "attention": "auto",
}
TRAIN_DEFAULTS: dict[str, Any] = {
    "objective": "causal", "batch_size": 32, "grad_accum": 1, "max_steps": 1800, "lr": 2e-3, "min_lr": 2e-4,
    "warmup_steps": 100, "weight_decay": 0.1, "grad_clip": 1.0, "mask_prob": 0.15, "eval_every": 200,
    "eval_windows": 64, "log_every": 20, "patience": 0, "seed": 0, "precision": "auto", "compile": False,
}
DATA_DEFAULTS: dict[str, Any] = {
    "data": [str(DEFAULT_DATA)], "val_fraction": 0.1, "tokenizer": None, "cache_dir": None, "skip_invalid_utf8": False,
}
DEFAULTS = {**MODEL_DEFAULTS, **TRAIN_DEFAULTS, **DATA_DEFAULTS, "out": None, "device": "auto"}
FIXED_FOR_A_RUN = [*MODEL_DEFAULTS, "objective", "data", "val_fraction", "tokenizer"]

# `tune`: the methods of minilm.tuning (listed here so that --help needs no torch import; a test keeps them equal)
TUNE_METHODS = ("prompt", "prompt-encoder", "prefix", "freeze", "bitfit", "lora", "full")
TUNE_DEFAULTS: dict[str, Any] = {
    "weights": "best", "readout": None, "label_words": None, "prompt_len": 8, "prefix_len": None, "init": "vocab",
    "encoder_hidden": 256, "prefix_hidden": 256, "no_reparam": False, "train_base": False, "freeze_first": None,
    "freeze_last": None, "lora_rank": 8, "lora_alpha": 16.0, "lr": None, "max_steps": 300, "batch_size": 16,
    "eval_every": 50, "patience": 4, "warmup_steps": 10, "weight_decay": 0.0, "seed": 0, "device": "auto",
    "gradient_checkpointing": False, "max_eval_examples": 0, "log_every": 10, "precision": "auto", "template": None,
}
# what defines the tuned model: a resumed tune must keep these
FIXED_FOR_A_TUNE = ["base", "weights", "task", "method", "readout", "label_words", "prompt_len", "prefix_len", "init",
                    "encoder_hidden", "prefix_hidden", "no_reparam", "train_base", "freeze_first", "freeze_last",
                    "lora_rank", "lora_alpha", "seed", "template"]
# the flags that only some methods read
METHOD_FLAGS = {
    "prompt_len": ("prompt", "prompt-encoder", "prefix"), "init": ("prompt", "prompt-encoder"),
    "encoder_hidden": ("prompt-encoder",), "train_base": ("prompt-encoder",), "prefix_len": ("prefix",),
    "prefix_hidden": ("prefix",), "no_reparam": ("prefix",), "freeze_first": ("freeze",), "freeze_last": ("freeze",),
    "lora_rank": ("lora",), "lora_alpha": ("lora",),
}


class UserError(Exception):
    """A mistake in the command line or its files: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (plus where to find help), exit code 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---- argument types ---------------------------------------------------------------------------------
def checked(convert, ok, expected: str):
    """An argparse type: convert the text, then require ok(value); otherwise say what was expected."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected
    return parse


positive_int = checked(int, lambda v: v >= 1, "a positive integer")
non_negative_int = checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = checked(float, lambda v: v > 0, "a number > 0")
fraction = checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
non_negative_float = checked(float, lambda v: v >= 0, "a number >= 0")
prompt_init = checked(str, lambda v: v in ("random", "vocab") or (v.startswith("text:") and bool(v[5:].strip())),
                      'random, vocab or text:"some words"')
label_word_list = checked(lambda t: t.split(","), lambda v: len(v) >= 2 and all(w.strip() for w in v),
                          'at least two comma-separated label words in label order, e.g. " bad, good"')


# ---- the parser -----------------------------------------------------------------------------------------
def build_parser() -> Parser:
    parser = Parser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    def d(key: str) -> str:
        return f" (default: {DEFAULTS[key]})"

    p = sub.add_parser("pretrain", help="pretrain a model on text files (the default command)",
                       description="Pretrain a model; flags left out keep their defaults, or the saved run's values with --resume.")
    S = argparse.SUPPRESS  # a flag not given is absent, so defaults, --config and a resumed run can fill it
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", default=S, metavar="PATH", help="UTF-8 text files or folders of .txt files"
                   f" (default: {os.path.relpath(DEFAULT_DATA)})")
    g.add_argument("--val-fraction", type=fraction, default=S, help="share of each file held out for validation" + d("val_fraction"))
    g.add_argument("--tokenizer", default=S, metavar="FILE", help="reuse this tokenizer.json instead of training one")
    g.add_argument("--cache-dir", default=S, metavar="DIR", help="where encoded corpora are cached (default: .cache next to --out)")
    g.add_argument("--skip-invalid-utf8", action="store_true", default=S, help="drop bytes that are not UTF-8 (with a warning) instead of stopping")
    g = p.add_argument_group("model")
    g.add_argument("--config", metavar="FILE.json", help="a model config.json; flags given here override it")
    g.add_argument("--vocab", type=positive_int, default=S, help="tokenizer vocabulary size" + d("vocab"))
    g.add_argument("--layers", type=positive_int, default=S, help="Transformer blocks" + d("layers"))
    g.add_argument("--width", type=positive_int, default=S, help="d_model" + d("width"))
    g.add_argument("--heads", type=positive_int, default=S, help="attention heads" + d("heads"))
    g.add_argument("--ffn", type=positive_int, default=S, help="feed-forward width (default: 4 x width)")
    g.add_argument("--context", type=positive_int, default=S, help="tokens per sequence (max_len)" + d("context"))
    g.add_argument("--dropout", type=fraction, default=S, help="dropout probability" + d("dropout"))
    g.add_argument("--attention", choices=["auto", "math", "sdpa", "triton"], default=S, help="attention backend" + d("attention"))
    g = p.add_argument_group("training")
    g.add_argument("--objective", choices=["causal", "masked"], default=S, help="causal LM or masked LM" + d("objective"))
    g.add_argument("--out", default=S, metavar="DIR", help="run directory (default: runs/<objective>)")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out exactly where it stopped")
    g.add_argument("--max-steps", type=positive_int, default=S, help="optimizer steps" + d("max_steps"))
    g.add_argument("--batch-size", type=positive_int, default=S, help="sequences per step, over all processes" + d("batch_size"))
    g.add_argument("--grad-accum", type=positive_int, default=S, help="micro-batches per step" + d("grad_accum"))
    g.add_argument("--lr", type=positive_float, default=S, help="peak learning rate" + d("lr"))
    g.add_argument("--min-lr", type=float, default=S, help="learning rate at the end of the cosine" + d("min_lr"))
    g.add_argument("--warmup-steps", type=non_negative_int, default=S, help="linear warm-up steps" + d("warmup_steps"))
    g.add_argument("--weight-decay", type=float, default=S, help="AdamW weight decay on matrices" + d("weight_decay"))
    g.add_argument("--grad-clip", type=positive_float, default=S, help="max gradient norm" + d("grad_clip"))
    g.add_argument("--mask-prob", type=fraction, default=S, help="masked objective: share of tokens selected" + d("mask_prob"))
    g.add_argument("--eval-every", type=positive_int, default=S, help="steps between evaluations and checkpoints" + d("eval_every"))
    g.add_argument("--eval-windows", type=positive_int, default=S, help="validation windows per periodic evaluation" + d("eval_windows"))
    g.add_argument("--log-every", type=positive_int, default=S, help="steps between progress lines" + d("log_every"))
    g.add_argument("--patience", type=non_negative_int, default=S, help="stop after this many evaluations without improvement; 0 = never" + d("patience"))
    g.add_argument("--seed", type=non_negative_int, default=S, help="seed of weights, data order and dropout" + d("seed"))
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=S, help="auto = cuda when available" + d("device"))
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=S, help="bf16 autocast or fp32; auto = bf16 where the CPU/GPU has native bf16" + d("precision"))
    g.add_argument("--compile", action="store_true", default=S, help="torch.compile the model")
    g.add_argument("--overwrite", action="store_true", help="start over in an --out that already holds a run (deletes its checkpoints)")

    p = sub.add_parser("generate", help="continue a prompt with a causal model")
    add_from(p)
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=positive_int, default=200,
                   help="tokens to add; past the context the model sees the last half-context (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=positive_int, default=None, help="keep the k most likely tokens")
    p.add_argument("--top-p", type=positive_float, default=None, help="keep the smallest set of tokens with probability >= p")
    p.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed (default: 0)")

    p = sub.add_parser("fill-mask", help="predict the [MASK] tokens of a text with a masked model")
    add_from(p)
    p.add_argument("--text", required=True, help='text with one or more [MASK], e.g. "To be, or not to [MASK]"')
    p.add_argument("--top-k", type=positive_int, default=5, help="candidates per mask (default: 5)")

    p = sub.add_parser("eval", help="loss per token, perplexity and bits per byte on held-out text")
    add_from(p)
    p.add_argument("--data", nargs="+", metavar="PATH", help="text files or folders to score whole (default: the run's validation split)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="windows per forward pass (default: 16)")

    p = sub.add_parser("plot", help="draw the run's loss curves to DIR/loss.png (needs matplotlib)")
    p.add_argument("--from", dest="run", required=True, metavar="DIR", help="run directory")
    p.add_argument("--output", metavar="PNG", help="where to write the picture (default: DIR/loss.png)")

    add_tune_parser(sub)

    p = sub.add_parser("compare", help="compare zero-shot, few-shot and every tuning method on one base and task")
    p.add_argument("--base", required=True, metavar="RUN_DIR", help="the pretrained run")
    p.add_argument("--task", required=True, metavar="DIR", help="task folder (train/dev[/test], task.json with label words)")
    p.add_argument("--out", metavar="DIR", help="where results.md and results.json go (default: runs/compare-<task>)")
    p.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2], help="seeds of the tuned runs (default: 0 1 2)")
    p.add_argument("--max-steps", type=positive_int, default=300, help="tuning steps per run (default: 300)")
    p.add_argument("--eval-every", type=positive_int, default=50, help="dev evaluations for early stopping (default: 50)")
    p.add_argument("--shots", type=positive_int, default=4, help="few-shot demonstrations per label (default: 4)")
    p.add_argument("--readouts", nargs="+", choices=["verbalizer", "head"], default=["verbalizer", "head"],
                   help="readouts of the tuned methods (default: both)")
    p.add_argument("--methods", nargs="+", choices=list(TUNE_METHODS), default=None, help="tuned methods to run (default: all)")
    p.add_argument("--template", metavar="TEXT", help='default: "{text} It was" (causal) or "{text} It was [MASK]." (masked)')
    p.add_argument("--quick", action="store_true", help="a smoke run: one seed, 4 steps, 32 dev examples (for tests)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto = cuda when available")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="bf16 autocast or fp32 (default: auto)")

    p = sub.add_parser("instruct", help="instruction-tune a causal run on {instruction, input, output} JSONL, then answer")
    p.add_argument("--base", required=True, metavar="RUN_DIR", help="the pretrained causal run to start from")
    p.add_argument("--data", default=str(ROOT / "data" / "instructions"), metavar="DIR",
                   help="folder with train.jsonl and dev.jsonl (default: data/instructions)")
    p.add_argument("--out", metavar="DIR", help="where the tuned run goes (default: runs/instruct)")
    p.add_argument("--alpha", type=non_negative_float, default=1.0, help="weight of the output-only loss L_align (default: 1.0)")
    p.add_argument("--output-only", action="store_true", help="train on L_align alone (no loss on the instruction and input)")
    p.add_argument("--max-steps", type=positive_int, default=600, help="optimizer steps (default: 600)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="examples per step (default: 16)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate, constant after 20 warm-up steps (default: 1e-3)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="data order and dropout seed (default: 0)")
    p.add_argument("--eval-examples", type=positive_int, default=60, help="dev examples answered at the end (default: 60)")
    p.add_argument("--instruction", help="an instruction to answer at the end (default: one from dev_new_phrasing.jsonl)")
    p.add_argument("--input", default="", help="its input")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto = cuda when available")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="bf16 autocast or fp32 (default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    p = sub.add_parser("classify", help="classify texts, or evaluate a task split, with a tuned model",
                       description="Classify texts with a model written by `tune`, or score it on a split of a task folder.")
    p.add_argument("--from", dest="tuned", required=True, metavar="DIR", help="tuned model folder written by tune")
    p.add_argument("--base", metavar="RUN_DIR", help="the base run (default: the base_run recorded in DIR/tuned.json)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", action="append", metavar="TEXT", help="a text to classify; repeat for several")
    what.add_argument("--task", metavar="DIR", help="a task folder: report accuracy, macro-F1 and the confusion matrix on --split")
    p.add_argument("--split", choices=["dev", "test"], default="dev", help="which split of --task (default: dev)")
    p.add_argument("--report", metavar="FILE", help="where the report JSON goes (default: DIR/eval-<split>.json)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="texts per forward pass (default: 64)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default: auto)")
    return parser


def add_tune_parser(sub) -> None:
    T, S = TUNE_DEFAULTS, argparse.SUPPRESS  # absent flags stay absent: defaults or the resumed tune fill them

    def d(key: str) -> str:
        return f" (default: {T[key]})"

    p = sub.add_parser("tune", help="tune a pretrained run for a classification task (prompt, prefix, LoRA, ...)",
                       description="Tune a pretrained run on a task folder (train.tsv, dev.tsv, optional test.tsv and "
                                   "task.json), with early stopping on dev. Flags left out keep their defaults, or the "
                                   "saved tune's values with --resume.")
    g = p.add_argument_group("what to tune")
    g.add_argument("--base", default=S, metavar="RUN_DIR", help="a run directory written by pretrain (required unless --resume)")
    g.add_argument("--weights", choices=["best", "last"], default=S, help="which weights of the base" + d("weights"))
    g.add_argument("--method", choices=TUNE_METHODS, default=S, help="tuning method (required unless --resume)")
    g.add_argument("--task", default=S, metavar="TASK_DIR", help="task folder (required unless --resume)")
    g.add_argument("--out", default=S, metavar="DIR", help="where the tuned model goes (default: runs/tune-<task>-<method>)")
    g.add_argument("--readout", choices=["head", "verbalizer"], default=S,
                   help="classification head, or the LM scoring a label word (default: verbalizer when label words are known, else head)")
    g.add_argument("--template", default=S, metavar="TEXT",
                   help='prompt-based fine-tuning: the verbalizer scores the label words at the answer slot of this template, '
                        'e.g. "{text} All in all, it was" (causal: the answer follows the end) or "{text} It was [MASK]." (masked)')
    g.add_argument("--label-words", type=label_word_list, default=S, metavar="WORDS",
                   help='verbalizer words in label order, comma-separated and taken literally, e.g. " bad, good" '
                        "(default: task.json's label_words)")
    g = p.add_argument_group("method settings")
    g.add_argument("--prompt-len", type=positive_int, default=S, metavar="N",
                   help="soft prompt vectors (prompt, prompt-encoder); also the prefix length of prefix" + d("prompt_len"))
    g.add_argument("--prefix-len", type=positive_int, default=S, metavar="N", help="prefix: keys/values per layer (default: --prompt-len)")
    g.add_argument("--init", type=prompt_init, default=S, help='soft prompt start: random, vocab (embeddings of random tokens) '
                   'or text:"words" (their embeddings)' + d("init"))
    g.add_argument("--encoder-hidden", type=positive_int, default=S, metavar="H", help="prompt-encoder: hidden width" + d("encoder_hidden"))
    g.add_argument("--train-base", action="store_true", default=S, help="prompt-encoder: train the base together with the prompt")
    g.add_argument("--prefix-hidden", type=positive_int, default=S, metavar="H", help="prefix: hidden width of the MLP" + d("prefix_hidden"))
    g.add_argument("--no-reparam", action="store_true", default=S, help="prefix: train the prefixes directly, without the MLP")
    freeze = g.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-first", type=non_negative_int, default=S, metavar="K",
                        help="layer freezing, first-k recipe: train the embeddings and the first K blocks, freeze the rest")
    freeze.add_argument("--freeze-last", type=non_negative_int, default=S, metavar="K",
                        help="train the last K blocks and the final LayerNorm; 0 = only the final LayerNorm and the head")
    g.add_argument("--lora-rank", type=positive_int, default=S, metavar="R", help="LoRA rank r" + d("lora_rank"))
    g.add_argument("--lora-alpha", type=positive_float, default=S, help="LoRA scale alpha (updates scaled by alpha/r)" + d("lora_alpha"))
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=positive_float, default=S, help="peak learning rate (default: per method, "
                   "prompt 3e-2, prompt-encoder 1e-2, prefix 3e-3, freeze 1e-3, bitfit 1e-2, lora 3e-3, full 1e-3)")
    g.add_argument("--max-steps", type=positive_int, default=S, help="optimizer steps" + d("max_steps"))
    g.add_argument("--batch-size", type=positive_int, default=S, help="examples per step" + d("batch_size"))
    g.add_argument("--eval-every", type=positive_int, default=S, help="steps between dev evaluations and checkpoints" + d("eval_every"))
    g.add_argument("--patience", type=non_negative_int, default=S,
                   help="stop after this many evaluations without a better dev macro-F1; 0 = never" + d("patience"))
    g.add_argument("--warmup-steps", type=non_negative_int, default=S, help="linear warm-up steps" + d("warmup_steps"))
    g.add_argument("--weight-decay", type=non_negative_float, default=S, help="AdamW weight decay on matrices" + d("weight_decay"))
    g.add_argument("--log-every", type=positive_int, default=S, help="steps between progress lines" + d("log_every"))
    g.add_argument("--max-eval-examples", type=non_negative_int, default=S,
                   help="evaluate on the first N dev examples only; 0 = all" + d("max_eval_examples"))
    g.add_argument("--seed", type=non_negative_int, default=S, help="seed of the new parameters and the data order" + d("seed"))
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=S, help="auto = cuda when available" + d("device"))
    g.add_argument("--gradient-checkpointing", action="store_true", default=S,
                   help="recompute activations in the backward pass: less memory, more time")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=S,
                   help="bf16 autocast or fp32; auto = bf16 where the CPU/GPU has native bf16" + d("precision"))
    g.add_argument("--resume", action="store_true", help="continue the tune saved in --out where it stopped")
    g.add_argument("--overwrite", action="store_true", help="start over in an --out that already holds a tuned model (deletes it)")


def add_from(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="run", required=True, metavar="DIR", help="run directory written by pretrain")
    p.add_argument("--weights", choices=["best", "last"], default="best", help="best validation loss or last step (default: best)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default: auto)")


# ---- shared helpers -------------------------------------------------------------------------------------
def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU here: use --device cpu (or auto)")
    return name


def resolve_precision(name: str, device: str) -> str:
    """auto = bf16 autocast where the hardware computes bf16 natively (it trains about twice as fast on
    CPUs with AVX-512 BF16 or AMX, see docs/performance.md), else fp32."""
    import torch

    if name != "auto":
        return name
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def load_run(run: str, weights: str, device: str):
    """(model, tokenizer, train_args) of a run directory, with clear errors for missing or damaged files."""
    from minilm import ModelConfig, Tokenizer, Transformer
    from minilm.checkpoint import load_weights

    folder = Path(run)
    if not folder.is_dir():
        raise UserError(f"run directory {run} does not exist: train one with `python train.py pretrain --out {run}`")
    if not (folder / "config.json").is_file():
        raise UserError(f"{run} holds no model (no config.json): train one with `python train.py pretrain --out {run}`")
    config = ModelConfig.load(folder / "config.json")
    path = folder / ("best.safetensors" if weights == "best" else "model.safetensors")
    if weights == "best" and not path.is_file() and (folder / "model.safetensors").is_file():
        path = folder / "model.safetensors"
    if not path.is_file():
        raise UserError(f"{run} holds no trained weights ({path.name} is missing): finish or resume its training first")
    model = Transformer(config)
    load_weights(model, path)
    tokenizer = Tokenizer.load(folder / "tokenizer.json")
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError(f"{run}: tokenizer.json has {tokenizer.vocab_size} tokens but config.json says vocab_size="
                        f"{config.vocab_size}; they come from different runs")
    args_path = folder / "train_args.json"
    train_args = json.loads(args_path.read_text()) if args_path.is_file() else {}
    return model.to(resolve_device(device)).eval(), tokenizer, train_args


# ---- pretrain ---------------------------------------------------------------------------------------------
def pretrain_settings(given: dict[str, Any]) -> dict[str, Any]:
    """defaults <- --config file <- the resumed run's train_args.json <- flags given on the command line."""
    settings = dict(DEFAULTS)
    config_file = given.pop("config", None)
    if config_file:
        from minilm import ModelConfig

        c = ModelConfig.load(config_file)
        settings.update(vocab=c.vocab_size, layers=c.n_layers, width=c.d_model, heads=c.n_heads, ffn=c.d_ff,
                        context=c.max_len, dropout=c.dropout, attention=c.attention, objective="causal" if c.causal else "masked")
    if "data" in given:  # kept absolute, so eval and --resume work from any folder
        given["data"] = [str(Path(p).resolve()) for p in given["data"]]
    objective = given.get("objective", settings["objective"])
    out = Path(given.get("out") or ROOT / "runs" / objective)
    if given.get("resume"):
        args_path = out / "train_args.json"
        if not args_path.is_file():
            raise UserError(f"--resume: {out} holds no run to continue (no train_args.json); start one without --resume")
        saved = json.loads(args_path.read_text())
        for key in FIXED_FOR_A_RUN:
            if key in given and given[key] != saved.get(key):
                raise UserError(f"--resume: the run in {out} was trained with {key}={saved.get(key)!r}, not {given[key]!r}; "
                                f"drop that flag to continue it, or start a new run with another --out")
        settings.update(saved)
    settings.update({k: v for k, v in given.items() if k not in ("command", "resume", "overwrite")})
    settings["out"] = str(out)
    if settings["ffn"] is None:
        settings["ffn"] = 4 * settings["width"]
    return settings


def pretrain(given: dict[str, Any]) -> int:
    import torch.distributed as dist

    from minilm import ModelConfig, Tokenizer, Transformer
    from minilm.data import prepare_corpus
    from minilm.trainer import Processes, TrainConfig, Trainer

    resume, overwrite = bool(given.get("resume")), bool(given.get("overwrite"))
    s = pretrain_settings(given)
    out = Path(s["out"])
    procs = Processes.from_env()
    device = resolve_device(s["device"])
    precision = resolve_precision(s["precision"], device)
    train_config = TrainConfig(**{k: s[k] for k in TRAIN_DEFAULTS if k != "precision"}, precision=precision, device=device)
    if not resume and (out / "train_state.pt").exists() and not overwrite:
        raise UserError(f"{out} already holds a run: continue it with --resume, start over with --overwrite, or choose another --out")
    if procs.world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    say = print if procs.is_main else (lambda *a, **k: None)

    cache_dir = (Path(s["cache_dir"]) if s["cache_dir"] else out.parent / ".cache").resolve()
    s["cache_dir"] = str(cache_dir)
    failure = None
    if procs.is_main:
        try:
            tokenizer, config, corpus = prepare_run(s, out, resume, overwrite, cache_dir)
        except (UserError, ValueError, FileNotFoundError) as e:
            failure = e
    if procs.world_size > 1:  # tell the other processes whether rank 0 got the data ready, then they read it
        box = [None if failure is None else str(failure)]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            dist.destroy_process_group()
            raise failure if failure is not None else UserError(box[0])
        if not procs.is_main:
            tokenizer = Tokenizer.load(out / "tokenizer.json")
            config = ModelConfig.load(out / "config.json")
            corpus = prepare_corpus(s["data"], tokenizer, cache_dir, s["val_fraction"], s["skip_invalid_utf8"])
    elif failure is not None:
        raise failure

    model = Transformer(config, seed=s["seed"])
    n = model.num_parameters()
    say(f"minilm: {s['objective']} LM, {n / 1e6:.2f}M parameters ({config.n_layers} layers x {config.d_model} wide, "
        f"{config.n_heads} heads, context {config.max_len}, vocab {config.vocab_size}) on {device}"
        f"{f' x {procs.world_size} processes' if procs.world_size > 1 else ''}, {precision}")
    say(f"data: {len(corpus.train):,} train / {len(corpus.val):,} validation tokens from {len(corpus.files)} file(s); "
        f"run directory {out}")
    trainer = Trainer(model, tokenizer, corpus, train_config, out, resume=resume, log=say)
    start = time.perf_counter()
    try:
        summary = trainer.fit()
        if procs.world_size > 1:
            dist.barrier()  # rank 0 ends with a full evaluation; a process that left the group early aborts in gloo
    except KeyboardInterrupt:
        say(f"\ninterrupted at step {trainer.step}; the last checkpoint is intact: continue with "
            f"`python train.py pretrain --out {out} --resume`", file=sys.stderr)
        return 130
    finally:
        if procs.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if not procs.is_main:
        return 0
    val = summary["val"]
    bpb = f", {val['bits_per_byte']:.3f} bits per byte" if "bits_per_byte" in val else ""
    say(f"done: {summary['step']} steps in {(time.perf_counter() - start) / 60:.1f} min; best weights: validation loss "
        f"{val['loss']:.4f} per token (perplexity {val['perplexity']:.2f}){bpb} on the whole validation split")
    say(f"saved in {out}/ (best.safetensors, model.safetensors, metrics.jsonl)")
    best_model, tokenizer, _ = load_run(str(out), "best", device)
    val_text = tokenizer.decode(corpus.val.ids[:4096].tolist())  # the start of the validation text, for the demo
    if s["objective"] == "causal":
        demo_text = tokenizer.decode(tokenizer.encode(first_line(val_text))[: config.max_len // 4])
        say(f"\nsample (python train.py generate --from {out} --prompt {json.dumps(demo_text)}):")
        say(complete(best_model, tokenizer, demo_text, max_new_tokens=200, temperature=0.8, top_k=None, top_p=None, seed=0))
    else:
        masked, answer = mask_one_word(val_text, tokenizer)
        say(f"\nfill-mask demo (python train.py fill-mask --from {out} --text {json.dumps(masked)}), answer {answer!r}:")
        show_fill_mask(best_model, tokenizer, masked, top_k=5)
    return 0


def prepare_run(s: dict[str, Any], out: Path, resume: bool, overwrite: bool, cache_dir: Path):
    """Rank 0's part of starting a run: the tokenizer, the model config, the cached corpus and the run's JSON files."""
    from minilm import ModelConfig, Tokenizer
    from minilm.checkpoint import atomic_write
    from minilm.data import prepare_corpus, read_corpus

    if resume or s["tokenizer"]:
        tokenizer = Tokenizer.load(out / "tokenizer.json" if resume else s["tokenizer"])
    else:
        _, _, train_texts, _ = read_corpus(s["data"], s["val_fraction"], s["skip_invalid_utf8"])
        tokenizer = Tokenizer.train(texts=train_texts, vocab_size=s["vocab"])
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=s["width"], n_heads=s["heads"], n_layers=s["layers"],
                         d_ff=s["ffn"], max_len=s["context"], dropout=s["dropout"], causal=s["objective"] == "causal",
                         attention=s["attention"])
    if resume and ModelConfig.load(out / "config.json") != config:
        raise UserError(f"--resume: {out}/config.json describes a different model than these settings; "
                        "resume with the flags the run was started with")
    corpus = prepare_corpus(s["data"], tokenizer, cache_dir, s["val_fraction"], s["skip_invalid_utf8"])
    out.mkdir(parents=True, exist_ok=True)  # only now that the data is known to be good
    if overwrite and not resume:
        for name in ("train_state.pt", "model.safetensors", "best.safetensors", "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)
    tokenizer.save(out / "tokenizer.json")
    config.save(out / "config.json")
    atomic_write(out / "train_args.json", json.dumps({k: v for k, v in s.items() if k not in ("device",)}, indent=2))
    return tokenizer, config, corpus


def first_line(text: str, min_words: int = 4) -> str:
    """A demo prompt from the validation text: its first line with at least `min_words` words."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if len(line.split()) >= min_words), lines[0] if lines else "The")


def mask_one_word(text: str, tokenizer) -> tuple[str, str]:
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


# ---- generate, fill-mask, eval, plot ------------------------------------------------------------------
def complete(model, tokenizer, prompt: str, max_new_tokens: int, temperature: float, top_k, top_p, seed: int,
             tuned=None) -> str:
    """Continue `prompt` with `model`, or with a TunedModel over it (its soft prompt / prefixes / weights)."""
    import functools

    import torch

    from minilm import generate
    from minilm.tokenizer import PAD_ID

    if not prompt:
        raise UserError("the prompt is empty: give --prompt some text to continue")
    ids = tokenizer.encode(prompt)
    context = model.config.max_len
    if tuned is not None:  # a soft prompt takes positions of the context
        context -= tuned.method.prompt_length
        continue_ids = tuned.generate
    else:
        continue_ids = functools.partial(generate, model)
    if len(ids) >= context:
        raise UserError(f"the prompt is {len(ids)} tokens, but the model's context is {context}: shorten the prompt "
                        f"to fewer than {context} tokens")
    device = model.tok_emb.weight.device
    keep = context // 2  # past the context, each round restarts from the last half-context of tokens
    while max_new_tokens > 0:
        window = ids if len(ids) + max_new_tokens <= context or len(ids) <= keep else ids[-keep:]
        n = min(max_new_tokens, context - len(window))
        out = continue_ids(torch.tensor([window], device=device), n, temperature=temperature,
                       top_k=top_k, top_p=top_p, seed=seed + len(ids))[0].tolist()
        new = [t for t in out[len(window):] if t != PAD_ID]
        ids, max_new_tokens = ids + new, max_new_tokens - n
        if len(new) < n:  # [EOS]
            break
    return tokenizer.decode(ids)


def show_fill_mask(model, tokenizer, text: str, top_k: int) -> None:
    from minilm import fill_mask

    if "[MASK]" not in text:
        raise UserError('the text has no [MASK]: write [MASK] where a word should be predicted, e.g. "to be or not to [MASK]"')
    ids = tokenizer.encode(text)
    if len(ids) + 2 > model.config.max_len:
        raise UserError(f"the text is {len(ids) + 2} tokens with [CLS]/[SEP], but the model's context is {model.config.max_len}: shorten it")
    for n, candidates in enumerate(fill_mask(model, tokenizer, text, top_k=top_k), start=1):
        print(f"[MASK] {n}: " + "  ".join(f"{token!r} {p:.3f}" for token, p in candidates))


def cmd_generate(a: argparse.Namespace) -> int:
    tuned = None
    if (Path(a.run) / "tuned.json").is_file():  # a tuned model: its base, with the tuned tensors applied
        tuned = load_tuned(a.run, None, a.device)
        model, tokenizer = tuned.base, tuned.tokenizer
    else:
        model, tokenizer, _ = load_run(a.run, a.weights, a.device)
    if not model.config.causal:
        raise UserError(f"{a.run} holds a masked (bidirectional) model, which cannot generate: use `train.py fill-mask`")
    print(complete(model, tokenizer, a.prompt, a.max_new_tokens, a.temperature, a.top_k, a.top_p, a.seed, tuned))
    return 0


def cmd_fill_mask(a: argparse.Namespace) -> int:
    model, tokenizer, _ = load_run(a.run, a.weights, a.device)
    if model.config.causal:
        raise UserError(f"{a.run} holds a causal model; fill-mask needs one pretrained with --objective masked")
    show_fill_mask(model, tokenizer, a.text, a.top_k)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from minilm.data import encode_documents, find_text_files, pack_lines, prepare_corpus, read_text, token_byte_lengths
    from minilm.evaluate import evaluate_causal, evaluate_masked

    model, tokenizer, train_args = load_run(a.run, a.weights, a.device)
    if a.data:
        texts = [read_text(f) for f in find_text_files(a.data)]
        if not any(t.strip() for t in texts):
            raise UserError(f"the text in {' '.join(a.data)} is empty: give some text to score")
        stream, what = encode_documents(tokenizer, texts), " ".join(a.data)
    else:
        if not train_args:
            raise UserError(f"{a.run} has no train_args.json, so its validation split is unknown: pass --data")
        cache = train_args.get("cache_dir") or str(Path(train_args["out"]).parent / ".cache")
        corpus = prepare_corpus(train_args["data"], tokenizer, cache, train_args["val_fraction"], train_args["skip_invalid_utf8"])
        stream, what = corpus.val, "the validation split"
    if model.config.causal:
        m = evaluate_causal(model, stream, token_byte_lengths(tokenizer), batch_size=a.batch_size)
        print(f"{what}: {m['tokens']:,} tokens, {m['bytes']:,} bytes")
        print(f"loss {m['loss']:.4f} nats/token | perplexity {m['perplexity']:.2f} | {m['bits_per_byte']:.4f} bits per byte")
    else:
        blocks, lengths = pack_lines(stream, model.config.max_len)
        m = evaluate_masked(model, blocks, lengths, batch_size=a.batch_size, seed=0)
        print(f"{what}: {m['tokens']:,} masked tokens")
        print(f"masked-token loss {m['loss']:.4f} nats | perplexity {m['perplexity']:.2f} | bits per byte: not defined "
              "for a masked LM (it gives no probability of the whole text)")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from minilm.compare import CompareConfig, compare, write_results
    from minilm.tasks import load_task
    from minilm.trainer import format_duration

    task = load_task(a.task)
    device = resolve_device(a.device)
    precision = resolve_precision(a.precision, device)
    base, tokenizer, _ = load_run(a.base, "best", device)
    weights = {k: v.clone() for k, v in base.state_dict().items()}

    def load_base():
        from minilm import Transformer

        fresh = Transformer(base.config)
        fresh.load_state_dict(weights)
        return fresh.to(device)

    quick = dict(seeds=(0,), max_steps=4, eval_every=2, patience=0, batch_size=4, shots=1, max_eval_examples=32) if a.quick else {}
    config = CompareConfig(**{"seeds": tuple(a.seeds), "max_steps": a.max_steps, "eval_every": a.eval_every, "shots": a.shots,
                              "readouts": tuple(a.readouts), "template": a.template, "precision": precision, "device": device,
                              **({"methods": tuple(a.methods)} if a.methods else {}), **quick})
    out = Path(a.out) if a.out else ROOT / "runs" / f"compare-{task.name}"
    start = time.perf_counter()
    print(f"compare on {a.base} ({'causal' if base.config.causal else 'masked'}, {base.num_parameters():,} parameters), task "
          f"{task.name}: seeds {list(config.seeds)}, {config.max_steps} steps per tuned run, {precision}")
    rows = compare(load_base, tokenizer, task, config)
    flags = [f"--base {a.base}", f"--task {a.task}"] + ([f"--out {a.out}"] if a.out else [])
    flags += [f"--seeds {' '.join(map(str, a.seeds))}"] if a.seeds != [0, 1, 2] else []
    flags += [f"--max-steps {a.max_steps}"] if a.max_steps != 300 else []
    flags += [f"--readouts {' '.join(a.readouts)}"] if a.readouts != ["verbalizer", "head"] else []
    flags += [f"--methods {' '.join(a.methods)}"] if a.methods else []
    flags += [f"--template {json.dumps(a.template)}"] if a.template else []
    flags += ["--quick"] if a.quick else []
    header = (f"`python train.py compare {' '.join(flags)}`: {len(rows)} rows in "
              f"{format_duration(time.perf_counter() - start)}, seeds {list(config.seeds)}, {precision}, torch {__import__('torch').__version__}")
    table = write_results(rows, "test" in task.splits, out, header)
    print(table)
    print(f"written to {out / 'results.md'} and results.json")
    return 0


def cmd_instruct(a: argparse.Namespace) -> int:
    """Full fine-tuning with L = L_LM + alpha L_align (objectives.instruction_loss), then answers."""
    import shutil

    import torch

    from minilm.checkpoint import save_weights
    from minilm.instructions import Instruction, exact_match, instruction_batch, load_instructions
    from minilm.objectives import instruction_loss
    from minilm.trainer import autocast, format_duration

    data = Path(a.data)
    for name in ("train.jsonl", "dev.jsonl"):
        if not (data / name).is_file():
            raise UserError(f"{data / name} does not exist: --data needs a folder with train.jsonl and dev.jsonl")
    out = Path(a.out) if a.out else ROOT / "runs" / "instruct"
    if (out / "config.json").exists() and not a.overwrite:
        raise UserError(f"{out} already holds a run: choose another --out, or --overwrite to replace it")
    train_set, dev_set = load_instructions(data / "train.jsonl"), load_instructions(data / "dev.jsonl")
    device = resolve_device(a.device)
    precision = resolve_precision(a.precision, device)
    model, tokenizer, _ = load_run(a.base, "best", device)
    if not model.config.causal:
        raise UserError(f"{a.base} holds a masked model: instruction tuning needs a causal one")
    question = Instruction(a.instruction, a.input, "") if a.instruction else None
    if question is None and (data / "dev_new_phrasing.jsonl").is_file():
        question = load_instructions(data / "dev_new_phrasing.jsonl")[0]
    loss_text = "L_align" if a.output_only else f"L_LM + {a.alpha:g} L_align"
    print(f"instruct: {a.base} ({model.num_parameters():,} parameters, full fine-tuning) on {len(train_set):,} instructions, "
          f"loss {loss_text}, {a.max_steps} steps of {a.batch_size}, lr {a.lr:g}, {precision}")
    torch.manual_seed(a.seed)
    generator = torch.Generator().manual_seed(a.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.train()
    start = time.perf_counter()
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as metrics:
        for step in range(1, a.max_steps + 1):
            for group in optimizer.param_groups:
                group["lr"] = a.lr * min(1.0, step / 20)
            rows = torch.randint(0, len(train_set), (a.batch_size,), generator=generator).tolist()
            batch = {k: v.to(device) for k, v in instruction_batch(tokenizer, [train_set[i] for i in rows], model.config.max_len).items()}
            with autocast(precision, torch.device(device)):
                logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = instruction_loss(logits.float(), batch["input_ids"], batch["output_mask"], alpha=a.alpha,
                                    output_only=a.output_only, attention_mask=batch["attention_mask"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step % 50 == 0 or step in (1, a.max_steps):
                elapsed = time.perf_counter() - start
                metrics.write(json.dumps({"step": step, "split": "train", "loss": loss.item(), "elapsed_s": elapsed}) + "\n")
                print(f"step {step:>5}/{a.max_steps} | loss {loss.item():.4f} | {step * a.batch_size / elapsed:.0f} ex/s | "
                      f"ETA {format_duration(elapsed / step * (a.max_steps - step))}")
    model.eval()
    shutil.copy(Path(a.base) / "config.json", out / "config.json")
    shutil.copy(Path(a.base) / "tokenizer.json", out / "tokenizer.json")
    save_weights(model, out / "model.safetensors", {"instruction_tuned_from": str(Path(a.base).resolve())})
    scores = exact_match(model, tokenizer, dev_set[: a.eval_examples])
    print(f"dev exact match on {min(a.eval_examples, len(dev_set))} unseen inputs: {scores.pop('all'):.3f} | "
          + " | ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    if question is not None:
        from minilm.instructions import answer

        print(f"unseen instruction: {question.instruction!r} input: {question.input!r}")
        print(f"answer: {answer(model, tokenizer, question)!r}")
    print(f"saved in {out}/ (a run directory: python train.py generate --from {out} ...)")
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    path = Path(a.run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{a.run} has no metrics.jsonl: train a model into it first")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError('plotting needs matplotlib: pip install -e ".[plot]" (or pip install matplotlib)') from None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        points = [(r["step"], r["loss"]) for r in records if r.get("split") == split]
        if points:
            ax.plot(*zip(*points), style, label=f"{split} loss", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(str(Path(a.run).resolve().name))
    ax.legend()
    ax.grid(alpha=0.3)
    output = Path(a.output) if a.output else Path(a.run) / "loss.png"
    fig.savefig(output, dpi=120, bbox_inches="tight")
    print(f"wrote {output}")
    return 0


# ---- tune, classify ---------------------------------------------------------------------------------------
TUNE_FILES = ("tuned.json", "tuned.safetensors", "reparam.safetensors", "train_state.pt", "metrics.jsonl", "tune_args.json",
              "eval-dev.json", "eval-test.json")


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def tune_settings(given: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """defaults <- the resumed tune's tune_args.json <- flags given on the command line; and the output folder."""
    from minilm.tuning import DEFAULT_LR

    resume = bool(given.get("resume"))
    given = {k: v for k, v in given.items() if k not in ("command", "resume", "overwrite")}
    for key in ("base", "task"):  # kept absolute, so --resume and classify work from any folder
        if key in given:
            given[key] = str(Path(given[key]).resolve())
    if not resume:
        missing = [flag(k) for k in ("base", "method", "task") if k not in given]
        if missing:
            raise UserError(f"the following arguments are required: {', '.join(missing)}")
    if "out" in given:
        out = Path(given["out"])
    elif "task" in given and "method" in given:
        out = ROOT / "runs" / f"tune-{Path(given['task']).name}-{given['method']}"
    else:
        raise UserError("--resume needs --out DIR (or --task and --method, to find runs/tune-<task>-<method>)")
    settings = dict(TUNE_DEFAULTS)
    saved: dict[str, Any] = {}
    if resume:
        args_path = out / "tune_args.json"
        if not args_path.is_file():
            raise UserError(f"--resume: {out} holds no tune to continue (no tune_args.json); start one without --resume")
        saved = json.loads(args_path.read_text(encoding="utf-8"))
    method = given.get("method", saved.get("method"))
    for key in given:
        if key in METHOD_FLAGS and method not in METHOD_FLAGS[key]:
            users = " or ".join(f"--method {m}" for m in METHOD_FLAGS[key])
            raise UserError(f"{flag(key)} does not apply to --method {method}: it is a setting of {users}")
    for key in FIXED_FOR_A_TUNE if resume else ():
        if key in given and given[key] != saved.get(key):
            raise UserError(f"--resume: the tune in {out} was run with {key}={saved.get(key)!r}, not {given[key]!r}; "
                            f"drop {flag(key)} to continue it, or start a new tune with another --out")
    settings.update(saved)
    settings.update(given)
    settings["out"] = str(out)
    if method == "freeze" and settings["freeze_first"] is None and settings["freeze_last"] is None:
        raise UserError("--method freeze needs --freeze-first K (train the embeddings and the first K blocks) "
                        "or --freeze-last K (train the last K blocks and the final LayerNorm)")
    if method == "prefix" and settings["prefix_len"] is None:
        settings["prefix_len"] = settings["prompt_len"]
    if settings["lr"] is None:
        settings["lr"] = DEFAULT_LR[method]
    if settings["readout"] == "head" and "label_words" in given:
        raise UserError("--label-words is for --readout verbalizer; drop it to read the classes out with a head")
    return settings, out


def method_hyperparameters(s: dict[str, Any]) -> dict[str, Any]:
    """The settings as build_method's keyword arguments for s['method']."""
    m = s["method"]
    if m == "prompt":
        return {"prompt_len": s["prompt_len"], "init": s["init"], "seed": s["seed"]}
    if m == "prompt-encoder":
        return {"prompt_len": s["prompt_len"], "hidden": s["encoder_hidden"], "init": s["init"], "seed": s["seed"],
                "train_base": s["train_base"]}
    if m == "prefix":
        return {"prefix_len": s["prefix_len"], "hidden": s["prefix_hidden"], "seed": s["seed"], "reparameterize": not s["no_reparam"]}
    if m == "freeze":
        first = s["freeze_first"] is not None
        return {"recipe": "first" if first else "last", "k": s["freeze_first"] if first else s["freeze_last"]}
    if m == "lora":
        return {"rank": s["lora_rank"], "alpha": s["lora_alpha"], "seed": s["seed"]}
    return {}


def build_readout(s: dict[str, Any], task, tokenizer, d_model: int):
    """(readout, label words or None): the verbalizer when words are known (flag or task.json), else a head."""
    from minilm.tuning import ClassificationHead, Verbalizer

    words = s["label_words"] or ([task.label_words[label] for label in task.labels] if task.label_words else None)
    kind = s["readout"] or ("verbalizer" if words else "head")
    if kind == "head":
        if s.get("template"):
            raise UserError("--template is read out by the label words (a verbalizer); drop --readout head, or drop --template")
        return ClassificationHead(d_model, len(task.labels), seed=s["seed"]), None
    if not words:
        raise UserError(f"--readout verbalizer needs a word per label: give --label-words \" bad, good\" (in the order of the "
                        f"labels {', '.join(task.labels)}) or label_words in the task's task.json")
    if len(words) != len(task.labels):
        raise UserError(f"{len(words)} label words ({', '.join(map(repr, words))}) for {len(task.labels)} labels "
                        f"({', '.join(task.labels)}): give one word per label, in that order")
    ids = [tokenizer.encode(w) for w in words]
    if len({tuple(i) for i in ids}) < len(ids):
        raise UserError(f"two label words ({', '.join(map(repr, words))}) are the same tokens: the verbalizer could not tell the labels apart")
    if len({w.startswith(" ") for w in words}) > 1:
        warnings.warn(f"some label words start with a space and some do not ({', '.join(map(repr, words))}); "
                      'words are taken literally, and one that follows the text usually starts with a space: " bad, good"')
    if s.get("template"):
        from minilm.tuning import TemplateVerbalizer

        return TemplateVerbalizer.from_template(tokenizer, s["template"], [[w] for w in words]), list(words)
    return Verbalizer(ids), list(words)


def check_tune_fits(s: dict[str, Any], config, readout) -> None:
    """The method's sizes against the base's: one line naming the numbers, before anything is built."""
    m = s["method"]
    n = s["prompt_len"] if m in ("prompt", "prompt-encoder") else 0
    extra = readout.extra_tokens(config.causal)
    if config.max_len - n - extra < 1:
        taken = ", ".join(([f"the soft prompt takes {n}"] if n else []) + ([f"the {readout.kind} {extra} more"] if extra else []))
        fix = f"use --prompt-len {config.max_len - extra - 1} or less" if n and config.max_len - extra > 1 else "use shorter label words"
        raise UserError(f"{'--prompt-len ' + str(n) if n else 'the readout'} leaves no room for text: the base's context (max_len) "
                        f"is {config.max_len} tokens, {taken}; {fix}")
    if m == "freeze":
        key = "freeze_first" if s["freeze_first"] is not None else "freeze_last"
        if s[key] > config.n_layers:
            raise UserError(f"{flag(key)} {s[key]}: the base has {config.n_layers} layer(s); choose 0..{config.n_layers}")
    if m == "lora" and s["lora_rank"] > config.d_model:
        raise UserError(f"--lora-rank {s['lora_rank']} is larger than the base's width d_model={config.d_model}: "
                        f"choose 1..{config.d_model}")


def percent(part: int, whole: int) -> str:
    p = 100 * part / whole
    return f"{p:.2f}%" if p >= 0.01 or p == 0 else f"{p:.1g}%"


def describe_split(task, split: str) -> str:
    balance = task.balance(split)
    return f"{split} {sum(balance.values()):,} (" + ", ".join(f"{label}: {n:,}" for label, n in balance.items()) + ")"


def tune(given: dict[str, Any]) -> int:
    import shutil

    from minilm.checkpoint import atomic_write
    from minilm.tasks import load_task
    from minilm.tuning import TunedModel, build_method
    from minilm.tuning.trainer import LAST_DIR, TuneConfig, TuneTrainer

    resume, overwrite = bool(given.get("resume")), bool(given.get("overwrite"))
    s, out = tune_settings(given)
    base_dir = Path(s["base"])
    if out.resolve() == base_dir.resolve() or (out / "config.json").exists():
        raise UserError(f"{out} holds a pretrained run (config.json): tune into another --out")
    if not resume and not overwrite and ((out / "train_state.pt").exists() or (out / "tuned.json").exists()):
        raise UserError(f"{out} already holds a tuned model: continue it with --resume, start over with --overwrite "
                        "(deletes it), or choose another --out")
    if resume and not (out / "train_state.pt").is_file():
        raise UserError(f"--resume: {out} holds no checkpoint yet (train_state.pt is written at the first dev evaluation); "
                        "start again without --resume")
    device = resolve_device(s["device"])
    config = TuneConfig(lr=s["lr"], warmup_steps=s["warmup_steps"], max_steps=s["max_steps"], batch_size=s["batch_size"],
                        weight_decay=s["weight_decay"], eval_every=s["eval_every"], max_eval_examples=s["max_eval_examples"],
                        patience=s["patience"], log_every=s["log_every"], seed=s["seed"], device=device,
                        precision=resolve_precision(s["precision"], device), gradient_checkpointing=s["gradient_checkpointing"])
    task = load_task(s["task"])
    train_split, dev_split = task.split("train"), task.split("dev")  # a missing dev split is an error now, not after setup
    base, tokenizer, _ = load_run(str(base_dir), s["weights"], device)
    c = base.config
    readout, words = build_readout(s, task, tokenizer, c.d_model)
    s["readout"], s["label_words"] = readout.kind, words
    check_tune_fits(s, c, readout)
    hp = method_hyperparameters(s)
    model = TunedModel(base, build_method(s["method"], base, tokenizer=tokenizer, **hp), readout, task.labels)
    if resume and (out / LAST_DIR / "tuned.json").is_file():
        saved_sha = json.loads((out / LAST_DIR / "tuned.json").read_text(encoding="utf-8")).get("base_weights_sha256")
        if saved_sha != model.base_sha256:
            raise UserError(f"--resume: the tune in {out} started from other weights than {base_dir}'s {s['weights']} weights "
                            "now (was the base trained further?); start a new tune with another --out")

    counts = model.counts()
    print(f"base: {base_dir} ({s['weights']} weights), {'causal' if c.causal else 'masked'} LM with {counts['base']:,} parameters "
          f"({c.n_layers} layers x {c.d_model} wide, context {c.max_len}) on {device}")
    test_note = f" | test {len(task.splits['test']):,}, not evaluated while tuning" if "test" in task.splits else ""
    print(f"task {task.name}: labels {', '.join(task.labels)} | {describe_split(task, 'train')} | {describe_split(task, 'dev')}{test_note}")
    if words:
        print("readout: verbalizer, the LM scores " + ", ".join(f"{label} -> {w!r}" for label, w in zip(task.labels, words)))
    else:
        print(f"readout: classification head on the {'last real token' if c.causal else '[CLS] position'} "
              f"({counts['readout']:,} parameters)")
    settings_text = ", ".join(f"{k}={v}" for k, v in hp.items())
    print(f"method {s['method']}{f' ({settings_text})' if settings_text else ''}: trainable: {counts['trainable']:,} parameters "
          f"({percent(counts['trainable'], counts['base'])} of the base's {counts['base']:,}); saved for inference: {counts['tuned']:,}")
    room = model.max_text_tokens()
    texts = [e.text for e in train_split + dev_split]
    cut = sum(len(e.ids) > room for e in tokenizer.backend.encode_batch(texts, add_special_tokens=False))
    if cut:
        print(f"note: {cut:,} of the {len(texts):,} train and dev texts are longer than the {room} text tokens that fit "
              f"in the base's context of {c.max_len}; their ends are cut")
    print(f"training: {config.precision}, lr {s['lr']:g}, {s['max_steps']} steps of {s['batch_size']} examples, dev evaluation every "
          f"{s['eval_every']} steps (patience {s['patience'] or 'off'}); out {out}")

    out.mkdir(parents=True, exist_ok=True)  # only now that every input is known to be good
    if not resume:
        for name in TUNE_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / LAST_DIR, ignore_errors=True)
    saved = {**{k: v for k, v in s.items() if k != "device"}, "out": str(out.resolve())}
    atomic_write(out / "tune_args.json", json.dumps(saved, indent=2) + "\n")
    extra = {"base_run": str(base_dir), "base_weights": s["weights"], "task": s["task"], "tune_args": saved}
    trainer = TuneTrainer(model, tokenizer, task, config, out, resume=resume, log=print, extra_metadata=extra)
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {trainer.step}; the last checkpoint is intact: continue with "
              f"`python train.py tune --out {out} --resume`", file=sys.stderr)
        return 130
    meta = json.loads((out / "tuned.json").read_text(encoding="utf-8"))
    dev = meta["dev"]
    early = " (stopped early: dev macro-F1 stopped improving)" if summary.get("stopped_early") else ""
    print(f"done at step {summary['step']}{early}; best on dev at step {meta['step']}: accuracy {dev['accuracy']:.4f}, "
          f"macro-F1 {dev['macro_f1']:.4f} ({dev['n']:,} examples)")
    print(f"saved in {out}/ (tuned.json, tuned.safetensors: {counts['tuned']:,} numbers on top of the base; "
          f"the latest state in {out / LAST_DIR}/)")
    print(f'classify a text: python train.py classify --from {out} --text "..."')
    if "test" in task.splits:
        print(f"the test split was not evaluated; once the settings are chosen on dev: "
              f"python train.py classify --from {out} --task {s['task']} --split test")
    return 0


def print_report(report: dict[str, Any], what: str) -> None:
    """Accuracy, macro-F1, the per-class table and the confusion matrix, as aligned text."""
    labels, confusion = report["labels"], report["confusion"]
    print(f"{what}: {report['n']:,} examples | accuracy {report['accuracy']:.4f} | macro-F1 {report['macro_f1']:.4f} "
          f"| loss {report['loss']:.4f}")
    w = max(5, *(len(label) for label in labels))
    print(f"{'label':<{w}}  precision  recall      f1  support")
    for label in labels:
        pc = report["per_class"][label]
        print(f"{label:<{w}}  {pc['precision']:9.4f}  {pc['recall']:6.4f}  {pc['f1']:6.4f}  {pc['support']:7,}")
    cw = max(*(len(label) for label in labels), *(len(str(n)) for row in confusion for n in row))
    print("confusion matrix (rows: gold label, columns: predicted):")
    print(" " * w + "".join(f"  {label:>{cw}}" for label in labels))
    for label, row in zip(labels, confusion):
        print(f"{label:<{w}}" + "".join(f"  {n:>{cw}}" for n in row))


def load_tuned(tuned_dir: str, base_run: str | None, device: str):
    """A TunedModel from its folder, on the base run recorded in tuned.json (or `base_run`); `.tokenizer` is the base's."""
    from minilm.tuning import TunedModel
    from minilm.tuning.tuned import read_metadata

    folder = Path(tuned_dir)
    if not folder.is_dir():
        raise UserError(f"tuned model folder {tuned_dir} does not exist: tune one with "
                        f"`python train.py tune --base RUN_DIR --method prompt --task TASK_DIR --out {tuned_dir}`")
    meta = read_metadata(folder)
    run = base_run or meta.get("base_run")
    if not run:
        raise UserError(f"{folder / 'tuned.json'} does not say which base run it was tuned from: pass --base RUN_DIR")
    if not base_run and not Path(run).is_dir():
        raise UserError(f"the base run {run} recorded in {folder / 'tuned.json'} does not exist (moved?): pass --base RUN_DIR")
    base, tokenizer, _ = load_run(run, meta.get("base_weights", "best"), device)
    model = TunedModel.load(folder, base).eval()
    model.tokenizer, model.base_run = tokenizer, run
    return model


def cmd_classify(a: argparse.Namespace) -> int:
    from minilm.checkpoint import atomic_write
    from minilm.tasks import load_task
    from minilm.tuning.trainer import evaluate, predict

    folder = Path(a.tuned)
    model = load_tuned(a.tuned, a.base, a.device)
    tokenizer = model.tokenizer
    if a.text is not None:
        if not all(text.strip() for text in a.text):
            raise UserError("a --text is empty: give some text to classify")
        room = model.max_text_tokens()
        for n, text in enumerate(a.text, start=1):
            if len(tokenizer.encode(text)) > room:
                warnings.warn(f"text {n} is longer than the {room} text tokens that fit in the base's context; its end is cut")
        probs = predict(model, tokenizer, a.text, a.batch_size)
        for text, p in zip(a.text, probs.tolist()):
            best = max(range(len(p)), key=p.__getitem__)
            print(f"{model.labels[best]} | " + "  ".join(f"p({label})={q:.3f}" for label, q in zip(model.labels, p))
                  + f" | {json.dumps(text, ensure_ascii=False)}")
        return 0
    task = load_task(a.task)
    if task.labels != model.labels:
        raise UserError(f"the task's labels ({', '.join(task.labels)}) are not the ones {a.tuned} was tuned on "
                        f"({', '.join(model.labels)}): evaluate it on the task it was tuned for")
    examples = task.split(a.split)
    path = Path(a.report) if a.report else folder / f"eval-{a.split}.json"
    if not path.parent.is_dir():
        raise UserError(f"--report {path}: the folder {path.parent} does not exist")
    report = evaluate(model, tokenizer, examples, a.batch_size)
    print_report(report, f"{task.name} {a.split}")
    atomic_write(path, json.dumps({"tuned": str(folder.resolve()), "base_run": str(Path(model.base_run).resolve()),
                                   "task": str(Path(a.task).resolve()), "split": a.split, **report}, indent=2) + "\n")
    print(f"report: {path}")
    return 0


# ---- entry point ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["pretrain", *argv]  # `python train.py [flags]` means pretrain
    args = parser.parse_args(argv)
    commands = {"generate": cmd_generate, "fill-mask": cmd_fill_mask, "eval": cmd_eval, "plot": cmd_plot, "classify": cmd_classify,
                "instruct": cmd_instruct, "compare": cmd_compare}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
            if args.command == "pretrain":
                return pretrain(vars(args))
            if args.command == "tune":
                return tune(vars(args))
            return commands[args.command](args)
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print(f"train.py {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
