"""Prompt tuning (Lester et al. 2021): n trainable vectors in front of the input embeddings.

    h_0 = [P; E[x]] + pos          P in R^{n x d}, the "soft prompt" (n virtual tokens)
    min_P  L(y, f_theta([P; E[x]]))   theta (the whole base model) frozen
    P_0 = P*_source                   init pretrained:DIR: a soft prompt tuned before (prompt pre-training, PPT)

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
from minilm.tuning.methods.base import TuningMethod, pretrained_folder

INITS = ("random", "vocab", "labels", "text", "pretrained")


def check_init(spec: str) -> str:
    """A prompt initialisation as written on the command line: random, vocab, labels, text:"some words" or
    pretrained:DIR."""
    if spec in ("random", "vocab", "labels") or (spec.startswith("text:") and spec[len("text:") :].strip()):
        return spec
    if (pretrained_folder(spec) or "").strip():
        return spec
    raise ValueError(
        f'unknown prompt initialisation {spec!r}: expected random, vocab, labels, text:"some words" or pretrained:DIR'
    )


INIT_HELP = (
    "soft prompt start: random, vocab (embeddings of random tokens), labels (the label words' embeddings first, "
    'Lester et al.\'s class-label init; vocab where the task has no label words), text:"words" (their embeddings) '
    "or pretrained:DIR (the soft prompt tuned in DIR on this base, its length too: prompt pre-training)"
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
    """'random' | 'vocab' | 'text:...' | 'pretrained:DIR' -> (kind, text or DIR). 'labels' is resolved with the
    task's label words first (`label_init`); one that reaches here unresolved knows no label words and is read as
    'vocab'."""
    if spec.startswith("text:"):
        return "text", spec[len("text:") :]
    if pretrained_folder(spec) is not None:
        return "pretrained", pretrained_folder(spec)
    if spec == "labels":
        return "vocab", None
    if spec not in ("random", "vocab"):
        raise ValueError(f'unknown prompt initialisation {spec!r}: use random, vocab or text:"..."')
    return spec, None


def pretrained_needs_start(init: str) -> str:
    """The one-line error of a pretrained:DIR start built without its tensor."""
    return (
        f"{init}: a pre-trained start is read from the tuned folder by minilm.tuning.pretrained.pretrained_start "
        "(train.py tune does it); pass its tensor as for_base(start=...)"
    )


def checked_start(start: Tensor, shape: tuple[int, ...], what: str) -> Tensor:
    """`start` when it has the method's shape, else a one-line ValueError naming both shapes."""
    if tuple(start.shape) != shape:
        raise ValueError(f"the start given is {tuple(start.shape)}, but the {what} is {shape}")
    return start


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
        """P at step 0, as settings.init says ('random', 'vocab' or 'text:...'); 'pretrained:DIR' is given as a
        tensor (`start_at`)."""
        kind, text = parse_init(self.settings.init)
        if kind == "pretrained":
            raise ValueError(pretrained_needs_start(self.settings.init))
        self.start_at(initial_prompt(base, self.settings.prompt_len, kind, self.seed, tokenizer, text))

    def start_at(self, start: Tensor) -> None:
        """P_0 = start (n, d): a drawn or copied start, or a pre-trained prompt's P*_source."""
        with torch.no_grad():
            self.P.copy_(checked_start(start, tuple(self.P.shape), "soft prompt"))

    @property
    def prompt_length(self) -> int:
        return self.P.size(0)

    def soft_prompt(self) -> Tensor:
        return self.P
