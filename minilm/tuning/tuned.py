"""A tuned model: a base Transformer, one tuning method, and a task readout (head or verbalizer).

Saving writes only what tuning changed:

    tuned.safetensors     the tuned tensors for inference (a prefix or prompt encoder folded: just its vectors)
    reparam.safetensors   the reparameterisation network (prefix MLP, prompt encoder), to resume training
    tuned.json            method, hyper-parameters, readout, labels, and the SHA-256 of the base's weights

Loading rebuilds the method on the base it was tuned from (checked by the hash) and reproduces its
outputs exactly. A folder that `tune` writes also holds its settings (tune_args.json), the latest state (last/,
train_state.pt) and metrics.jsonl; `load_tuned` finds the base run from tuned.json.

Docs: docs/tuning.md (saving and loading), docs/cli.md (the tuned folder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilm.files import atomic_write, load_tensors, read_json, save_tensors
from minilm.model import Transformer, complete, generate
from minilm.outputs import OutputKind
from minilm.tokenizer import Tokenizer
from minilm.training.loop import METRICS_FILE, STATE_FILE
from minilm.training.run import load_run
from minilm.tuning.methods.base import TuningMethod, count, trainable_parameters
from minilm.tuning.readouts import Readout, readout_from_metadata
from minilm.tuning.registry import build_method

FORMAT = 1
TUNED_FILE, REPARAM_FILE, META_FILE, ARGS_FILE, LAST_DIR = (
    "tuned.safetensors",
    "reparam.safetensors",
    "tuned.json",
    "tune_args.json",
    "last",
)
TUNE = OutputKind(
    "tune",
    "a tuned model",
    (
        META_FILE,
        TUNED_FILE,
        REPARAM_FILE,
        STATE_FILE,
        METRICS_FILE,
        ARGS_FILE,
        "eval-dev.json",
        "eval-test.json",
        f"{LAST_DIR}/",
        "loss.png",
    ),
    legacy=(ARGS_FILE,),
)


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over every (name, dtype, shape, bytes) of the model's state, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class TunedModel(nn.Module):
    """base + method + readout. `method.setup(base)` decides what trains; the readout's parameters always train."""

    def __init__(
        self,
        base: Transformer,
        method: TuningMethod,
        readout: Readout,
        labels: list[str] | None = None,
        base_sha256: str | None = None,
    ) -> None:
        super().__init__()
        self.base_sha256 = base_sha256 or weights_sha256(base)
        self.base, self.method, self.readout = base, method, readout
        self.labels = labels or [str(i) for i in range(readout.n_classes)]
        if len(self.labels) != readout.n_classes:
            raise ValueError(f"{len(self.labels)} labels but the readout scores {readout.n_classes} classes")
        self.base_parameters = base.num_parameters()
        """Parameters of the base architecture, counted before the method adds any (LoRA's A, B; adapters)."""
        method.setup(base)
        self.to(base.tok_emb.weight.device)

    # ---- the forward path ---------------------------------------------------------------------------------
    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """LN_f(h_L) over [soft prompt; tokens] (B, n + T, d) and the mask of those positions (their positions start
        at the method's position_offset)."""
        embeds, mask = self.method.embed(self.base, input_ids, attention_mask.bool())
        layer_prefix = self.method.layer_prefix(input_ids.size(0))
        prefix, prefix_mask = layer_prefix if layer_prefix is not None else (None, None)
        h = self.base.hidden_states(
            inputs_embeds=embeds,
            attention_mask=mask,
            prefix=prefix,
            prefix_mask=prefix_mask,
            position_offset=self.method.position_offset,
        )
        return h, mask

    def lm_logits(self, h: Tensor) -> Tensor:
        """h E^T: the base's tied output projection."""
        return F.linear(h, self.base.tok_emb.weight)

    def token_logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """logits = LN_f(h_L) E^T at the text's own positions (B, T, V): the next-token scores after each token, the
        soft prompt's positions (if any) left out. What instruction tuning trains."""
        h, _ = self.hidden_states(input_ids, attention_mask)
        return self.lm_logits(h[:, self.method.prompt_length :])

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Class scores (B, C) for text ids (B, T) with right padding."""
        return self.readout.scores(self, input_ids, attention_mask)

    def generation_inputs(self) -> dict[str, Any]:
        """What `generate` takes from the method: its soft prompt, per-layer prefixes (first step, then the cache) and
        where the positions start."""
        layer_prefix = self.method.layer_prefix(1)
        prefix, prefix_mask = layer_prefix if layer_prefix is not None else (None, None)
        P = self.method.soft_prompt()
        return {
            "prompt_embeds": None if P is None else P.unsqueeze(0),
            "prefix": prefix,
            "prefix_mask": prefix_mask,
            "position_offset": self.method.position_offset,
        }

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int, **kwargs: Any) -> Tensor:
        """minilm.generate with this method's soft prompt and prefixes."""
        return generate(self.base, input_ids, max_new_tokens, **self.generation_inputs(), **kwargs)

    @torch.no_grad()
    def complete(self, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, **kwargs: Any) -> str:
        """minilm.complete (text in, text out, past the context) with this method's soft prompt and prefixes."""
        return complete(self.base, tokenizer, prompt, max_new_tokens, **self.generation_inputs(), **kwargs)

    def max_text_tokens(self) -> int:
        """How many text tokens fit: max_len minus the soft prompt, the position offset and the readout's own
        tokens."""
        taken = self.method.prompt_length + self.method.position_offset
        return self.base.config.max_len - taken - self.readout.extra_tokens(self.base.config.causal)

    def encode(self, tokenizer: Tokenizer, texts: list[str]) -> dict[str, Tensor]:
        """Text ids with right padding, each text cut to `max_text_tokens` (the readout's tokens are never cut)."""
        limit = self.max_text_tokens()
        if limit < 1:
            raise ValueError(
                f"no room for text: max_len={self.base.config.max_len}, prompt length {self.method.prompt_length}, "
                f"position offset {self.method.position_offset}; use a shorter prompt or prefix text"
            )
        prefix = getattr(
            self.readout, "text_prefix", ""
        )  # a template's space before {text} belongs to the text's first token
        batch = tokenizer.encode_batch([prefix + t.strip() for t in texts] if prefix else texts, max_length=limit)
        device = self.base.tok_emb.weight.device
        return {k: v.to(device) for k, v in batch.items()}

    # ---- what is trained and saved -----------------------------------------------------------------------
    def trainable(self) -> dict[str, nn.Parameter]:
        return trainable_parameters(self)

    def counts(self) -> dict[str, int]:
        """base: the base's parameters; trainable: what trains now; tuned: numbers saved for inference; readout: the
        head's."""
        return {
            "base": self.base_parameters,
            "trainable": count(self.trainable()),
            "tuned": count(self.tuned_state()),
            "readout": count(list(self.readout.parameters())),
        }

    def tuned_state(self) -> dict[str, Tensor]:
        """Inference tensors by name: trainable tensors, with a reparameterised method's output in place of its
        network."""
        state = {name: p.detach().clone() for name, p in self.trainable().items() if not name.startswith("method.")}
        state.update({f"method.{name}": t for name, t in self.method.folded_state().items()})
        return state

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": self.method.name,
            "hyperparameters": self.method.hyperparameters(),
            "readout": self.readout.metadata(),
            "labels": self.labels,
            "base_weights_sha256": self.base_sha256,
            "base_config": self.base.config.to_dict(),
            "counts": self.counts(),
        }

    def save(self, folder: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        """Write tuned.safetensors (+ reparam.safetensors) and tuned.json into `folder`, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_tensors(self.tuned_state(), folder / TUNED_FILE)
        reparam = self.method.reparameterization_state()
        if reparam:
            save_tensors(reparam, folder / REPARAM_FILE)
        elif (folder / REPARAM_FILE).exists():
            (folder / REPARAM_FILE).unlink()
        atomic_write(folder / META_FILE, json.dumps({**self.metadata(), **(extra or {})}, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike[str], base: Transformer, for_training: bool = False) -> TunedModel:
        """Apply the tuned tensors in `folder` to `base` (which must be the base they were tuned from).

        for_training: also restore the reparameterisation network, so training continues where it stopped.
        """
        folder = Path(folder)
        meta = read_metadata(folder)
        actual = weights_sha256(base)
        if actual != meta["base_weights_sha256"]:
            raise ValueError(
                f"{folder} was tuned from a different base model "
                f"(weights SHA-256 {meta['base_weights_sha256'][:12]}..., this base has {actual[:12]}...): "
                "load it onto the base run it was tuned from"
            )
        hp = dict(meta["hyperparameters"])
        # the saved tensors replace the start anyway: rebuilding it needs no tokenizer (text:), nor the source folder
        # of a pre-trained prompt (pretrained:DIR)
        given_start = str(hp.get("init", "")).startswith(("text:", "pretrained:"))
        if given_start:
            hp["init"] = "random"
        method = build_method(meta["method"], base, **hp)
        if given_start:
            method.settings = dataclasses.replace(method.settings, init=meta["hyperparameters"]["init"])
        readout = readout_from_metadata(meta["readout"], base.config.d_model)
        model = cls(base, method, readout, meta["labels"], base_sha256=actual)
        method.fold()
        model.to(base.tok_emb.weight.device)
        tensors = load_tensors(folder / TUNED_FILE, "tuned tensors")
        expected = {name: p for name, p in model.trainable().items()}
        missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
        if missing or unexpected:
            raise ValueError(
                f"{folder / TUNED_FILE} does not match {META_FILE} (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}): the folder is damaged or mixes two runs"
            )
        with torch.no_grad():
            for name, tensor in tensors.items():
                if tensor.shape != expected[name].shape:
                    raise ValueError(
                        f"{folder / TUNED_FILE}: {name} is {tuple(tensor.shape)} "
                        f"but the method needs {tuple(expected[name].shape)}"
                    )
                expected[name].copy_(tensor)
        if for_training and (folder / REPARAM_FILE).exists():
            method.load_reparameterization_state(load_tensors(folder / REPARAM_FILE, "reparameterisation tensors"))
            method.to(base.tok_emb.weight.device)
        return model


def read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} holds no tuned model ({META_FILE} is missing): tune one with `train.py tune`"
        )
    meta = read_json(path, "tuned model description")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} has format {meta.get('format') if isinstance(meta, dict) else None!r}, "
            f"this minilm reads format {FORMAT}"
        )
    return meta


def is_tuned(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` holds a tuned model (tuned.json) rather than a pretrained run."""
    return (Path(folder) / META_FILE).is_file()


@dataclass
class TunedRun:
    """A tuned model loaded for use: the model on its base, the base's tokenizer, and where the base came from."""

    model: TunedModel
    tokenizer: Tokenizer
    base_run: str


def load_tuned(folder: str | os.PathLike[str], base_run: str | None = None, device: str = "auto") -> TunedRun:
    """A TunedModel from its folder, on the base run recorded in tuned.json (or `base_run`), in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"tuned model folder {folder} does not exist: tune one with "
            f"`python train.py tune --base RUN_DIR --method prompt --task TASK_DIR --out {folder}`"
        )
    meta = read_metadata(folder)
    run = base_run or meta.get("base_run")
    if not run:
        raise ValueError(f"{folder / META_FILE} does not say which base run it was tuned from: pass --base RUN_DIR")
    if not base_run and not Path(run).is_dir():
        raise FileNotFoundError(
            f"the base run {run} recorded in {folder / META_FILE} does not exist (moved?): pass --base RUN_DIR"
        )
    base, tokenizer, _ = load_run(run, meta.get("base_weights", "best"), device)
    return TunedRun(TunedModel.load(folder, base).eval(), tokenizer, str(run))
