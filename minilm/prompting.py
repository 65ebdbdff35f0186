"""Prompting: templates, verbalizers, and zero- or few-shot classification read out of the LM head.

    prompt(x)  = the template with x's fields filled in, e.g. "Sentence: {text}\\nSentiment:" (causal)
                 or "Sentence: {text} Sentiment: [MASK]" (masked: [MASK] marks the answer slot)
    s(w)       = sum_j log p(w_j | prompt(x), w_<j)          a label word w = w_1 .. w_k (causal)
               = sum_j log p([MASK]_j = w_j | prompt(x) with k [MASK] at the slot)        (masked)
    s(y)       = log sum_{w in v(y)} exp s(w)                 a label may have several words v(y)
    y*         = argmax_y s(y)

With `length_normalized` a word's score is divided by its number of tokens, s(w) / k, so long words
are not penalised for having more tokens. Contextual calibration (Zhao et al. 2021) divides the label
probabilities by those of a content-free input (the template filled with "N/A"):
    p_cal(y | x) ∝ p(y | x) / p(y | "N/A")

A template is tokenized piece by piece so that truncation can shorten the fields only: the literal
text, the answer slot and the answer are never cut. A space before a field is moved onto the field's
text, which reproduces how the whole string would be tokenized (" the" is one token, not " " + "the").
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from minilm.model import Transformer
from minilm.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, Tokenizer

SLOT = "[MASK]"
FIELD = re.compile(r"\{(\w+)\}")

LogitsFn = Callable[[Tensor, Tensor], Tensor]
"""(input_ids (B, T), attention_mask (B, T)) -> logits (B, T, V) at those token positions."""


@dataclass(frozen=True)
class Rendered:
    """A filled-in prompt: its ids and where the answer goes (the answer's first token is predicted
    at `slot - 1` by a causal model, and sits at `slot` as a [MASK] in a masked one)."""

    ids: list[int]
    slot: int


@dataclass(frozen=True)
class Template:
    """A prompt with named fields ({text}, {premise}, ...) and one answer slot: `[MASK]`, or the end."""

    text: str

    def __post_init__(self) -> None:
        if self.text.count(SLOT) > 1:
            raise ValueError(f"template {self.text!r} has {self.text.count(SLOT)} {SLOT} slots: write exactly one (or none: the answer then follows the end)")
        if not self.fields:
            raise ValueError(f"template {self.text!r} has no field: write e.g. {{text}} where the input goes")

    @property
    def fields(self) -> list[str]:
        return FIELD.findall(self.text)

    def pieces(self) -> list[tuple[str, str]]:
        """The template as ("literal", text) / ("field", name) / ("slot", "") pieces, spaces before fields moved onto them."""
        out: list[tuple[str, str]] = []
        for i, part in enumerate(self.text.split(SLOT)):
            if i:
                out.append(("slot", ""))
            pos = 0
            for m in FIELD.finditer(part):
                literal = part[pos:m.start()]
                space = literal.endswith(" ")
                if literal.rstrip(" ") or (literal and not space):
                    out.append(("literal", literal[:-1] if space else literal))
                out.append(("field", (" " if space else "") + m.group(1)))
                pos = m.end()
            if part[pos:]:
                out.append(("literal", part[pos:]))
        if SLOT not in self.text:
            out.append(("slot", ""))
        return out

    def render(self, tokenizer: Tokenizer, values: dict[str, str], budget: int, slot_tokens: int = 1,
               add_special: bool = False, cut: Sequence[str] | None = None) -> Rendered:
        """Token ids of the template with `values`, at most `budget` ids including `slot_tokens` answer tokens.

        Only the fields are shortened (the longest first, from its end), and only those named in `cut` when it
        is given. add_special wraps the prompt as [CLS] ... [SEP] (a masked model's layout); the masked answer
        slot holds `slot_tokens` [MASK] ids.
        """
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise ValueError(f"template {self.text!r} needs the field(s) {', '.join(missing)}; the example has {', '.join(values) or 'none'}")
        pieces = self.pieces()
        parts: list[tuple[str, list[int]]] = []
        for kind, value in pieces:
            if kind == "literal":
                parts.append(("literal", tokenizer.encode(value)))
            elif kind == "field":
                name = value.strip()
                parts.append(("field", tokenizer.encode((" " if value.startswith(" ") else "") + values[name].strip())))
            else:
                parts.append(("slot", [MASK_ID] * slot_tokens if add_special else []))
        fixed = sum(len(ids) for kind, ids in parts if kind != "field") + (2 if add_special else 0)
        fixed += 0 if add_special else slot_tokens  # a causal answer follows the prompt and needs room too
        names = [value.strip() for kind, value in pieces if kind == "field"]
        cuttable = [cut is None or name in cut for name in names]
        lengths = [len(ids) for kind, ids in parts if kind == "field"]
        fixed += sum(n for n, ok in zip(lengths, cuttable) if not ok)
        room = budget - fixed
        if room < sum(cuttable):
            raise ValueError(f"the template and answer take {fixed} of the {budget} tokens available: "
                             "no room for the input; use a shorter template or a model with a longer context")
        while sum(n for n, ok in zip(lengths, cuttable) if ok) > room:  # cut the longest cuttable field by one token
            longest = max((n, i) for i, (n, ok) in enumerate(zip(lengths, cuttable)) if ok)[1]
            lengths[longest] -= 1
        ids: list[int] = [CLS_ID] if add_special else []
        slot, f = -1, 0
        for kind, piece in parts:
            if kind == "field":
                piece = piece[: lengths[f]]
                f += 1
            if kind == "slot":
                slot = len(ids)
            ids += piece
        if add_special:
            ids.append(SEP_ID)
        return Rendered(ids, slot)


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


def base_logits(model: Transformer) -> LogitsFn:
    """The LogitsFn of a plain Transformer."""
    return lambda ids, mask: model(ids, attention_mask=mask)


def word_scores(logits_fn: LogitsFn, prompts: list[Rendered], words: list[tuple[int, ...]], causal: bool,
                length_normalized: bool = False, batch_size: int = 32, grad: bool = False) -> Tensor:
    """s(w) for every prompt and word, (N, W): summed (or per-token mean) log-probabilities of the word's tokens.

    causal: the sequence is prompt + w_1 .. w_{k-1}; position slot - 1 + j predicts w_{j+1}.
    masked: the prompt has k [MASK] at the slot (render it with slot_tokens=k); slot + j holds w_{j+1}.
    grad: keep the graph (prompt-based fine-tuning trains through these scores).
    """
    items = []  # (ids, [(position, token)]) for prompt n, word w at index n * W + w
    for prompt in prompts:
        for word in words:
            if causal:
                items.append((prompt.ids + list(word[:-1]), [(prompt.slot - 1 + j, t) for j, t in enumerate(word)]))
            else:
                masks = sum(1 for t in prompt.ids[prompt.slot:] if t == MASK_ID)
                if masks < len(word):
                    raise ValueError(f"the prompt has {masks} [MASK] at its slot but the word has {len(word)} tokens: "
                                     "render it with slot_tokens = the word's length")
                items.append((prompt.ids, [(prompt.slot + j, t) for j, t in enumerate(word)]))
    # one forward pass per distinct sequence: a causal prompt with every one-token word, or a masked prompt with
    # every k-token word, is the same sequence for all those words
    sequences: dict[tuple[int, ...], int] = {}
    for ids, _ in items:
        sequences.setdefault(tuple(ids), len(sequences))
    order = list(sequences)
    scores: list[Tensor | None] = [None] * len(items)
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        T = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), T), PAD_ID, dtype=torch.long)
        mask = torch.zeros(len(chunk), T, dtype=torch.long)
        for row, ids in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        with torch.set_grad_enabled(grad):
            logp = F.log_softmax(logits_fn(input_ids, mask).float(), dim=-1)
            for i, (ids, pairs) in enumerate(items):
                row = sequences[tuple(ids)] - start
                if 0 <= row < len(chunk):
                    score = torch.stack([logp[row, pos, tok] for pos, tok in pairs]).sum()
                    scores[i] = score / len(pairs) if length_normalized else score
    return torch.stack(scores).view(len(prompts), len(words))


def verbalizer_scores(logits_fn: LogitsFn, render: Callable[[int, int], Rendered], n_examples: int, verbalizer: Verbalizer,
                      causal: bool, length_normalized: bool = False, batch_size: int = 32, grad: bool = False) -> Tensor:
    """s(y) = log sum_{w in v(y)} exp s(w), (N, C). render(n, k) is example n's prompt with room for a k-token
    answer (k [MASK] at the slot for a masked model)."""
    flat = [w for group in verbalizer.words for w in group]
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(flat):
        by_length.setdefault(len(w), []).append(i)
    columns: dict[int, Tensor] = {}
    for k, indices in by_length.items():  # masked models need k [MASK] for a k-token word
        prompts = [render(n, k) for n in range(n_examples)]
        group = word_scores(logits_fn, prompts, [flat[i] for i in indices], causal, length_normalized, batch_size, grad)
        columns.update({i: group[:, c] for c, i in enumerate(indices)})
    out, i = [], 0
    for group in verbalizer.words:
        out.append(torch.logsumexp(torch.stack([columns[i + j] for j in range(len(group))], dim=1), dim=1))
        i += len(group)
    return torch.stack(out, dim=1)


def label_scores(logits_fn: LogitsFn, tokenizer: Tokenizer, template: Template, verbalizer: Verbalizer,
                 examples: list[dict[str, str]], causal: bool, max_len: int, length_normalized: bool = False,
                 prefix_ids: Sequence[Sequence[int]] | None = None, batch_size: int = 32) -> Tensor:
    """s(y) for each example (N, C) with `template`; prefix_ids: per-example ids placed before the prompt
    (few-shot demonstrations), counted against max_len before the fields are cut."""

    def render(n: int, k: int) -> Rendered:
        prefix = list(prefix_ids[n]) if prefix_ids is not None else []
        r = template.render(tokenizer, examples[n], max_len - len(prefix), slot_tokens=k, add_special=not causal)
        if causal:
            return Rendered(prefix + r.ids, len(prefix) + r.slot)
        return Rendered(r.ids[:1] + prefix + r.ids[1:], len(prefix) + r.slot)  # demonstrations go after [CLS]

    return verbalizer_scores(logits_fn, render, len(examples), verbalizer, causal, length_normalized, batch_size)


def calibrate(scores: Tensor, content_free_scores: Tensor) -> Tensor:
    """log p_cal(y | x) = log softmax(s(x))_y - log softmax(s("N/A"))_y (renormalised): Zhao et al.'s contextual calibration."""
    return torch.log_softmax(torch.log_softmax(scores, dim=-1) - torch.log_softmax(content_free_scores, dim=-1), dim=-1)


def few_shot_demonstrations(examples: Sequence, labels: Sequence[int], k: int, seed: int) -> list[int]:
    """Indices of k demonstrations per label, drawn without replacement with a seeded generator, in a shuffled order."""
    rng = random.Random(seed)
    chosen = []
    for y in sorted(set(labels)):
        pool = [i for i, label in enumerate(labels) if label == y]
        if len(pool) < k:
            raise ValueError(f"label {y} has {len(pool)} examples, fewer than the {k} demonstrations asked for")
        chosen += rng.sample(pool, k)
    rng.shuffle(chosen)
    return chosen


def demonstration(tokenizer: Tokenizer, template: Template, values: dict[str, str], answer: str, separator: str = "\n\n") -> list[int]:
    """One solved example: the template with its fields and the answer word in the slot, then the separator."""
    r = template.render(tokenizer, values, budget=10**9, slot_tokens=0)
    return r.ids[: r.slot] + tokenizer.encode(answer) + r.ids[r.slot:] + tokenizer.encode(separator)


def few_shot_prefixes(tokenizer: Tokenizer, template: Template, demonstrations: list[list[int]],
                      queries: list[dict[str, str]], longest_answer: int, causal: bool, max_len: int) -> list[list[int]]:
    """For each query, the demonstrations that fit in front of it, in order; the query itself is never cut
    for them (demonstrations are dropped from the end of the list until the whole prompt fits)."""
    prefixes = []
    for values in queries:
        query = template.render(tokenizer, values, max_len, slot_tokens=longest_answer, add_special=not causal)
        room = max_len - len(query.ids) - (0 if not causal else longest_answer)
        chosen: list[int] = []
        for demo in demonstrations:
            if len(chosen) + len(demo) > room:
                break
            chosen += demo
        prefixes.append(chosen)
    return prefixes
