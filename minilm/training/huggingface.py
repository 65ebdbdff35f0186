"""Hugging Face GPT-2 folders: a causal run exported as one (`export_run`), and one read back as a run (`import_run`).

minilm's causal model is GPT-2's architecture (pre-LayerNorm blocks, learned positions, exact GELU, tied output), so
the export renames every tensor and changes only how the linear maps are stored. GPT-2's Conv1D computes y = x W + b
with W of shape (in, out), the transpose of nn.Linear's (out, in), and c_attn holds Q, K and V side by side:

    tok_emb, pos_emb                        transformer.wte, transformer.wpe
    blocks.i.ln_1, ln_2 (gamma, beta)       transformer.h.i.ln_1, ln_2 (weight, bias)
    blocks.i.attn.W_q, W_k, W_v             transformer.h.i.attn.c_attn   weight [W_q^T | W_k^T | W_v^T], bias [q|k|v]
    blocks.i.attn.W_o                       transformer.h.i.attn.c_proj   weight W_o^T
    blocks.i.ffn.W_1, W_2                   transformer.h.i.mlp.c_fc, c_proj   weights W_1^T, W_2^T
    ln_f                                    transformer.ln_f              (lm_head.weight is wte, tied: not stored)

Writing and reading need only json and safetensors; transformers is needed only to load the result. A masked run
has no exact counterpart in transformers (docs/export.md says why) and is refused.

Docs: docs/export.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from minilm.files import atomic_write, first_line, load_tensors, read_json, save_tensors, save_weights
from minilm.model import ModelConfig, Transformer
from minilm.model.layers import LayerNorm
from minilm.outputs import OutputKind, check_output, claim_output, output_kind
from minilm.tokenizer import SPECIAL_TOKENS, Tokenizer
from minilm.training.corpus import CorpusConfig
from minilm.training.run import (
    BEST_WEIGHTS,
    CONFIG,
    INSTRUCT,
    LAST_WEIGHTS,
    PRETRAIN,
    TOKENIZER,
    load_run,
    write_run_files,
)

HF_WEIGHTS, TOKENIZER_CONFIG, SPECIAL_MAP, GENERATION = (
    "model.safetensors",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
EXPORT = OutputKind(
    "export",
    "a Hugging Face model folder",
    (CONFIG, HF_WEIGHTS, TOKENIZER, TOKENIZER_CONFIG, SPECIAL_MAP, GENERATION),
    resumable=False,
)
IMPORTED = dataclasses.replace(PRETRAIN, resumable=False)
"""An imported run is a pretrain run folder with nothing to resume (it has no training state)."""
EPS = LayerNorm(1).eps
"""minilm's LayerNorm epsilon (1e-5), which GPT-2's layer_norm_epsilon must equal."""
SPECIAL_NAMES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token")
"""transformers' names of minilm's special tokens, in id order ([PAD]=0 ... [EOS]=6)."""

TOP = {
    "tok_emb.weight": "wte.weight",
    "pos_emb.weight": "wpe.weight",
    "ln_f.gamma": "ln_f.weight",
    "ln_f.beta": "ln_f.bias",
}
"""minilm name -> GPT-2 name (under `transformer.`) of the tensors outside the blocks."""
COPIED = {
    "ln_1.gamma": "ln_1.weight",
    "ln_1.beta": "ln_1.bias",
    "ln_2.gamma": "ln_2.weight",
    "ln_2.beta": "ln_2.bias",
    "attn.W_o.bias": "attn.c_proj.bias",
    "ffn.W_1.bias": "mlp.c_fc.bias",
    "ffn.W_2.bias": "mlp.c_proj.bias",
}
"""Per block, minilm name -> GPT-2 name of the tensors stored as they are."""
TRANSPOSED = {
    "attn.W_o.weight": "attn.c_proj.weight",
    "ffn.W_1.weight": "mlp.c_fc.weight",
    "ffn.W_2.weight": "mlp.c_proj.weight",
}
"""Per block, the nn.Linear weights stored as Conv1D weights, W^T."""
QKV = ("attn.W_q", "attn.W_k", "attn.W_v")
"""Per block, the three projections GPT-2 stores as one: c_attn = [W_q^T | W_k^T | W_v^T], bias [b_q | b_k | b_v]."""
IGNORED = (".attn.bias", ".attn.masked_bias")
"""Causal-mask buffers that old GPT-2 files carry; they hold no weights."""
GPT2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": None,
    "activation_function": "gelu_new",
    "resid_pdrop": 0.1,
    "embd_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
}
"""What transformers' GPT2Config assumes for a key that config.json leaves out."""


# ---- the name mapping -------------------------------------------------------------------------------------------
def to_gpt2(state: dict[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """GPT2LMHeadModel's tensors from minilm's state dict: the same values, Conv1D weights W^T, Q, K, V in c_attn."""
    out = {f"transformer.{theirs}": state[ours] for ours, theirs in TOP.items()}
    for i in range(n_layers):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        out.update({theirs + t: state[ours + o] for o, t in COPIED.items()})
        out.update({theirs + t: state[ours + o].t() for o, t in TRANSPOSED.items()})
        out[theirs + "attn.c_attn.weight"] = torch.cat([state[f"{ours}{p}.weight"].t() for p in QKV], dim=1)
        out[theirs + "attn.c_attn.bias"] = torch.cat([state[f"{ours}{p}.bias"] for p in QKV])
    return out


def from_gpt2(tensors: dict[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """minilm's state dict from GPT-2's tensors (with or without the `transformer.` prefix): `to_gpt2` undone."""
    t = {name.removeprefix("transformer."): value for name, value in tensors.items()}
    state = {ours: t[theirs] for ours, theirs in TOP.items()}
    for i in range(n_layers):
        ours, theirs = f"blocks.{i}.", f"h.{i}."
        state.update({ours + o: t[theirs + g] for o, g in COPIED.items()})
        state.update({ours + o: t[theirs + g].t() for o, g in TRANSPOSED.items()})
        weights = t[theirs + "attn.c_attn.weight"].t().chunk(3, dim=0)
        biases = t[theirs + "attn.c_attn.bias"].chunk(3)
        for p, w, b in zip(QKV, weights, biases):
            state[f"{ours}{p}.weight"], state[f"{ours}{p}.bias"] = w, b
    return state


def gpt2_config(config: ModelConfig) -> dict[str, Any]:
    """config.json of GPT2LMHeadModel with minilm's sizes, exact GELU, eps, tied output and special ids."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.max_len,
        "n_embd": config.d_model,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": config.d_ff,
        "activation_function": "gelu",
        "layer_norm_epsilon": EPS,
        **{key: config.dropout for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop")},
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": Tokenizer.bos_id,
        "eos_token_id": Tokenizer.eos_id,
        "pad_token_id": Tokenizer.pad_id,
        "dtype": "float32",
    }


def tokenizer_files(max_len: int) -> dict[str, dict[str, Any]]:
    """tokenizer_config.json and special_tokens_map.json: AutoTokenizer builds a PreTrainedTokenizerFast on
    tokenizer.json with minilm's special tokens, and decodes without transformers' space clean-up (as minilm)."""
    special = dict(zip(SPECIAL_NAMES, SPECIAL_TOKENS))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "padding_side": "right",
        **special,
    }
    return {TOKENIZER_CONFIG: config, SPECIAL_MAP: special}


# ---- export ---------------------------------------------------------------------------------------------------
def check_exportable(run: Path) -> None:
    """A one-line ValueError unless `run` is (or may be) a run folder: a tuned folder or another output is not."""
    kind = output_kind(run, [PRETRAIN, INSTRUCT])
    if kind == "tune" or (run / "tuned.json").is_file():
        raise ValueError(
            f"{run} holds a tuned model (`train.py tune`): its soft prompt, prefix or head has no place in GPT-2; "
            "export its base run (base_run in tuned.json), or a run of `train.py pretrain` or `train.py instruct`"
        )
    if kind == EXPORT.name:
        raise ValueError(
            f"{run} is already a Hugging Face folder (`train.py export` wrote it): load it with transformers, or "
            f"read it back into a run with `train.py import --from {run} --out RUN`"
        )
    if kind not in (None, PRETRAIN.name, INSTRUCT.name):
        raise ValueError(
            f"{run} holds the output of `train.py {kind}`, not a run: --from takes a run folder of "
            "`train.py pretrain` or `train.py instruct`"
        )


def export_run(
    run: str | os.PathLike[str], to: str | os.PathLike[str], weights: str = "best", overwrite: bool = False
) -> Path:
    """Write the causal run `run` to the folder `to` as GPT2LMHeadModel + tokenizer files; returns `to`.

    weights: "best" or "last", as in `load_run`. The folder is marked as kind `export`; `overwrite` replaces an
    earlier export there (only the files export writes).
    """
    run, to = Path(run), Path(to)
    check_exportable(run)
    try:
        check_output(to, EXPORT, overwrite=overwrite, reads=[("--from", run)], known=[PRETRAIN, INSTRUCT])
    except ValueError as e:  # the rule's messages name the output flag --out; export's is --to
        raise ValueError(str(e).replace("--out", "--to")) from None
    model, tokenizer, _ = load_run(run, weights, device="cpu")
    config = model.config
    if not config.causal:
        raise ValueError(
            f"{run} holds a masked (bidirectional) model, and no transformers architecture computes it exactly: "
            "their masked-LM heads add a dense+GELU+LayerNorm transform before the tied output, or the encoder "
            "normalises the embeddings and has no final LayerNorm (docs/export.md); export a causal run "
            "(`train.py pretrain --objective causal`)"
        )
    claim_output(to, EXPORT, fresh=True)
    save_tensors(to_gpt2(model.state_dict(), config.n_layers), to / HF_WEIGHTS, {"format": "pt"})
    tokenizer.save(to / TOKENIZER)
    generation = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    files = {CONFIG: gpt2_config(config), GENERATION: generation, **tokenizer_files(config.max_len)}
    for name, values in files.items():
        atomic_write(to / name, json.dumps(values, indent=2) + "\n")
    return to


# ---- import ---------------------------------------------------------------------------------------------------
def minilm_config(values: Any, where: Path) -> ModelConfig:
    """The ModelConfig of a GPT-2 config.json, or a one-line ValueError naming what minilm's model cannot compute."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} is not a JSON object: write the model's config with save_pretrained")
    c = {**GPT2_DEFAULTS, **values}
    model_type = c.get("model_type")
    if model_type != "gpt2":
        raise ValueError(
            f"{where} describes a {model_type!r} model, not 'gpt2': minilm imports GPT-2-format folders only "
            "(GPT2LMHeadModel: pre-LayerNorm blocks, learned positions, tied output)"
        )
    mismatches = [
        (
            c["activation_function"] != "gelu",
            f"activation_function is {c['activation_function']!r}, but minilm's feed-forward is the exact GELU "
            "('gelu'; 'gelu_new' is its tanh approximation, GPT2Config's default): import a model trained with "
            "activation_function='gelu'",
        ),
        (
            c["tie_word_embeddings"] is not True,
            "tie_word_embeddings is false (a separate output matrix), but minilm's output is the token embedding: "
            "import a model with tied embeddings",
        ),
        (
            c["layer_norm_epsilon"] != EPS,
            f"layer_norm_epsilon is {c['layer_norm_epsilon']!r}, but minilm's LayerNorm uses {EPS!r}: import a "
            f"model with layer_norm_epsilon={EPS!r}",
        ),
        (
            c["scale_attn_weights"] is not True or c["scale_attn_by_inverse_layer_idx"] is not False,
            "the attention scores are not scaled by 1/sqrt(head_dim) alone (scale_attn_weights, "
            "scale_attn_by_inverse_layer_idx), as minilm's are: import a model with GPT-2's default scaling",
        ),
        (
            c["add_cross_attention"] is not False,
            "add_cross_attention is true, and minilm's blocks have no cross-attention: import a decoder-only model",
        ),
        (
            len({c["resid_pdrop"], c["embd_pdrop"], c["attn_pdrop"]}) != 1,
            "resid_pdrop, embd_pdrop and attn_pdrop differ, and minilm has one dropout probability: set the three "
            "to one value in config.json (dropout does not change the model's outputs in eval mode)",
        ),
    ]
    for wrong, message in mismatches:
        if wrong:
            raise ValueError(f"{where}: {message}")
    try:
        return ModelConfig(
            vocab_size=c["vocab_size"],
            d_model=c["n_embd"],
            n_heads=c["n_head"],
            n_layers=c["n_layer"],
            d_ff=c["n_inner"] if c["n_inner"] is not None else 4 * c["n_embd"],
            max_len=c["n_positions"],
            dropout=c["resid_pdrop"],
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def read_gpt2_weights(path: Path, model: Transformer) -> dict[str, Tensor]:
    """`model`'s state dict (float32) from a GPT-2 model.safetensors; one-line errors for a missing file, missing,
    extra or wrongly shaped tensors, and an untied output matrix."""
    if not path.is_file():
        folder = path.parent
        if (folder / "model.safetensors.index.json").is_file():
            fix = "it is sharded: save it as one file, save_pretrained(DIR, max_shard_size='100GB')"
        elif (folder / "pytorch_model.bin").is_file():
            fix = "it holds pytorch_model.bin, which minilm does not read (loading a pickle can run code): save it "
            fix += "again with save_pretrained(DIR), which writes safetensors"
        else:
            fix = "save the model with save_pretrained(DIR)"
        raise FileNotFoundError(f"{folder} has no {path.name}: {fix}")
    tensors = load_tensors(path, "Hugging Face weights")
    head = tensors.pop("lm_head.weight", None)
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items() if not k.endswith(IGNORED)}
    wte = tensors.get("wte.weight")
    if head is not None and (wte is None or not torch.equal(head, wte)):
        raise ValueError(
            f"{path}: lm_head.weight differs from wte.weight (an untied output matrix), but minilm's output is the "
            "token embedding: import a model with tied embeddings"
        )
    expected = model.state_dict()
    wanted = {k.removeprefix("transformer.") for k in to_gpt2(expected, model.config.n_layers)}
    missing, extra = sorted(wanted - tensors.keys()), sorted(tensors.keys() - wanted)
    if missing or extra:
        raise ValueError(
            f"{path} does not hold GPT2LMHeadModel's tensors for config.json's sizes (missing {missing[:3]}, "
            f"unexpected {extra[:3]}): save the model with save_pretrained from a GPT2LMHeadModel"
        )
    state = {k: v.to(torch.float32) for k, v in from_gpt2(tensors, model.config.n_layers).items()}
    for name, value in state.items():
        if value.shape != expected[name].shape:
            raise ValueError(
                f"{path}: {name} is {tuple(value.shape)} but config.json's sizes make it "
                f"{tuple(expected[name].shape)}; config.json and the weights come from different models"
            )
    return state


def import_run(folder: str | os.PathLike[str], out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Read a GPT-2-format folder (config.json, model.safetensors, tokenizer.json) into the run folder `out`.

    The run is a pretrain run folder (config.json, tokenizer.json, best.safetensors = model.safetensors, and
    train_args.json recording where it came from), so generate, eval --data and tune --base work on it.
    """
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise FileNotFoundError(f"Hugging Face folder {folder} does not exist: give the folder save_pretrained wrote")
    check_output(out, IMPORTED, overwrite=overwrite, reads=[("--from", folder)], known=[INSTRUCT, EXPORT])
    config = minilm_config(read_json(folder / CONFIG, "Hugging Face config"), folder / CONFIG)
    if not (folder / TOKENIZER).is_file():
        raise FileNotFoundError(
            f"{folder} has no {TOKENIZER}: minilm reads the fast tokenizer's file; write it with "
            "tokenizer.save_pretrained(DIR) from a fast tokenizer (vocab.json and merges.txt alone are not read)"
        )
    try:
        tokenizer = Tokenizer.load(folder / TOKENIZER)
    except ValueError as e:
        raise ValueError(f"{folder / TOKENIZER}: minilm needs its special tokens at ids 0-6; {first_line(e)}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(
            f"{folder}: config.json has vocab_size={config.vocab_size} but {TOKENIZER} has {tokenizer.vocab_size} "
            "tokens, and minilm needs one embedding row per token: model.resize_token_embeddings(len(tokenizer)), "
            "then save_pretrained again"
        )
    model = Transformer(config)
    model.load_state_dict(read_gpt2_weights(folder / HF_WEIGHTS, model))
    claim_output(out, IMPORTED, fresh=True)  # only now that every input is known to be good
    source = str(folder.resolve())
    args = {
        "imported_from": source,
        "format": "Hugging Face GPT-2 (config.json, model.safetensors, tokenizer.json)",
        "objective": "causal",
        **{k: v for k, v in config.to_dict().items() if k != "causal"},
        "data": [],  # minilm trained it on nothing: eval needs --data
        "val_fraction": CorpusConfig().val_fraction,
        "skip_invalid_utf8": False,
        "out": str(out),
    }
    write_run_files(out, tokenizer, config, args)
    for name in (BEST_WEIGHTS, LAST_WEIGHTS):
        save_weights(model, out / name, {"imported_from": source})
    return out
