"""A run's curves from its metrics.jsonl (pretraining, tuning or instruction tuning), drawn with matplotlib.

One PNG, one panel per kind of number, sharing the step axis:

    loss            train loss (every progress line), val / dev loss (every evaluation), in nats
    learning rate   eta(t) of every progress line (warm-up, then the cosine decay: minilm/training/optimizer.py)
    dev metrics     accuracy and macro-F1 (tune), exact match (instruct), in [0, 1]; only when the run has them

Every PNG minilm draws carries a mark (its `Software` text), so a command replaces only a picture it drew itself.

Docs: docs/cli.md (plot).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from minilm.files import atomic_write
from minilm.outputs import check_file_output

SOFTWARE = "minilm plot"
"""Written into every PNG `plot_run` draws: it replaces only a picture that carries this mark."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCORES = {"accuracy": ("accuracy", "o-"), "macro_f1": ("macro-F1", "s--"), "exact_match": ("exact match", "o-")}
"""Dev numbers in [0, 1] drawn in the third panel (tune records accuracy and macro_f1; instruct exact_match)."""

Series = tuple[str, str, list[tuple[int, float]]]
"""(label, line style, [(step, value), ...])."""


def drawn_by(path: Path, software: str) -> bool:
    """Whether the file is a PNG whose metadata names `software` (a picture minilm drew with that mark)."""
    head = path.read_bytes()[:65536]
    return head.startswith(PNG_SIGNATURE) and software.encode() in head


def drawn_by_plot(path: Path) -> bool:
    """Whether the file is a PNG that `plot_run` wrote (its metadata names SOFTWARE)."""
    return drawn_by(path, SOFTWARE)


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend; a one-line ValueError saying how to install it when missing."""
    try:
        import matplotlib  # an optional extra: imported only when a picture is asked for

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError('plotting needs matplotlib: pip install -e ".[plot]" (or pip install matplotlib)') from None
    return plt


def save_marked(fig: Any, target: Path, software: str) -> Path:
    """Render `fig` to a PNG whose `Software` text is `software`, write it atomically to `target`, close the figure."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": software})
    plt.close(fig)
    atomic_write(target, buffer.getvalue())
    return target


def panels(records: list[dict[str, Any]]) -> dict[str, list[Series]]:
    """Panel title -> its curves, from metrics.jsonl records; a panel with nothing to draw is left out."""

    def points(split: str, key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in records if r.get("split") == split and key in r]

    loss = [(f"{s} loss", style, points(s, "loss")) for s, style in (("train", "-"), ("val", "o-"), ("dev", "o-"))]
    lr = [("learning rate", "-", points("train", "lr"))]
    scores = [(f"dev {name}", style, points("dev", key)) for key, (name, style) in SCORES.items()]
    found = {"loss (nats)": loss, "learning rate": lr, "dev metrics": scores}
    return {title: [c for c in curves if c[2]] for title, curves in found.items() if any(c[2] for c in curves)}


def plot_run(run: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Draw the run's loss, learning rate and (when present) dev metrics over steps to one PNG (default RUN/loss.png);
    returns its path."""
    folder = Path(run)
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run} has no metrics.jsonl: train a model into it first")
    target = Path(output) if output else folder / "loss.png"
    check_file_output(target, drawn_by_plot, "plot")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    drawn = panels(records)
    if not drawn:
        raise ValueError(f"{path} holds no loss, learning rate or dev metrics to draw: train a model into it first")
    plt = pyplot()
    fig, axes = plt.subplots(len(drawn), 1, figsize=(7, 2.6 * len(drawn) + 0.6), sharex=True, squeeze=False)
    for ax, (title, curves) in zip(axes[:, 0], drawn.items()):
        for label, style, values in curves:
            ax.plot(*zip(*values), style, label=label, markersize=3)
        ax.set_ylabel(title)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        if title == "dev metrics":
            ax.set_ylim(-0.02, 1.02)
        if len(curves) > 1:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].set_title(str(folder.resolve().name))
    fig.tight_layout()
    return save_marked(fig, target, SOFTWARE)
