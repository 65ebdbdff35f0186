"""Layer 2, training: text -> a trained base. Corpus, objectives, the one loop, pretraining, evaluation, run folders.

Docs: docs/training.md, docs/objectives.md.
"""

from minilm.training.corpus import CorpusConfig, prepare_corpus
from minilm.training.loop import Loop, LoopConfig
from minilm.training.objectives import IGNORE_INDEX, causal_lm_loss, mask_tokens, masked_lm_loss
from minilm.training.pretrain import pretrain
from minilm.training.run import load_run
from minilm.training.trainer import TrainConfig, Trainer

__all__ = [
    "IGNORE_INDEX",
    "CorpusConfig",
    "Loop",
    "LoopConfig",
    "TrainConfig",
    "Trainer",
    "causal_lm_loss",
    "load_run",
    "mask_tokens",
    "masked_lm_loss",
    "prepare_corpus",
    "pretrain",
]
