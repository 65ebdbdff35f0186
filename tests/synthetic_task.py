"""A synthetic sentiment task and a tiny base model pretrained to have the skill it needs, latently.

Sentences are 6 filler words plus one polar word (great/fine/nice/lovely = 1, awful/poor/sad/dull = 0).
The base is pretrained (causal LM, a few seconds) on lines of two kinds:
    "rate <sentence> yes|no"   where the answer follows the polar word
    "<sentence> yes|no"        where the answer is a coin flip
So the frozen base can answer, but only after the trigger word "rate"; on the bare task sentence it is
at chance. A tuning method has to learn to elicit the skill (a soft prompt can learn to act like
"rate"), which is the small-scale version of what prompt learning does with a real LM.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from minilm import ModelConfig, Tokenizer, Transformer, causal_lm_loss

POSITIVE = ["great", "fine", "nice", "lovely"]
NEGATIVE = ["awful", "poor", "sad", "dull"]
FILLER = "the a film story plot actor scene music long short old new red blue it was and but".split()
LABEL_WORDS = [" no", " yes"]


def sentence(rng: random.Random, label: int) -> str:
    words = rng.sample(FILLER, 6)
    words.insert(rng.randint(0, 6), rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words)


def write_task(folder: Path, n_train: int = 400, n_dev: int = 200, seed: int = 1) -> Path:
    """train.tsv and dev.tsv with a `sentence<TAB>label` header, balanced in expectation."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for _ in range(n):
            label = rng.randint(0, 1)
            rows.append(f"{sentence(rng, label)}\t{label}\n")
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(rows), encoding="utf-8")
    return folder


def pretraining_lines(n: int = 4000, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        label = rng.randint(0, 1)
        if rng.random() < 0.5:
            lines.append("rate " + sentence(rng, label) + LABEL_WORDS[label])
        else:
            lines.append(sentence(rng, label) + rng.choice(LABEL_WORDS))
    return lines


def pretrained_base(steps: int = 800, seed: int = 0, lr: float = 1e-2) -> tuple[Transformer, Tokenizer]:
    """A 2-layer d=32 causal model trained `steps` AdamW steps on `pretraining_lines` (about 4 s on 2 cores)."""
    lines = pretraining_lines()
    tokenizer = Tokenizer.train(texts=lines, vocab_size=300)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=32, dropout=0.0
    )
    model = Transformer(config, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, len(lines), (32,), generator=generator).tolist()
        batch = tokenizer.encode_batch([lines[i] for i in rows])
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])
        causal_lm_loss(logits, batch["input_ids"], batch["attention_mask"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer
