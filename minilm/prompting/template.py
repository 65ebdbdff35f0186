"""Templates: a prompt with named fields and one answer slot, tokenized so that truncation shortens only the fields.

    prompt(x) = the template with x's fields filled in, e.g. "Sentence: {text}\nSentiment:" (causal: the answer
                follows the end) or "Sentence: {text} Sentiment: [MASK]" (masked: [MASK] marks the answer slot)

A template is tokenized piece by piece so that truncation can shorten the fields only: the literal
text, the answer slot and the answer are never cut. A space before a field is moved onto the field's
text, which reproduces how the whole string would be tokenized (" the" is one token, not " " + "the").

Docs: docs/prompting.md (templates and truncation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from minilm.tokenizer import CLS_ID, MASK_ID, SEP_ID, Tokenizer

SLOT = "[MASK]"
FIELD = re.compile(r"\{(\w+)\}")
DEFAULT_TEMPLATES = {True: "{text} It was", False: "{text} It was [MASK]."}
"""The template when neither the command line nor the task.json gives one, by `causal`: the answer follows the end
(causal), or sits at [MASK] (masked)."""


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
            raise ValueError(
                f"template {self.text!r} has {self.text.count(SLOT)} {SLOT} slots: "
                "write exactly one (or none: the answer then follows the end)"
            )
        if not self.fields:
            raise ValueError(f"template {self.text!r} has no field: write e.g. {{text}} where the input goes")

    @property
    def fields(self) -> list[str]:
        return FIELD.findall(self.text)

    def pieces(self) -> list[tuple[str, str]]:
        """The template as ("literal", text) / ("field", name) / ("slot", "") pieces, spaces before fields moved
        onto them."""
        out: list[tuple[str, str]] = []
        for i, part in enumerate(self.text.split(SLOT)):
            if i:
                out.append(("slot", ""))
            pos = 0
            for m in FIELD.finditer(part):
                literal = part[pos : m.start()]
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

    def render(
        self,
        tokenizer: Tokenizer,
        values: dict[str, str],
        budget: int,
        slot_tokens: int = 1,
        add_special: bool = False,
        cut: Sequence[str] | None = None,
    ) -> Rendered:
        """Token ids of the template with `values`, at most `budget` ids including `slot_tokens` answer tokens.

        Only the fields are shortened (the longest first, from its end), and only those named in `cut` when it
        is given. add_special wraps the prompt as [CLS] ... [SEP] (a masked model's layout); the masked answer
        slot holds `slot_tokens` [MASK] ids.
        """
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise ValueError(
                f"template {self.text!r} needs the field(s) {', '.join(missing)}; "
                f"the example has {', '.join(values) or 'none'}"
            )
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
            raise ValueError(
                f"the template and answer take {fixed} of the {budget} tokens available: "
                "no room for the input; use a shorter template or a model with a longer context"
            )
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
