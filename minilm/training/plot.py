"""Loss curves of a run (pretraining, tuning or instruction tuning) from its metrics.jsonl, drawn with matplotlib.

Docs: docs/cli.md (plot).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from minilm.files import atomic_write
from minilm.outputs import check_file_output

SOFTWARE = "minilm plot"
"""Written into every PNG `plot_run` draws: it replaces only a picture that carries this mark."""


def drawn_by_plot(path: Path) -> bool:
    """Whether the file is a PNG that `plot_run` wrote (its metadata names SOFTWARE)."""
    head = path.read_bytes()[:65536]
    return head.startswith(b"\x89PNG\r\n\x1a\n") and SOFTWARE.encode() in head


def plot_run(run: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Draw the train and evaluation losses of `run` to a PNG (default RUN/loss.png); returns its path."""
    folder = Path(run)
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run} has no metrics.jsonl: train a model into it first")
    target = Path(output) if output else folder / "loss.png"
    check_file_output(target, drawn_by_plot, "plot")
    try:
        import matplotlib  # an optional extra: imported only when a plot is asked for

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError('plotting needs matplotlib: pip install -e ".[plot]" (or pip install matplotlib)') from None
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("val", "o-"), ("dev", "o-")):
        points = [(r["step"], r["loss"]) for r in records if r.get("split") == split and "loss" in r]
        if points:
            ax.plot(*zip(*points), style, label=f"{split} loss", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.set_title(str(folder.resolve().name))
    ax.legend()
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": SOFTWARE})
    plt.close(fig)
    atomic_write(target, buffer.getvalue())
    return target
