"""Prompt tuning (Lester et al. 2021): n trainable vectors in front of the input embeddings.

    h_0 = [P; E[x]] + pos          P in R^{n x d}, the "soft prompt" (n virtual tokens)
    min_P  L(y, f_theta([P; E[x]]))   theta (the whole base model) frozen

The virtual tokens take positions 0..n-1 like real tokens, are attended to by every real token (and
causally by the later ones), and never are padding. Trainable numbers: n d.

Docs: docs/tuning.md (prompt tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minilm.model import ModelConfig, Transformer
from minilm.settings import check_fields, setting
from minilm.tokenizer import NUM_SPECIAL_TOKENS, Tokenizer
from minilm.tuning.methods.base import TuningMethod

INITS = ("random", "vocab", "labels", "text")


def check_init(spec: str) -> str:
    """A prompt initialisation as written on the command line: random, vocab, labels or text:"some words"."""
    if spec in ("random", "vocab", "labels") or (spec.startswith("text:") and spec[len("text:") :].strip()):
        return spec
    raise ValueError(f'unknown prompt initialisation {spec!r}: expected random, vocab, labels or text:"some words"')


INIT_HELP = (
    "soft prompt start: random, vocab (embeddings of random tokens), labels (the label words' embeddings first, "
    'Lester et al.\'s class-label init; vocab where the task has no label words) or text:"words" (their embeddings)'
)


def label_init(init: str, label_words: list[str] | None) -> str:
    """init "labels" as the text it stands for: the label words in label order (" bad good"), or "vocab" where no
    label words are known (a head readout on a task without them); other inits as given.

    The tune command and `compare` resolve it with the task's label words, so tuned.json stores the text itself.
    """
    if init != "labels":
        return init
    return "text:" + "".join(label_words) if label_words else "vocab"


@dataclass(frozen=True)
class PromptSettings:
    """Prompt tuning's settings: its hyper-parameters in tuned.json and its flags."""

    prompt_len: int = setting(20, "soft prompt vectors", check="positive", metavar="N")
    init: str = setting("labels", INIT_HELP, parse=check_init)

    def __post_init__(self) -> None:
        check_fields(self)
        check_init(self.init)


def initial_prompt(
    base: Transformer, n: int, init: str, seed: int, tokenizer: Tokenizer | None = None, text: str | None = None
) -> Tensor:
    """P at step 0, (n, d):

    random  P_ij ~ N(0, s^2), s the standard deviation of the base's token embeddings E
    vocab   n rows of E drawn without replacement from the ordinary (non-special) tokens
    text    the embeddings of `text`'s tokens (e.g. the task description or the label words), cut to n;
            if the text has fewer than n tokens the remaining rows are drawn as in `vocab`
    """
    E = base.tok_emb.weight.detach()
    V, d = E.shape
    generator = torch.Generator().manual_seed(seed)
    if init == "random":
        return torch.randn(n, d, generator=generator) * E.float().std().item()
    if init not in ("vocab", "text"):
        raise ValueError(f'unknown prompt initialisation {init!r}: use random, vocab or text:"..."')
    rows = []
    if init == "text":
        if tokenizer is None or not text:
            raise ValueError(
                "text initialisation needs a tokenizer and a non-empty text, "
                'e.g. --init text:"is this review positive?"'
            )
        rows = tokenizer.encode(text)[:n]
    ordinary = torch.arange(NUM_SPECIAL_TOKENS, V)
    drawn = ordinary[torch.randperm(V - NUM_SPECIAL_TOKENS, generator=generator)[: n - len(rows)]].tolist()
    return E[torch.tensor(rows + drawn, dtype=torch.long)].float().cpu().clone()


def parse_init(spec: str) -> tuple[str, str | None]:
    """'random' | 'vocab' | 'text:...' -> (kind, text). 'labels' is resolved with the task's label words first
    (`label_init`); one that reaches here unresolved knows no label words and is read as 'vocab'."""
    if spec.startswith("text:"):
        return "text", spec[len("text:") :]
    if spec == "labels":
        return "vocab", None
    if spec not in ("random", "vocab"):
        raise ValueError(f'unknown prompt initialisation {spec!r}: use random, vocab or text:"..."')
    return spec, None


class SoftPrompt(TuningMethod):
    """Prompt tuning: the soft prompt P (n, d) is the only trainable tensor (n d numbers)."""

    name = "prompt"
    draws = True
    Settings = PromptSettings
    mixable = True

    def __init__(self, settings: PromptSettings | None, config: ModelConfig, seed: int = 0) -> None:
        super().__init__(settings, config, seed)
        self.P = nn.Parameter(torch.zeros(self.settings.prompt_len, config.d_model))

    def initialize(self, base: Transformer, tokenizer: Tokenizer | None) -> None:
        """P at step 0, as settings.init says ('random', 'vocab' or 'text:...')."""
        kind, text = parse_init(self.settings.init)
        with torch.no_grad():
            self.P.copy_(initial_prompt(base, self.settings.prompt_len, kind, self.seed, tokenizer, text))

    @property
    def prompt_length(self) -> int:
        return self.P.size(0)

    def soft_prompt(self) -> Tensor:
        return self.P
