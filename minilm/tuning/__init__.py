"""Layer 4, tuning: a frozen LM adapted by a few parameters, built into minilm's own model; one method per file.

    methods/           prompt tuning, prompt encoder, prefix tuning, freezing, BitFit, LoRA, adapters, full
    registry.py        the methods by name, their settings, default learning rates
    readouts.py        classification head or verbalizer: how a class is read out (or the LM itself, to generate)
    tuned.py           TunedModel: base + method + readout; save/load with the base's hash
    tuned_loop.py      the loop's saving for a tuned model (tune, instruct --method)
    mixed.py           TaskBank: rows of one batch using different tasks' prompts/prefixes
    trainer.py         the tuning loop with early stopping on dev
    tune.py, classify.py   the `tune` and `classify` commands as functions
    prompt_search.py   AutoPrompt: discrete trigger tokens found by the gradient, nothing trained
    tasks.py, metrics.py   task folders; accuracy, macro-F1, confusion
    instructions.py, instruct.py   instruction data; instruction tuning, by every weight or by a method

Docs: docs/tuning.md, docs/prompting.md (prompt-based fine-tuning, instruction tuning).
"""

from minilm.tuning.methods import (
    Adapters,
    BitFit,
    FullFineTuning,
    LayerFreezing,
    LoRA,
    PrefixTuning,
    PromptEncoder,
    Reparameterized,
    SoftPrompt,
    TuningMethod,
)
from minilm.tuning.mixed import TaskBank
from minilm.tuning.readouts import ClassificationHead, VerbalizerReadout
from minilm.tuning.registry import DEFAULT_LR, METHODS, build_method
from minilm.tuning.trainer import TuneConfig, TuneTrainer, evaluate, predict
from minilm.tuning.tuned import TunedModel, load_tuned, weights_sha256

__all__ = [
    "DEFAULT_LR",
    "METHODS",
    "Adapters",
    "BitFit",
    "ClassificationHead",
    "FullFineTuning",
    "LayerFreezing",
    "LoRA",
    "PrefixTuning",
    "PromptEncoder",
    "Reparameterized",
    "SoftPrompt",
    "TaskBank",
    "TuneConfig",
    "TuneTrainer",
    "TunedModel",
    "TuningMethod",
    "VerbalizerReadout",
    "build_method",
    "evaluate",
    "load_tuned",
    "predict",
    "weights_sha256",
]
