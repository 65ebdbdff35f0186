"""Held-out evaluation: loss per token, perplexity and bits per byte.

    loss = (1/N) sum_i -ln p(x_i | x_<i)                 nats per token, over the N scored tokens
    perplexity = exp(loss)
    bits per byte = sum_i -ln p(x_i | x_<i) / (ln 2 * B)  B = UTF-8 bytes of the scored tokens

Loss per token depends on the tokenizer (a bigger vocabulary packs more bytes into a token);
bits per byte does not, so it compares runs with different tokenizers, and char-level models.
A masked LM does not define p(text), so for it only the masked-token loss and its exp are given.

Docs: docs/training.md (evaluation: loss, perplexity, bits per byte).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minilm.model import Transformer
from minilm.tokenizer import PAD_ID
from minilm.training.corpus import (
    TokenStream,
    encode_documents,
    eval_windows,
    find_text_files,
    pack_lines,
    prepare_corpus,
    read_text,
    token_byte_lengths,
)
from minilm.training.objectives import IGNORE_INDEX, mask_tokens
from minilm.training.run import load_run


def bits_per_byte(total_nll_nats: float, n_bytes: int) -> float:
    """bpb = sum_i -ln p(x_i | x_<i) / (ln 2 * B): the code length of the text in bits per UTF-8 byte."""
    if n_bytes <= 0:
        raise ValueError("bits per byte needs at least one scored byte")
    return total_nll_nats / (math.log(2) * n_bytes)


def _evenly_spaced(items: list, limit: int | None) -> list:
    if limit is None or len(items) <= limit:
        return items
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in picks]


@torch.no_grad()
def evaluate_causal(
    model: Transformer,
    stream: TokenStream,
    token_bytes: np.ndarray,
    batch_size: int = 16,
    max_windows: int | None = None,
) -> dict[str, float]:
    """Score every token of `stream` after the first (or `max_windows` evenly spaced windows of it).

    Windows of T = max_len tokens overlap by one (see corpus.eval_windows), so each scored token has
    between 1 and T - 1 tokens of context. Returns loss, perplexity, bits_per_byte, tokens, bytes.
    """
    T = model.config.max_len
    device = next(model.parameters()).device
    starts = _evenly_spaced(eval_windows(stream, T), max_windows)
    was_training = model.training
    model.eval()
    total_nll, n_tokens, n_bytes = 0.0, 0, 0
    for i in range(0, len(starts), batch_size):
        rows = [stream.ids[s : s + T].astype(np.int64) for s in starts[i : i + batch_size]]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            input_ids[b, : len(r)] = torch.from_numpy(r)
            attention_mask[b, : len(r)] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        logits = model(input_ids, attention_mask=attention_mask).float()
        targets = input_ids[:, 1:]
        scored = attention_mask[:, 1:] == 1
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")
        total_nll += nll[scored].double().sum().item()
        n_tokens += int(scored.sum())
        n_bytes += int(torch.from_numpy(token_bytes)[targets[scored].cpu()].sum())
    model.train(was_training)
    loss = total_nll / n_tokens
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": bits_per_byte(total_nll, n_bytes),
        "tokens": n_tokens,
        "bytes": n_bytes,
    }


@torch.no_grad()
def evaluate_masked(
    model: Transformer,
    blocks: np.ndarray,
    lengths: np.ndarray,
    batch_size: int = 16,
    max_blocks: int | None = None,
    mask_prob: float = 0.15,
    seed: int = 0,
) -> dict[str, float]:
    """Masked-token loss on packed validation blocks, with masks drawn from a fixed seed (same every call)."""
    device = next(model.parameters()).device
    rows = _evenly_spaced(list(range(len(blocks))), max_blocks)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total_nll, n_tokens = 0.0, 0
    for i in range(0, len(rows), batch_size):
        picked = rows[i : i + batch_size]
        input_ids = torch.from_numpy(blocks[picked])
        attention_mask = (torch.arange(blocks.shape[1])[None, :] < torch.from_numpy(lengths[picked])[:, None]).long()
        corrupted, labels = mask_tokens(input_ids, model.config.vocab_size, generator, attention_mask, mask_prob)
        logits = model(corrupted.to(device), attention_mask=attention_mask.to(device)).float()
        labels = labels.to(device)
        selected = labels != IGNORE_INDEX
        total_nll += F.cross_entropy(logits[selected], labels[selected], reduction="sum").double().item()
        n_tokens += int(selected.sum())
    model.train(was_training)
    if n_tokens == 0:
        raise ValueError("the validation split has no maskable tokens: give more text")
    loss = total_nll / n_tokens
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": n_tokens}


def evaluate_run(
    run: str | os.PathLike[str],
    weights: str = "best",
    device: str = "auto",
    data: list[str] | None = None,
    batch_size: int = 16,
) -> tuple[dict[str, float], str, bool]:
    """(metrics, what was scored, causal) for a run directory: its validation split, or the text files `data` whole."""
    model, tokenizer, train_args = load_run(run, weights, device)
    if data:
        texts = [read_text(f) for f in find_text_files(data)]
        if not any(t.strip() for t in texts):
            raise ValueError(f"the text in {' '.join(data)} is empty: give some text to score")
        stream, what = encode_documents(tokenizer, texts), " ".join(data)
    else:
        if not train_args:
            raise ValueError(f"{run} has no train_args.json, so its validation split is unknown: pass --data")
        cache = train_args.get("cache_dir") or str(Path(train_args["out"]).parent / ".cache")
        corpus = prepare_corpus(
            train_args["data"],
            tokenizer,
            cache,
            train_args["val_fraction"],
            train_args["skip_invalid_utf8"],
            train_args.get("hold_out", ()),
        )
        stream, what = corpus.val, "the validation split"
    if model.config.causal:
        return evaluate_causal(model, stream, token_byte_lengths(tokenizer), batch_size=batch_size), what, True
    blocks, lengths = pack_lines(stream, model.config.max_len)
    return evaluate_masked(model, blocks, lengths, batch_size=batch_size, seed=0), what, False
