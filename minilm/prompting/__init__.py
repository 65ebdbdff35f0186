"""Layer 3, prompting: a frozen LM read out by words. Templates, the verbalizer and its scores, few-shot, calibration.

Docs: docs/prompting.md.
"""

from minilm.prompting.calibration import calibrate
from minilm.prompting.few_shot import demonstration, few_shot_demonstrations, few_shot_prefixes
from minilm.prompting.template import DEFAULT_TEMPLATES, Rendered, Template
from minilm.prompting.verbalizer import LogitsAt, Verbalizer, base_logits, label_scores, verbalizer_scores, word_scores

__all__ = [
    "DEFAULT_TEMPLATES",
    "LogitsAt",
    "Rendered",
    "Template",
    "Verbalizer",
    "base_logits",
    "calibrate",
    "demonstration",
    "few_shot_demonstrations",
    "few_shot_prefixes",
    "label_scores",
    "verbalizer_scores",
    "word_scores",
]
