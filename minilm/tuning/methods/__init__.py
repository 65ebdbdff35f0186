"""The tuning methods, one per file, each with its settings dataclass (the registry lists them: minilm.tuning.registry).

Docs: docs/tuning.md.
"""

from minilm.tuning.methods.adapter import Adapter, Adapters, AdapterSettings
from minilm.tuning.methods.base import NoSettings, Reparameterized, TuningMethod
from minilm.tuning.methods.bitfit import BitFit
from minilm.tuning.methods.freeze import FreezeSettings, FullFineTuning, LayerFreezing
from minilm.tuning.methods.lora import LoRA, LoRASettings
from minilm.tuning.methods.prefix import PrefixSettings, PrefixTuning
from minilm.tuning.methods.prompt import PromptSettings, SoftPrompt
from minilm.tuning.methods.prompt_encoder import PromptEncoder, PromptEncoderSettings

__all__ = [
    "Adapter",
    "AdapterSettings",
    "Adapters",
    "BitFit",
    "FreezeSettings",
    "FullFineTuning",
    "LayerFreezing",
    "LoRA",
    "LoRASettings",
    "NoSettings",
    "PrefixSettings",
    "PrefixTuning",
    "PromptEncoder",
    "PromptEncoderSettings",
    "PromptSettings",
    "Reparameterized",
    "SoftPrompt",
    "TuningMethod",
]
