"""The verbalizer: label words, and the one way minilm scores them at a prompt's answer slot.

    s(w) = sum_j log p(w_j | prompt(x), w_<j)                              a word w = w_1 .. w_k (causal)
         = sum_j log p([MASK]_j = w_j | prompt(x) with k [MASK] at the slot)                    (masked)
    s(y) = log sum_{w in v(y)} exp s(w)                                    a label may have several words v(y)
    y*   = argmax_y s(y)

With `length_normalized` a word's score is divided by its number of tokens, s(w) / k, so long words are not
penalised for having more tokens. Zero-shot and few-shot prompting, the tuned verbalizer readout
(minilm.tuning.readouts) and `compare` all score through `word_scores` (`word_reads` says which positions it
reads): only the positions that predict a word's tokens go through the output layer, and a sequence shared by
several words (a causal prompt and every one-token word, a masked prompt and every k-token word) runs once.

Docs: docs/prompting.md (verbalizer word scores, zero-shot label scores).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.model import Transformer
from minilm.prompting.template import Rendered, Template
from minilm.tokenizer import MASK_ID, PAD_ID, Tokenizer

LogitsAt = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""(input_ids (B, T), attention_mask (B, T), rows (N,), cols (N,)) -> logits (N, V) at the token positions
(rows, cols)."""


@dataclass(frozen=True)
class Verbalizer:
    """v(y): one or more words per label, each word a list of token ids."""

    words: tuple[tuple[tuple[int, ...], ...], ...]

    @classmethod
    def from_words(cls, tokenizer: Tokenizer, label_words: Sequence[Sequence[str] | str]) -> Verbalizer:
        """One entry per label: a word (" good") or several ([" good", " great"])."""
        words = []
        for entry in label_words:
            group = [entry] if isinstance(entry, str) else list(entry)
            if not group or any(not tokenizer.encode(w) for w in group):
                raise ValueError(f"every label needs at least one non-empty word, got {entry!r}")
            words.append(tuple(tuple(tokenizer.encode(w)) for w in group))
        if len(words) < 2:
            raise ValueError("a verbalizer needs at least two labels")
        return cls(tuple(words))


def base_logits(model: Transformer) -> LogitsAt:
    """The LogitsAt of a plain Transformer: LN_f(h_L) E^T at the asked positions only."""
    device = model.tok_emb.weight.device

    def logits_at(input_ids: Tensor, attention_mask: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        h = model.hidden_states(input_ids.to(device), attention_mask=attention_mask.to(device))
        return F.linear(h[rows.to(device), cols.to(device)], model.tok_emb.weight)

    return logits_at


def word_reads(prompt: Rendered, word: tuple[int, ...], causal: bool) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """s(w) = sum_j log p(w_j | prompt, w_<j): the ids to run and the (position, w_j) each of w's tokens is read at.

    causal: ids = prompt + w_1 .. w_{k-1}, and position slot - 1 + j predicts w_{j+1};
    masked: ids = the prompt (k [MASK] at the slot), and position slot + j holds w_{j+1}.

    Returns (the ids to run, [(position, token) for each of the word's k tokens]). A masked prompt with fewer than k
    [MASK] from its slot on is a ValueError saying to render it with slot_tokens = k.
    """
    if causal:
        return tuple(prompt.ids) + tuple(word[:-1]), [(prompt.slot - 1 + j, t) for j, t in enumerate(word)]
    masks = sum(1 for t in prompt.ids[prompt.slot :] if t == MASK_ID)
    if masks < len(word):
        raise ValueError(
            f"the prompt has {masks} [MASK] at its slot but the word has {len(word)} tokens: "
            "render it with slot_tokens = the word's length"
        )
    return tuple(prompt.ids), [(prompt.slot + j, t) for j, t in enumerate(word)]


def word_scores(
    logits_at: LogitsAt,
    prompts: list[Rendered],
    words: list[tuple[int, ...]],
    causal: bool,
    length_normalized: bool = False,
    batch_size: int = 32,
    grad: bool = False,
) -> Tensor:
    """s(w) for every prompt and word, (N, W): summed (or per-token mean) log-probabilities of the word's tokens.

    causal: the sequence is prompt + w_1 .. w_{k-1}; position slot - 1 + j predicts w_{j+1}.
    masked: the prompt has k [MASK] at the slot (render it with slot_tokens=k); slot + j holds w_{j+1}.
    grad: keep the graph (prompt-based fine-tuning trains through these scores).
    """
    items = [word_reads(prompt, word, causal) for prompt in prompts for word in words]  # prompt n, word w: n W + w
    sequences: dict[tuple[int, ...], int] = {}  # one forward pass per distinct sequence
    for ids, _ in items:
        sequences.setdefault(ids, len(sequences))
    order = list(sequences)
    scores = None
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        T = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), T), PAD_ID, dtype=torch.long)
        mask = torch.zeros(len(chunk), T, dtype=torch.long)
        for row, ids in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        positions: dict[tuple[int, int], int] = {}  # each (row, position) goes through the output layer once
        reads = []  # (item, index into positions, token)
        for i, (ids, pairs) in enumerate(items):
            row = sequences[ids] - start
            if 0 <= row < len(chunk):
                reads += [(i, positions.setdefault((row, pos), len(positions)), tok) for pos, tok in pairs]
        rows, cols = (torch.tensor(c) for c in zip(*positions))
        with torch.set_grad_enabled(grad):
            logp = F.log_softmax(logits_at(input_ids, mask, rows, cols).float(), dim=-1)
            item, at, token = (torch.tensor(c, device=logp.device) for c in zip(*reads))
            part = torch.zeros(len(items), device=logp.device).index_add(0, item, logp[at, token])
            scores = part if scores is None else scores + part
    if length_normalized:
        scores = scores / torch.tensor([len(pairs) for _, pairs in items], device=scores.device)
    return scores.view(len(prompts), len(words))


def verbalizer_scores(
    logits_at: LogitsAt,
    render: Callable[[int, int], Rendered],
    n_examples: int,
    verbalizer: Verbalizer,
    causal: bool,
    length_normalized: bool = False,
    batch_size: int = 32,
    grad: bool = False,
) -> Tensor:
    """s(y) = log sum_{w in v(y)} exp s(w), (N, C). render(n, k) is example n's prompt with room for a k-token
    answer (k [MASK] at the slot for a masked model)."""
    flat = [w for group in verbalizer.words for w in group]
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(flat):
        by_length.setdefault(len(w), []).append(i)
    columns: dict[int, Tensor] = {}
    for k, indices in by_length.items():  # masked models need k [MASK] for a k-token word
        prompts = [render(n, k) for n in range(n_examples)]
        group = word_scores(logits_at, prompts, [flat[i] for i in indices], causal, length_normalized, batch_size, grad)
        columns.update({i: group[:, c] for c, i in enumerate(indices)})
    out, i = [], 0
    for group in verbalizer.words:
        out.append(torch.logsumexp(torch.stack([columns[i + j] for j in range(len(group))], dim=1), dim=1))
        i += len(group)
    return torch.stack(out, dim=1)


def label_scores(
    logits_at: LogitsAt,
    tokenizer: Tokenizer,
    template: Template,
    verbalizer: Verbalizer,
    examples: list[dict[str, str]],
    causal: bool,
    max_len: int,
    length_normalized: bool = False,
    prefix_ids: Sequence[Sequence[int]] | None = None,
    batch_size: int = 32,
) -> Tensor:
    """s(y) for each example (N, C) with `template`; prefix_ids: per-example ids placed before the prompt
    (few-shot demonstrations), counted against max_len before the fields are cut."""

    def render(n: int, k: int) -> Rendered:
        prefix = list(prefix_ids[n]) if prefix_ids is not None else []
        r = template.render(tokenizer, examples[n], max_len - len(prefix), slot_tokens=k, add_special=not causal)
        if causal:
            return Rendered(prefix + r.ids, len(prefix) + r.slot)
        return Rendered(r.ids[:1] + prefix + r.ids[1:], len(prefix) + r.slot)  # demonstrations go after [CLS]

    return verbalizer_scores(logits_at, render, len(examples), verbalizer, causal, length_normalized, batch_size)
