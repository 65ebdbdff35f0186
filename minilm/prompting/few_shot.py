"""Few-shot prompting: k solved demonstrations per label in front of the query, never cutting the query for them.

    prompt = demo_1 demo_2 ... demo_m prompt(x)       demo_i = the template filled with a training example and
                                                      its label word, then a separator

Docs: docs/prompting.md (few-shot prompts).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from minilm.prompting.template import Template
from minilm.tokenizer import Tokenizer


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


def demonstration(
    tokenizer: Tokenizer, template: Template, values: dict[str, str], answer: str, separator: str = "\n\n"
) -> list[int]:
    """One solved example: the template with its fields and the answer word in the slot, then the separator."""
    r = template.render(tokenizer, values, budget=10**9, slot_tokens=0)
    return r.ids[: r.slot] + tokenizer.encode(answer) + r.ids[r.slot :] + tokenizer.encode(separator)


def few_shot_prefixes(
    tokenizer: Tokenizer,
    template: Template,
    demonstrations: list[list[int]],
    queries: list[dict[str, str]],
    longest_answer: int,
    causal: bool,
    max_len: int,
) -> list[list[int]]:
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
