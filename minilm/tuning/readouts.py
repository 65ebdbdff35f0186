"""Two ways to read a class out of a (tuned) language model, a classification head or the verbalizer, and the
language model itself for a model tuned to generate.

Classification head (new parameters, d C + C):
    s = W_c h_pool + b_c          h_pool = LN_f(h_L) at [CLS] (masked model) or at the last real token (causal)

Verbalizer (no new parameters: the LM head scores each label's words at the answer slot of a template):
    s(y) = log sum_{w in v(y)} exp s(w)      s(w) as in minilm.prompting.verbalizer, on [soft prompt; prompt(x)]
    y* = argmax_y s(y);  training minimises cross-entropy over the C scores (PET-style prompt-based fine-tuning)

Without a template the prompt is the text itself: the word follows the text (causal), or k [MASK] follow it
inside [CLS] ... [SEP] (masked). Both readouts take the text ids (B, T) with right padding; positions count real
tokens only, so tokens appended after the padding behave exactly as if the padding were not there.

Docs: docs/tuning.md (head and verbalizer readouts), docs/prompting.md (prompt-based fine-tuning).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilm.model import Transformer
from minilm.model.masks import last_real_index
from minilm.prompting import LogitsAt, Rendered, Template, Verbalizer, verbalizer_scores
from minilm.tokenizer import CLS_ID, MASK_ID, SEP_ID, Tokenizer
from minilm.tuning.methods.base import TuningMethod
from minilm.tuning.tasks import Task

READOUTS = ("head", "verbalizer")
PLAIN = "{text}"
"""The template of a verbalizer read out right after the text."""


class Scored(Protocol):
    """What a readout reads from the model it scores (a TunedModel)."""

    base: Transformer
    method: TuningMethod

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]: ...


class ClassificationHead(nn.Module):
    """s = W_c h_pool + b_c on the [CLS] (masked) or last real (causal) position."""

    kind = "head"

    def __init__(self, d_model: int, n_classes: int, seed: int = 0) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.W_c = nn.Linear(d_model, n_classes)
        with torch.no_grad():
            nn.init.normal_(self.W_c.weight, 0.0, 0.02, generator=torch.Generator().manual_seed(seed))
            nn.init.zeros_(self.W_c.bias)

    def extra_tokens(self, causal: bool) -> int:
        return 0 if causal else 2

    def scores(self, model: Scored, ids: Tensor, mask: Tensor) -> Tensor:
        causal = model.base.config.causal
        B = ids.size(0)
        if not causal:  # [CLS] ids [SEP]
            ones = torch.ones(B, 1, dtype=torch.long, device=ids.device)
            ids = torch.cat([ones * CLS_ID, ids, ones * SEP_ID], dim=1)
            mask = torch.cat([ones, mask.long(), ones], dim=1)
        h, full_mask = model.hidden_states(ids, mask)
        pool = last_real_index(full_mask) if causal else torch.full((B,), model.method.prompt_length, device=ids.device)
        return self.W_c(h[torch.arange(B, device=ids.device), pool])

    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_classes": self.n_classes}


class VerbalizerReadout(nn.Module):
    """The verbalizer as a readout: the text inside a template, each label's words scored at its answer slot.

    Built from token ids (`from_template` tokenizes), so a saved model reloads without a tokenizer.
    """

    kind = "verbalizer"

    def __init__(
        self,
        template: str,
        before: list[int],
        after: list[int],
        tail: list[int],
        text_prefix: str,
        words: Sequence[Sequence[Sequence[int]]],
        length_normalized: bool = False,
    ) -> None:
        super().__init__()
        self.template, self.before, self.after, self.tail = template, list(before), list(after), list(tail)
        self.text_prefix, self.length_normalized = text_prefix, length_normalized
        self.verbalizer = Verbalizer(tuple(tuple(tuple(w) for w in group) for group in words))
        if len(self.verbalizer.words) < 2 or any(not w for group in self.verbalizer.words for w in group):
            raise ValueError("a verbalizer needs at least two labels, each with a word of at least one token")
        self.n_classes = len(self.verbalizer.words)

    @classmethod
    def from_template(
        cls,
        tokenizer: Tokenizer,
        template: str,
        label_words: Sequence[Sequence[str] | str],
        length_normalized: bool = False,
    ) -> VerbalizerReadout:
        """template with one field {text} and an answer slot ([MASK], or the end); label_words: a word or a list per
        label."""
        t = Template(template)
        if t.fields != ["text"]:
            raise ValueError(f"a tuning template has exactly one field, {{text}}; {template!r} has {t.fields}")
        sections: list[list[int]] = [[], [], []]  # before the text, between the text and the slot, after the slot
        part, text_prefix = 0, ""
        for kind, value in t.pieces():
            if kind == "literal":
                sections[part] += tokenizer.encode(value)
            elif kind == "field":
                text_prefix, part = (" " if value.startswith(" ") else ""), max(part, 1)
            else:
                part = 2
        words = Verbalizer.from_words(tokenizer, label_words).words
        return cls(template, *sections, text_prefix, words, length_normalized)

    @classmethod
    def from_words(cls, tokenizer: Tokenizer, label_words: Sequence[Sequence[str] | str]) -> VerbalizerReadout:
        """The words read right after the text (no template); a word usually starts with a space (" good")."""
        return cls.from_template(tokenizer, PLAIN, label_words)

    @classmethod
    def from_ids(cls, label_token_ids: Sequence[Sequence[int]]) -> VerbalizerReadout:
        """One word per label given as token ids, read right after the text."""
        return cls(PLAIN, [], [], [], "", [[ids] for ids in label_token_ids])

    @classmethod
    def from_metadata(cls, r: dict[str, Any]) -> VerbalizerReadout:
        """From tuned.json's readout (also the two layouts written before there was one verbalizer readout)."""
        if "label_token_ids" in r:
            return cls.from_ids(r["label_token_ids"])
        return cls(
            r["template"], r["before"], r["after"], r["tail"], r["text_prefix"], r["words"], r["length_normalized"]
        )

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_classes": self.n_classes,
            "template": self.template,
            "before": self.before,
            "after": self.after,
            "tail": self.tail,
            "text_prefix": self.text_prefix,
            "words": [[list(w) for w in group] for group in self.verbalizer.words],
            "length_normalized": self.length_normalized,
        }

    def extra_tokens(self, causal: bool) -> int:
        longest = max(len(w) for group in self.verbalizer.words for w in group)
        fixed = len(self.before) + len(self.after) + len(self.tail)
        return fixed + (longest - 1 if causal else longest + 2)

    def scores(self, model: Scored, ids: Tensor, mask: Tensor) -> Tensor:
        causal = model.base.config.causal
        if causal and self.tail:
            raise ValueError(
                f"template {self.template!r} has text after its answer slot, which a causal model cannot see: "
                "end the template at the slot"
            )
        rows = [ids[b][mask[b].bool()].tolist() for b in range(ids.size(0))]

        def render(b: int, k: int) -> Rendered:
            body = self.before + rows[b] + self.after
            if causal:
                return Rendered(body, len(body))
            return Rendered([CLS_ID, *body, *[MASK_ID] * k, *self.tail, SEP_ID], 1 + len(body))

        n_words = sum(len(group) for group in self.verbalizer.words)
        return verbalizer_scores(
            tuned_logits(model),
            render,
            ids.size(0),
            self.verbalizer,
            causal,
            self.length_normalized,
            batch_size=ids.size(0) * n_words,
            grad=torch.is_grad_enabled(),
        ).to(ids.device)


def tuned_logits(model: Scored) -> LogitsAt:
    """The LogitsAt of a tuned model: h E^T at token positions, after the method's soft prompt."""
    device, n_soft = model.base.tok_emb.weight.device, model.method.prompt_length

    def logits_at(input_ids: Tensor, attention_mask: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        h, _ = model.hidden_states(input_ids.to(device), attention_mask.to(device))
        return F.linear(h[rows.to(device), cols.to(device) + n_soft], model.base.tok_emb.weight)

    return logits_at


class LanguageModelReadout(nn.Module):
    """No classes: the tuned model is read as a language model, logits = LN_f(h_L) E^T at every token (instruction
    tuning, generation). It adds no parameters and no tokens."""

    kind = "lm"
    n_classes = 0

    def extra_tokens(self, causal: bool) -> int:
        return 0

    def scores(self, model: Scored, ids: Tensor, mask: Tensor) -> Tensor:
        raise TypeError(
            "this tuned model was tuned to generate (an instruction-tuned method), not to classify: use "
            "TunedModel.token_logits or generate"
        )

    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_classes": 0}


Readout = ClassificationHead | VerbalizerReadout | LanguageModelReadout


def readout_from_metadata(r: dict[str, Any], d_model: int) -> Readout:
    """The readout a tuned.json describes (its trained tensors are loaded afterwards)."""
    if r["kind"] == "head":
        return ClassificationHead(d_model, r["n_classes"])
    if r["kind"] == LanguageModelReadout.kind:
        return LanguageModelReadout()
    return VerbalizerReadout.from_metadata(r)


def build_readout(
    task: Task,
    tokenizer: Tokenizer,
    d_model: int,
    readout: str | None = None,
    label_words: Sequence[str] | None = None,
    template: str | None = None,
    seed: int = 0,
) -> tuple[Readout, list[str] | None]:
    """(readout, label words or None): the verbalizer when words are known (given, or the task.json's), else a head.

    The verbalizer's template: `template`, else the task.json's, else the text alone (PLAIN)."""
    words = (
        list(label_words)
        if label_words
        else ([task.label_words[label] for label in task.labels] if task.label_words else None)
    )
    kind = readout or ("verbalizer" if words else "head")
    if kind not in READOUTS:
        raise ValueError(f"--readout must be one of {', '.join(READOUTS)}, got {kind!r}")
    if kind == "head":
        if template:
            raise ValueError(
                "--template is read out by the label words (a verbalizer); drop --readout head, or drop --template"
            )
        if label_words:
            raise ValueError("--label-words is for --readout verbalizer; drop it to read the classes out with a head")
        return ClassificationHead(d_model, len(task.labels), seed=seed), None
    if not words:
        raise ValueError(
            f'--readout verbalizer needs a word per label: give --label-words " bad, good" (in the order of the '
            f"labels {', '.join(task.labels)}) or label_words in the task's task.json"
        )
    if len(words) != len(task.labels):
        raise ValueError(
            f"{len(words)} label words ({', '.join(map(repr, words))}) for {len(task.labels)} labels "
            f"({', '.join(task.labels)}): give one word per label, in that order"
        )
    ids = [tokenizer.encode(w) for w in words]
    if len({tuple(i) for i in ids}) < len(ids):
        raise ValueError(
            f"two label words ({', '.join(map(repr, words))}) are the same tokens: the verbalizer could not "
            "tell the labels apart"
        )
    if len({w.startswith(" ") for w in words}) > 1:
        warnings.warn(
            f"some label words start with a space and some do not ({', '.join(map(repr, words))}); "
            'words are taken literally, and one that follows the text usually starts with a space: " bad, good"',
            stacklevel=2,
        )
    return VerbalizerReadout.from_template(tokenizer, template or task.template or PLAIN, [[w] for w in words]), words
