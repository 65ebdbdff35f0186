"""The tuning methods by name: each one's class, settings dataclass, default learning rate and title.

    build_method(name, base, tokenizer, seed, **settings)  ->  the method for `base`

The command line's method flags, their defaults and their help are generated from the settings dataclasses listed
here (minilm.cli.tune), `compare` takes its rows from here, and a tuned.json's hyper-parameters are the settings'
fields (plus the seed), so a method's settings live in exactly one place.

Docs: docs/tuning.md (the measured defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from minilm.model import Transformer
from minilm.settings import flag_of
from minilm.tokenizer import Tokenizer
from minilm.tuning import methods
from minilm.tuning.methods import TuningMethod
from minilm.tuning.methods.prefix import task_init
from minilm.tuning.methods.prompt import label_init


@dataclass(frozen=True)
class MethodSpec:
    """One tuning method: how the registry, the command line and `compare` know it."""

    name: str
    method: type[TuningMethod]
    lr: float
    """Peak learning rate when none is given; how these were chosen is in docs/tuning.md."""
    title: str
    """Its row in `compare`, formatted with the default settings, e.g. "LoRA (r={rank})"."""
    min_lr: float | None = 0.0
    """Where the cosine decay ends when none is given; None = no decay, the rate stays at lr."""

    @property
    def settings(self) -> type:
        """The method's settings dataclass."""
        return self.method.Settings

    def describe(self, settings: Any = None) -> str:
        return self.title.format(**dataclasses.asdict(settings or self.settings()))


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("prompt", methods.SoftPrompt, 3e-2, "prompt tuning", min_lr=None),
        MethodSpec("prompt-encoder", methods.PromptEncoder, 3e-4, "prompt encoder"),
        MethodSpec("prefix", methods.PrefixTuning, 3e-3, "prefix tuning"),
        MethodSpec("freeze", methods.LayerFreezing, 1e-4, "{recipe}-k freezing (k={k})"),
        MethodSpec("bitfit", methods.BitFit, 1e-3, "BitFit"),
        MethodSpec("lora", methods.LoRA, 3e-3, "LoRA (r={rank})"),
        MethodSpec("adapter", methods.Adapters, 1e-3, "adapters (m={size})"),
        MethodSpec("full", methods.FullFineTuning, 1e-4, "full fine-tuning"),
    )
}
DEFAULT_LR = {name: spec.lr for name, spec in METHODS.items()}


def setting_key(f: dataclasses.Field) -> str:
    """A method setting's key on the command line and in tune_args.json: its flag's name (--lora-rank: lora_rank), or
    the field's name for a switch that turns a default-on setting off (--no-reparam: reparameterize)."""
    if f.default is True:
        return f.name
    return (f.metadata.get("flag") or "--" + f.name).removeprefix("--").replace("-", "_")


def setting_keys(spec: MethodSpec) -> list[str]:
    """The keys that set `spec`'s settings: one per field, or one per recipe for a settings class with FLAGS."""
    flags = getattr(spec.settings, "FLAGS", None)
    if flags:
        return [flag.removeprefix("--").replace("-", "_") for flag, _ in flags.values()]
    return [setting_key(f) for f in dataclasses.fields(spec.settings)]


def setting_flags(spec: MethodSpec) -> list[str]:
    """The command-line flags of `setting_keys(spec)`, in the same order."""
    flags = getattr(spec.settings, "FLAGS", None)
    if flags:
        return [flag for flag, _ in flags.values()]
    return [flag_of(f) for f in dataclasses.fields(spec.settings)]


def settings_from(spec: MethodSpec, values: dict[str, Any]) -> Any:
    """The method's settings from flat keys (the command line's, or a saved tune_args.json); absent keys keep their
    defaults. A settings class with FLAGS (layer freezing) is set by one flag per recipe, whose value is k."""
    flags = getattr(spec.settings, "FLAGS", None)
    if flags:
        given = [
            (recipe, values[key])
            for recipe, (flag, _) in flags.items()
            if values.get(key := flag.removeprefix("--").replace("-", "_")) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(flags[r][0] for r, _ in given)} are two recipes: give one of them")
        return spec.settings(recipe=given[0][0], k=given[0][1]) if given else spec.settings()
    return spec.settings(
        **{
            f.name: values[setting_key(f)]
            for f in dataclasses.fields(spec.settings)
            if values.get(setting_key(f)) is not None
        }
    )


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown tuning method {name!r}: use one of {', '.join(METHODS)}")
    return METHODS[name]


def with_task_words(settings: Any, label_words: list[str] | None, prefix_text: str | None = None) -> Any:
    """The settings with the inits that stand for the task's own words resolved: a soft prompt's "labels" by the
    label words (`label_init`), a prefix's "task" by the task's prefix_text (`task_init`)."""
    init = getattr(settings, "init", None)
    if init == "labels":
        return dataclasses.replace(settings, init=label_init(init, label_words))
    if init == "task":
        return dataclasses.replace(settings, init=task_init(init, prefix_text))
    return settings


def build_method(
    name: str,
    base: Transformer,
    tokenizer: Tokenizer | None = None,
    seed: int = 0,
    label_words: list[str] | None = None,
    prefix_text: str | None = None,
    **settings: Any,
) -> TuningMethod:
    """The method `name` for `base`: settings not given take their defaults (as stored in tuned.json, with its seed);
    `label_words` resolve a soft prompt's init "labels", `prefix_text` a prefix's init "task"."""
    spec = method_spec(name)
    known = {f.name for f in dataclasses.fields(spec.settings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)} is not a setting of method {name!r} "
            f"(its settings: {', '.join(sorted(known)) or 'none'})"
        )
    resolved = with_task_words(spec.settings(**settings), label_words, prefix_text)
    return spec.method.for_base(base, resolved, seed=seed, tokenizer=tokenizer)
