"""Attention you can look at: one heat map per head, over the tokens of a text, for a pretrained or tuned model.

    rows      the queries: the text's tokens (after P1..Pn, the soft prompt, for prompt tuning)
    columns   the keys: [P1..Pn; tokens], P1..Pn the soft prompt or the layer's prefix keys (prefix tuning)
    colour    probs^l_{h,i,j} = softmax(Q K^T / sqrt(d_k) + M)_ij of head h in layer l, from the model itself
              (minilm/model/attention_probs.py::layer_probs), on one 0..1 square-root scale (so that the small
              weights of a long row stay visible); a key M hides is left blank: a causal model's upper triangle

A tuned model's positions P1..Pn are marked with a shaded band and orange labels, and each panel's title says how
much of the tokens' attention goes to them. Tokens are their pieces of the text: a space is shown as ␣, a newline
as ↵, a tab as ⇥, and a token holding only some of a character's UTF-8 bytes as the character and its part, 日(1/3).

Docs: docs/attention.md (the attention map).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from minilm.model.attention_probs import layer_probs
from minilm.model.masks import attention_mask
from minilm.outputs import check_file_output
from minilm.tokenizer import Tokenizer
from minilm.training.plot import drawn_by, pyplot, save_marked
from minilm.training.run import load_run
from minilm.tuning.tuned import is_tuned, load_tuned

SOFTWARE = "minilm attention"
"""Written into every PNG `draw_attention` draws: it replaces only a picture that carries this mark."""
SHOWN = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
PROMPT_COLOUR = "tab:orange"
FALLBACK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "Droid Sans Fallback", "Noto Sans")
"""Fonts matplotlib falls back to, when installed, for characters DejaVu Sans lacks (CJK); else they show as U+XXXX."""


def drawn_by_attention(path: Path) -> bool:
    """Whether the file is a PNG that `draw_attention` wrote (its metadata names SOFTWARE)."""
    return drawn_by(path, SOFTWARE)


def visible(piece: str) -> str:
    """A token's text with its white space and control characters made visible (␣ ↵ ⇥, else \\xNN)."""
    return "".join(SHOWN.get(c, f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c) for c in piece)


def token_pieces(tokenizer: Tokenizer, text: str) -> tuple[list[int], list[str]]:
    """The ids of `text` (as `tokenizer.encode` gives them) and each token's piece of the text, made visible.

    A byte-level token may hold only some of a character's UTF-8 bytes (alone it decodes to U+FFFD); it is shown as
    the character with its part: the three tokens of 日 are 日(1/3), 日(2/3), 日(3/3).
    """
    encoding = tokenizer.backend.encode(text, add_special_tokens=False)
    spans, labels = encoding.offsets, []
    for i, (token_id, (start, end)) in enumerate(zip(encoding.ids, spans)):
        piece = tokenizer.decode([token_id], skip_special_tokens=False)
        if "\ufffd" in piece and "\ufffd" not in text[start:end]:  # some bytes of the characters text[start:end]
            same = [j for j, span in enumerate(spans) if span == (start, end)]
            piece = f"{text[start:end]}({same.index(i) + 1}/{len(same)})"
        labels.append(visible(piece))
    return list(encoding.ids), labels


@dataclass(frozen=True)
class AttentionMap:
    """Every layer's and head's attention over one text, with the labels of its rows (queries) and columns (keys)."""

    probs: Tensor
    """(L, h, T_q, T_k) on the CPU: probs[l, h, i, j], how much query i of head h in layer l+1 attends to key j."""
    queries: list[str]
    keys: list[str]
    seen: Tensor
    """(T_q, T_k) bool: which keys each query may attend to (the model's mask M is 0 there)."""
    n_prompt: int
    """Leading keys that are the tuning method's positions P1..Pn (0 for a pretrained run)."""
    prompt_rows: int
    """Leading query rows that are soft-prompt positions (prompt tuning; prefix keys are never queries)."""
    what: str
    """What P1..Pn are, for the picture: "soft prompt", "prefix" or "" (none)."""
    causal: bool
    name: str

    def prompt_share(self, layer: int) -> Tensor:
        """(h,): the mean over the text's tokens (as queries) of the attention they give to P1..Pn, in layer+1."""
        return self.probs[layer, :, self.prompt_rows :, : self.n_prompt].sum(-1).mean(-1)


@torch.no_grad()
def attention_map(
    folder: str | os.PathLike[str], text: str, weights: str = "best", device: str = "auto"
) -> AttentionMap:
    """The attention of every layer and head of the run or tuned folder `folder` over `text`.

    A tuned folder's model is its base with the method applied, fed as `TunedModel.hidden_states` feeds it: the soft
    prompt in front of the token embeddings (method.embed), the prefix keys and values in every layer
    (method.layer_prefix). `weights` picks a pretrained run's weights (a tuned folder names its base's).
    """
    if not text:
        raise ValueError('--text is empty: give the text whose attention to draw, e.g. --text "To be, or not to be"')
    if is_tuned(folder):
        tuned = load_tuned(folder, None, device)
        model, tokenizer, method = tuned.model.base, tuned.tokenizer, tuned.model.method
    else:
        model, tokenizer, _ = load_run(folder, weights, device)
        method = None
    ids, pieces = token_pieces(tokenizer, text)
    n_soft, context = (method.prompt_length if method else 0), model.config.max_len
    if n_soft + len(ids) > context:
        after = f" after the {n_soft} soft-prompt positions" if n_soft else ""
        raise ValueError(
            f"the text is {len(ids)} tokens{after}, longer than the model's context of {context}: shorten it to at "
            f"most {context - n_soft} tokens"
        )
    input_ids = torch.tensor([ids], device=model.tok_emb.weight.device)
    if method is None:
        probs, n_prefix = layer_probs(model, input_ids), 0
    else:
        embeds, mask = method.embed(model, input_ids, torch.ones_like(input_ids, dtype=torch.bool))
        layer_prefix = method.layer_prefix(1)
        prefix, prefix_mask = layer_prefix if layer_prefix is not None else (None, None)
        probs = layer_probs(
            model,
            inputs_embeds=embeds,
            attention_mask=mask,
            prefix=prefix,
            prefix_mask=prefix_mask,
            position_offset=method.position_offset,  # a prefix started from a text puts the input behind it
        )
        n_prefix = prefix[0][0].size(2) if prefix is not None else 0
    stacked = torch.stack([p[0] for p in probs]).float().cpu()
    T_q, T_k = stacked.shape[-2:]
    allowed = attention_mask(T_q, T_k, model.config.causal, None, torch.device("cpu"))
    marks = [f"P{i + 1}" for i in range(n_soft + n_prefix)]
    return AttentionMap(
        probs=stacked,
        queries=(marks if n_soft else []) + pieces,
        keys=marks + pieces,
        seen=torch.ones(T_q, T_k, dtype=torch.bool) if allowed is None else allowed[0, 0],
        n_prompt=len(marks),
        prompt_rows=n_soft,
        what="soft prompt" if n_soft else ("prefix" if n_prefix else ""),
        causal=model.config.causal,
        name=Path(folder).resolve().name,
    )


def choose_layers(layer: str, n_layers: int) -> list[int]:
    """The 0-based layers `--layer` names: a number 1..L, "last" (the default) or "all"."""
    if layer == "last":
        return [n_layers - 1]
    if layer == "all":
        return list(range(n_layers))
    if layer.isdigit() and 1 <= int(layer) <= n_layers:
        return [int(layer) - 1]
    raise ValueError(f"--layer {layer}: this model has {n_layers} layers; give a number 1..{n_layers}, last or all")


def default_output(layers: list[int], n_layers: int) -> Path:
    """attention-L<layer>.png (1-based), or attention-all.png for every layer, in the current folder."""
    return Path("attention-all.png" if len(layers) == n_layers > 1 else f"attention-L{layers[0] + 1}.png")


def readable(labels: list[str]) -> tuple[list[str], list[str]]:
    """(font families for the labels, the labels with every character that none of them can draw as U+XXXX)."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    families = [name for name in ("DejaVu Sans", *FALLBACK_FONTS) if name in installed]
    fonts = [FT2Font(installed[name]) for name in families]

    def drawable(c: str) -> bool:
        return any(font.get_char_index(ord(c)) for font in fonts)

    return families or ["sans-serif"], ["".join(c if drawable(c) else f"U+{ord(c):04X}" for c in s) for s in labels]


def draw(amap: AttentionMap, layers: list[int], target: Path) -> Path:
    """One panel per head of each layer in `layers` (a row per layer for several), a shared colour bar; a PNG."""
    plt = pyplot()
    import matplotlib

    L, h, T_q, T_k = amap.probs.shape
    families, labels = readable(amap.queries + amap.keys)
    queries, keys = labels[:T_q], labels[T_q:]
    grid = len(layers) > 1
    cols = h if grid else min(h, 2 if T_k > 24 else 4)
    rows = len(layers) * math.ceil(h / cols)
    per_token = 0.11 if grid else 0.15  # inches per row/column: room for a 7-point label
    width, height = max(2.6, per_token * T_k + 1.0), max(2.2, per_token * T_q + 0.9)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    norm = matplotlib.colors.PowerNorm(0.5, vmin=0.0, vmax=1.0)  # colour ~ sqrt(p): 0.01 and 0.05 look different
    with matplotlib.rc_context({"font.family": families}):
        fig, axes = plt.subplots(
            rows, cols, figsize=(cols * width + 1.2, rows * height + 1.0), squeeze=False, layout="constrained"
        )
        shown = None
        for n, (layer, head) in enumerate((layer, head) for layer in layers for head in range(h)):
            ax = axes.flat[n]
            values = amap.probs[layer, head].masked_fill(~amap.seen, float("nan")).numpy()
            shown = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
            title = f"layer {layer + 1}, head {head + 1}"
            if amap.n_prompt:
                title += f": {amap.prompt_share(layer)[head].item():.0%} to the {amap.what}"
            ax.set_title(title, fontsize=9)
            label_x = not grid or layer == layers[-1]
            label_y = not grid or head == 0
            ax.set_xticks(range(T_k), keys if label_x else [""] * T_k, rotation=90, fontsize=7)
            ax.set_yticks(range(T_q), queries if label_y else [""] * T_q, fontsize=7)
            ax.tick_params(length=2, pad=1)
            if label_x:
                ax.set_xlabel("key (attended to)", fontsize=8)
            if label_y:
                ax.set_ylabel("query (attending)", fontsize=8)
            mark_prompt(ax, amap, label_x, label_y)
        for ax in axes.flat[len(layers) * h :]:
            ax.set_visible(False)
        bar = fig.colorbar(shown, ax=axes, shrink=0.5 if rows > 1 else 0.8, aspect=30, pad=0.01)
        bar.set_ticks([0.0, 0.02, 0.1, 0.25, 0.5, 1.0])
        bar.set_label("attention probability (square-root scale)", fontsize=8)
        fig.suptitle(caption(amap, layers, L), fontsize=10)
    return save_marked(fig, target, SOFTWARE)


def mark_prompt(ax: Any, amap: AttentionMap, label_x: bool, label_y: bool) -> None:
    """Mark P1..Pn: a shaded band over their key columns, a line where the text begins, orange labels."""
    from matplotlib.patches import Rectangle

    n, rows = amap.n_prompt, amap.prompt_rows
    if not n:
        return
    T_q = len(amap.queries)
    band = max(0.4, 0.03 * T_q)  # rows of room above the first query, inside the frame
    ax.set_ylim(T_q - 0.5, -0.5 - band)
    ax.add_patch(Rectangle((-0.5, -0.5 - band), n, band, color=PROMPT_COLOUR, alpha=0.7, linewidth=0))
    ax.axvline(n - 0.5, color=PROMPT_COLOUR, linewidth=1.2)
    if rows:
        ax.axhline(rows - 0.5, color=PROMPT_COLOUR, linewidth=1.2)
    for tick in ax.get_xticklabels()[:n] if label_x else []:
        tick.set_color(PROMPT_COLOUR)
    for tick in ax.get_yticklabels()[:rows] if label_y else []:
        tick.set_color(PROMPT_COLOUR)


def caption(amap: AttentionMap, layers: list[int], n_layers: int) -> str:
    """The figure's title: which model and layers, and how to read the picture."""
    which = "every layer" if len(layers) > 1 else f"layer {layers[0] + 1} of {n_layers}"
    lines = [f"{amap.name}: attention of {which} over {len(amap.keys) - amap.n_prompt} tokens"]
    lines.append(
        "row i: how query i splits its attention over the keys (sums to 1)"
        + ("; blank: keys a causal model hides (later tokens)" if amap.causal else "")
    )
    if amap.n_prompt:
        n = amap.n_prompt
        where = (
            f"{n} trained vectors in front of the text (they are queries too)"
            if amap.prompt_rows
            else f"{n} trained keys and values in every layer (not queries)"
        )
        lines.append(f"P1..P{n} (orange): the {amap.what}, {where}; panel titles: the text's share of attention to it")
    return "\n".join(lines)


def draw_attention(
    folder: str | os.PathLike[str],
    text: str,
    layer: str = "last",
    output: str | os.PathLike[str] | None = None,
    weights: str = "best",
    device: str = "auto",
) -> Path:
    """Draw the attention of `layer` (1..L, last or all) over `text` to a PNG (default attention-L<layer>.png in the
    current folder); returns its path. An existing file is replaced only if this function drew it."""
    amap = attention_map(folder, text, weights, device)
    n_layers = amap.probs.size(0)
    layers = choose_layers(layer, n_layers)
    target = Path(output) if output else default_output(layers, n_layers)
    check_file_output(target, drawn_by_attention, "heat map")
    return draw(amap, layers, target)
