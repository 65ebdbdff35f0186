"""minilm's command line: pretrain a model, then generate, fill masks, evaluate and plot.

    python train.py                                   # pretrain the default causal model on data/, then sample
    python train.py pretrain --objective masked       # the masked-LM variant, ending with a fill-mask demo
    python train.py generate --from runs/causal --prompt "ROMEO:"
    python train.py fill-mask --from runs/masked --text "To be, or not to [MASK]"
    python train.py eval --from runs/causal           # loss, perplexity and bits per byte
    python train.py plot --from runs/causal           # loss curves to runs/causal/loss.png (needs matplotlib)
    torchrun --nproc_per_node=2 train.py pretrain     # data parallel (gloo on CPU, NCCL on CUDA)

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
    g.add_argument("--attention", choices=["auto", "math", "sdpa"], default=S, help="attention backend" + d("attention"))
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
    return parser


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
def complete(model, tokenizer, prompt: str, max_new_tokens: int, temperature: float, top_k, top_p, seed: int) -> str:
    import torch

    from minilm import generate
    from minilm.tokenizer import PAD_ID

    if not prompt:
        raise UserError("the prompt is empty: give --prompt some text to continue")
    ids = tokenizer.encode(prompt)
    context = model.config.max_len
    if len(ids) >= context:
        raise UserError(f"the prompt is {len(ids)} tokens, but the model's context is {context}: shorten the prompt "
                        f"to fewer than {context} tokens")
    device = model.tok_emb.weight.device
    keep = context // 2  # past the context, each round restarts from the last half-context of tokens
    while max_new_tokens > 0:
        window = ids if len(ids) + max_new_tokens <= context or len(ids) <= keep else ids[-keep:]
        n = min(max_new_tokens, context - len(window))
        out = generate(model, torch.tensor([window], device=device), n, temperature=temperature,
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
    model, tokenizer, _ = load_run(a.run, a.weights, a.device)
    if not model.config.causal:
        raise UserError(f"{a.run} holds a masked (bidirectional) model, which cannot generate: use `train.py fill-mask`")
    print(complete(model, tokenizer, a.prompt, a.max_new_tokens, a.temperature, a.top_k, a.top_p, a.seed))
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


# ---- entry point ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["pretrain", *argv]  # `python train.py [flags]` means pretrain
    args = parser.parse_args(argv)
    commands = {"generate": cmd_generate, "fill-mask": cmd_fill_mask, "eval": cmd_eval, "plot": cmd_plot}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
            if args.command == "pretrain":
                return pretrain(vars(args))
            return commands[args.command](args)
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print(f"train.py {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
