"""Two ways to read a class out of a (tuned) language model.

Classification head (new parameters, d C + C):
    s = W_c h_pool + b_c          h_pool = LN_f(h_L) at [CLS] (masked model) or at the last real token (causal)

Verbalizer (no new parameters: the LM head scores label words v(y) = w_1 .. w_k):
    causal   s_y = sum_j log p(w_j | x, w_<j)                the words follow the text
    masked   s_y = sum_j log p(MASK_j = w_j | x, MASK x k)   k [MASK] slots after the text
    y* = argmax_y s_y;  training minimises cross-entropy over the C scores (PET-style)

Both take the text ids (B, T) with right padding and add their own tokens; positions count real
tokens only, so tokens appended after the padding behave exactly as if the padding were not there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilm.generate import last_real_index
from minilm.tokenizer import CLS_ID, MASK_ID, SEP_ID, Tokenizer

if TYPE_CHECKING:
    from minilm.tuning.tuned import TunedModel


def append_columns(ids: Tensor, mask: Tensor, tokens: list[int], front: list[int] = ()) -> tuple[Tensor, Tensor]:
    """[front; ids; tokens] with the new columns real (mask 1) in every row."""
    B = ids.size(0)
    parts_ids, parts_mask = [], []
    if front:
        parts_ids.append(torch.tensor(front, device=ids.device).expand(B, -1))
        parts_mask.append(torch.ones(B, len(front), dtype=torch.bool, device=ids.device))
    parts_ids.append(ids)
    parts_mask.append(mask.bool())
    if tokens:
        parts_ids.append(torch.tensor(tokens, device=ids.device).expand(B, -1))
        parts_mask.append(torch.ones(B, len(tokens), dtype=torch.bool, device=ids.device))
    return torch.cat(parts_ids, dim=1), torch.cat(parts_mask, dim=1)


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

    def scores(self, model: TunedModel, ids: Tensor, mask: Tensor) -> Tensor:
        causal = model.base.config.causal
        if not causal:
            ids, mask = append_columns(ids, mask, [SEP_ID], front=[CLS_ID])
        h, full_mask = model.hidden_states(ids, mask)
        B = ids.size(0)
        pool = last_real_index(full_mask) if causal else torch.full((B,), model.method.prompt_length, device=ids.device)
        return self.W_c(h[torch.arange(B, device=ids.device), pool])


class Verbalizer(nn.Module):
    """Label y is the word v(y); its score is the summed log-probability of v(y)'s tokens."""

    kind = "verbalizer"

    def __init__(self, label_token_ids: list[list[int]]) -> None:
        super().__init__()
        if len(label_token_ids) < 2 or any(len(ids) == 0 for ids in label_token_ids):
            raise ValueError("a verbalizer needs at least two labels, each with a word of at least one token")
        self.label_token_ids = [list(ids) for ids in label_token_ids]
        self.n_classes = len(label_token_ids)

    @classmethod
    def from_words(cls, tokenizer: Tokenizer, words: list[str]) -> Verbalizer:
        """v(y) for each label word; a word usually starts with a space (" good"), as it follows other text."""
        return cls([tokenizer.encode(w) for w in words])

    def extra_tokens(self, causal: bool) -> int:
        longest = max(len(ids) for ids in self.label_token_ids)
        return longest - 1 if causal else longest + 2

    def scores(self, model: TunedModel, ids: Tensor, mask: Tensor) -> Tensor:
        B = ids.size(0)
        rows = torch.arange(B, device=ids.device)
        out = torch.empty(B, self.n_classes, device=ids.device)
        causal = model.base.config.causal
        by_length: dict[int, list[int]] = {}
        for y, word in enumerate(self.label_token_ids):
            by_length.setdefault(len(word), []).append(y)
        for k, labels in by_length.items():
            if causal and k == 1:  # one pass scores every one-token word: log p(w | x) at the last real token
                h, full_mask = model.hidden_states(ids, mask)
                logp = F.log_softmax(model.lm_logits(h[rows, last_real_index(full_mask)]).float(), dim=-1)
                for y in labels:
                    out[:, y] = logp[:, self.label_token_ids[y][0]]
            elif causal:  # teacher forcing: x, w_1 .. w_{k-1}; the last k real positions predict w_1 .. w_k
                for y in labels:
                    word = self.label_token_ids[y]
                    ext_ids, ext_mask = append_columns(ids, mask, word[:-1])
                    h, full_mask = model.hidden_states(ext_ids, ext_mask)
                    T = h.size(1)
                    text_end = last_real_index(full_mask[:, : T - (k - 1)])  # predicts w_1
                    first = F.log_softmax(model.lm_logits(h[rows, text_end]).float(), dim=-1)
                    rest = F.log_softmax(model.lm_logits(h[:, T - (k - 1):]).float(), dim=-1)  # predict w_2 .. w_k
                    score = first[:, word[0]]
                    for j in range(1, k):
                        score = score + rest[:, j - 1, word[j]]
                    out[:, y] = score
            else:  # masked: [CLS] x [MASK] x k [SEP]; slot j scores token j of each k-token word
                ext_ids, ext_mask = append_columns(ids, mask, [MASK_ID] * k + [SEP_ID], front=[CLS_ID])
                h, _ = model.hidden_states(ext_ids, ext_mask)
                T = h.size(1)
                logp = F.log_softmax(model.lm_logits(h[:, T - 1 - k: T - 1]).float(), dim=-1)  # (B, k, V)
                for y in labels:
                    word = torch.tensor(self.label_token_ids[y], device=ids.device)
                    out[:, y] = logp[:, torch.arange(k, device=ids.device), word].sum(dim=1)
        return out


class TemplateVerbalizer(nn.Module):
    """PET-style readout: the text inside a template, each label's words scored at the template's answer slot.

        s(y) = log sum_{w in v(y)} exp s(w),   s(w) as in minilm/prompting.py, on [soft prompt; prompt(x)]

    No new parameters: prompt-based fine-tuning trains the method's parameters through the LM head.
    Built from token ids (`from_template` tokenizes), so a saved model reloads without a tokenizer.
    """

    kind = "template"

    def __init__(self, template: str, before: list[int], after: list[int], tail: list[int], text_prefix: str,
                 words: list[list[list[int]]], length_normalized: bool = False) -> None:
        super().__init__()
        from minilm.prompting import Verbalizer as Words

        self.template, self.before, self.after, self.tail = template, list(before), list(after), list(tail)
        self.text_prefix, self.length_normalized = text_prefix, length_normalized
        self.words = Words(tuple(tuple(tuple(w) for w in group) for group in words))
        self.n_classes = len(words)

    @classmethod
    def from_template(cls, tokenizer: Tokenizer, template: str, label_words: list, length_normalized: bool = False) -> TemplateVerbalizer:
        """template with one field {text} and an answer slot ([MASK], or the end); label_words: a word or a list per label."""
        from minilm.prompting import Template, Verbalizer as Words

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
        words = Words.from_words(tokenizer, label_words).words
        return cls(template, *sections, text_prefix, [[list(w) for w in group] for group in words], length_normalized)

    def metadata(self) -> dict:
        return {"template": self.template, "before": self.before, "after": self.after, "tail": self.tail,
                "text_prefix": self.text_prefix, "words": [[list(w) for w in group] for group in self.words.words],
                "length_normalized": self.length_normalized}

    def extra_tokens(self, causal: bool) -> int:
        longest = max(len(w) for group in self.words.words for w in group)
        fixed = len(self.before) + len(self.after) + len(self.tail)
        return fixed + (longest - 1 if causal else longest + 2)

    def scores(self, model: TunedModel, ids: Tensor, mask: Tensor) -> Tensor:
        from minilm.prompting import Rendered, verbalizer_scores

        causal = model.base.config.causal
        if causal and self.tail:
            raise ValueError(f"template {self.template!r} has text after its answer slot, which a causal model cannot see: "
                             "end the template at the slot")
        rows = [ids[b][mask[b].bool()].tolist() for b in range(ids.size(0))]
        n_soft = model.method.prompt_length

        def render(b: int, k: int) -> Rendered:
            body = self.before + rows[b] + self.after
            if causal:
                return Rendered(body, len(body))
            return Rendered([CLS_ID, *body, *[MASK_ID] * k, *self.tail, SEP_ID], 1 + len(body))

        def logits_fn(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
            h, _ = model.hidden_states(input_ids.to(ids.device), attention_mask.to(ids.device))
            return model.lm_logits(h[:, n_soft:])

        n_words = sum(len(group) for group in self.words.words)
        return verbalizer_scores(logits_fn, render, ids.size(0), self.words, causal, self.length_normalized,
                                 batch_size=ids.size(0) * n_words, grad=torch.is_grad_enabled()).to(ids.device)
