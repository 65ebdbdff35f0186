"""Parameter-efficient tuning, built into minilm's own model: one method per file.

    prompt.py          prompt tuning: soft prompt P prepended to the input embeddings
    prompt_encoder.py  the soft prompt produced by a small network g_phi, folded to vectors after training
    prefix.py          prefix tuning: per-layer keys/values, from an MLP while training, folded after
    freeze.py          layer freezing (first k / last k) and full fine-tuning
    bitfit.py          bias terms only
    lora.py            low-rank updates of W_Q and W_V, mergeable into the weights
    heads.py           classification head or verbalizer: how a class is read out
    tuned.py           TunedModel: base + method + readout; save/load with the base's hash
    mixed.py           TaskBank: rows of one batch using different tasks' prompts/prefixes
    trainer.py         the tuning loop with early stopping on dev
"""

from __future__ import annotations

from typing import Any

from minilm.model import Transformer
from minilm.tokenizer import Tokenizer
from minilm.tuning.bitfit import BitFit
from minilm.tuning.freeze import FullFineTuning, LayerFreezing
from minilm.tuning.heads import ClassificationHead, TemplateVerbalizer, Verbalizer
from minilm.tuning.lora import LoRA
from minilm.tuning.method import TuningMethod
from minilm.tuning.mixed import TaskBank
from minilm.tuning.prefix import PrefixTuning
from minilm.tuning.prompt import SoftPrompt
from minilm.tuning.prompt_encoder import PromptEncoder
from minilm.tuning.tuned import TunedModel, weights_sha256

METHODS = ("prompt", "prompt-encoder", "prefix", "freeze", "bitfit", "lora", "full")

DEFAULT_LR = {"prompt": 3e-2, "prompt-encoder": 3e-4, "prefix": 3e-3, "freeze": 1e-4, "bitfit": 1e-3, "lora": 3e-3, "full": 1e-4}
"""Peak learning rate per method when none is given; how these were chosen is in docs/tuning.md."""


def build_method(name: str, base: Transformer, tokenizer: Tokenizer | None = None, **hp: Any) -> TuningMethod:
    """The method `name` for `base` with hyper-parameters `hp` (as stored in tuned.json)."""
    if name == "prompt":
        return SoftPrompt.for_base(base, tokenizer=tokenizer, **hp)
    if name == "prompt-encoder":
        return PromptEncoder.for_base(base, tokenizer=tokenizer, **hp)
    if name == "prefix":
        return PrefixTuning.for_base(base, **hp)
    if name == "freeze":
        return LayerFreezing(n_layers=base.config.n_layers, **hp)
    if name == "bitfit":
        return BitFit(**hp)
    if name == "lora":
        return LoRA(**hp)
    if name == "full":
        return FullFineTuning(**hp)
    raise ValueError(f"unknown tuning method {name!r}: use one of {', '.join(METHODS)}")


__all__ = [
    "DEFAULT_LR", "METHODS", "BitFit", "ClassificationHead", "FullFineTuning", "LayerFreezing", "LoRA", "PrefixTuning", "PromptEncoder",
    "SoftPrompt", "TaskBank", "TemplateVerbalizer", "TunedModel", "TuningMethod", "Verbalizer", "build_method", "weights_sha256",
]
