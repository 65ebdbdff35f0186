"""Prompt pre-training (PPT, Gu et al. 2022): a soft prompt or prefix starts where one tuned before ended.

    P_0 = P*_source                      the soft prompt (n, d) or folded prefix (L, 2, n, d) saved in DIR
    min_P  L(y, f_theta([P; E[x]]))      then tuned as usual from P_0, on the new task

`--init pretrained:DIR` (`--prefix-init pretrained:DIR` for prefix tuning) names a folder that `train.py tune` wrote
with the same method on the same base: tuned.json's `base_weights_sha256` must be the base's, since a prompt means
something only to the base it was tuned on. The start keeps its source's length n (and a prefix its position offset),
so --prompt-len / --prefix-len may be left out; given and different, it is an error. A prefix's MLP starts at zero on
top of P_0, as for a text start (the source's MLP is not carried over). The tensors are read as safetensors (no code
runs). tuned.json stores the init as pretrained:DIR, but loading a tuned model reads only its own tensors: DIR may be
gone by then.

Docs: docs/tuning.md (pre-trained prompts).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import Tensor

from minilm.files import load_tensors
from minilm.model import Transformer
from minilm.settings import flag_of
from minilm.tuning.methods.base import PRETRAINED, pretrained_folder
from minilm.tuning.tuned import META_FILE, TUNED_FILE, read_metadata, weights_sha256

SOURCE_TENSOR = {"prompt": "method.P", "prompt-encoder": "method.P", "prefix": "method.prefix"}
"""The saved tensor a pre-trained start copies, by method: the soft prompt, or the folded prefix."""
LENGTH_SETTING = {"prompt": "prompt_len", "prompt-encoder": "prompt_len", "prefix": "prefix_len"}
"""The setting that holds the start's length n, by method."""


def init_flag(settings: Any) -> str:
    """The flag of a method's `init` setting (--init, --prefix-init)."""
    return next(flag_of(f) for f in dataclasses.fields(settings) if f.name == "init")


def pretrained_start(
    method: str, settings: Any, base: Transformer, *, given_length: int | None = None
) -> tuple[Any, Tensor | None]:
    """P_0 = P*_source: the tensor a `pretrained:DIR` init starts from, and the settings with its length n (and, for a
    prefix, its position offset) and DIR made absolute; (settings, None) for any other init.

    given_length: the length named on the command line (None: take the source's). Every mistake is one line: no
    tuned model in DIR, another method, another base, another length.
    """
    folder_text = pretrained_folder(getattr(settings, "init", None))
    if folder_text is None:
        return settings, None
    flag, folder = init_flag(settings), Path(folder_text)
    where = f"{flag} {PRETRAINED}{folder}"
    if method not in SOURCE_TENSOR:
        raise ValueError(f"{where}: --method {method} has no soft prompt or prefix to start from a tuned folder")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{where}: no such folder; tune the source first, e.g. `train.py tune --method {method} --out {folder}`"
        )
    if not (folder / META_FILE).is_file():
        raise ValueError(
            f"{where}: the folder holds no tuned model ({META_FILE} is missing), so no soft prompt to start from; "
            f"give a folder written by `train.py tune --method {method}`"
        )
    meta = read_metadata(folder)
    if meta.get("method") != method:
        raise ValueError(
            f"{where}: the folder holds a {meta.get('method')!r} tuned model, not a {method!r} one; start from a "
            f"folder tuned with --method {method}"
        )
    actual = weights_sha256(base)
    if meta.get("base_weights_sha256") != actual:
        raise ValueError(
            f"{where}: it was tuned on another base (weights SHA-256 {str(meta.get('base_weights_sha256'))[:12]}..., "
            f"this base has {actual[:12]}...), and a prompt means something only to its own base: tune the source on "
            "this --base first"
        )
    tensors = load_tensors(folder / TUNED_FILE, "tuned tensors")
    name = SOURCE_TENSOR[method]
    if name not in tensors:
        raise ValueError(f"{where}: {folder / TUNED_FILE} holds no {name}; the folder is damaged or mixes two runs")
    P = tensors[name]
    c = base.config
    n = P.size(0) if method != "prefix" else P.size(2)
    expected = (n, c.d_model) if method != "prefix" else (c.n_layers, 2, n, c.d_model)
    if tuple(P.shape) != expected:
        raise ValueError(f"{where}: {name} is {tuple(P.shape)}, but this base's {method} is {expected}")
    key = LENGTH_SETTING[method]
    if given_length is not None and given_length != n:
        length_flag = flag_of(next(f for f in dataclasses.fields(settings) if f.name == key))
        raise ValueError(
            f"{length_flag} {given_length}, but the {'prefix' if method == 'prefix' else 'soft prompt'} in {folder} "
            f"is {n} long (a pre-trained start keeps its source's length): leave {length_flag} out or give "
            f"{length_flag} {n}"
        )
    resolved = {key: n, "init": PRETRAINED + str(folder.resolve())}
    if method == "prefix":  # the input's positions start where they started for the source (behind its text)
        source = type(settings)(
            **{
                f.name: meta["hyperparameters"][f.name]
                for f in dataclasses.fields(settings)
                if f.name in meta["hyperparameters"]
            }
        )
        resolved["offset"] = source.position_offset
    return dataclasses.replace(settings, **resolved), P
