"""Method against base size (Lester et al. 2021, figure 1, in miniature): `compare` on bases of several sizes.

    x    the base's parameter count, log scale
    y    dev accuracy: the mean over the seeds, their standard deviation as the error bar
    tuned rows         one line per method (per method and readout when the sweep has several readouts)
    prompted rows      dashed lines (zero-shot, calibrated zero-shot, few-shot): nothing trains, but they read the base
    baseline rows      horizontal lines (majority class, bag-of-n-grams logistic regression): they never see the base

OUT/<base folder>/ holds each base's comparison (results.md, results.json, as `train.py compare` writes them);
OUT/sweep.json every base's folder, parameter count and rows; OUT/sweep.md one table, methods by bases;
OUT/method_vs_size.png the picture, which `plot_sweep` redraws from sweep.json.

Docs: docs/results.md (method against base size), docs/cli.md (sweep).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minilm.experiments.compare import COMPARE, QUICK, CompareConfig, compare_run, rows_as_json
from minilm.files import atomic_write, read_json
from minilm.outputs import MARKER, OutputKind, check_file_output, check_output, claim_output
from minilm.training.plot import drawn_by, pyplot, save_marked
from minilm.training.run import INSTRUCT, PRETRAIN, load_run
from minilm.tuning.tasks import load_task
from minilm.tuning.tuned import TUNE

SWEEP_JSON, SWEEP_MD, PICTURE = "sweep.json", "sweep.md", "method_vs_size.png"
SWEEP = OutputKind("sweep", "a size sweep", (SWEEP_JSON, SWEEP_MD, PICTURE), resumable=False)
SOFTWARE = "minilm sweep"
"""Written into every PNG `plot_sweep` draws: it replaces only a picture that carries this mark."""
STYLES = {"tuned": "line", "prompted": "dashed", "baseline": "horizontal"}
"""How each kind of row is drawn."""


def row_kind(row: dict[str, Any]) -> str:
    """The row's `kind`; for rows written before compare recorded one: "prompted" when nothing trains, else "tuned"."""
    kind = row.get("kind") or ("prompted" if row["trainable"] == 0 else "tuned")
    if kind not in STYLES:
        raise ValueError(f"row {row['method']!r} has kind {kind!r}: the sweep draws only {', '.join(STYLES)}")
    return kind


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of the seeds' values; the deviation of one value is 0."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass(frozen=True)
class Series:
    """One line of the picture: its label, its kind of row, and (parameters, mean, std) per base, smallest first."""

    label: str
    kind: str
    points: list[tuple[int, float, float]]

    @property
    def style(self) -> str:
        """ "line" (tuned), "dashed" (prompted) or "horizontal" (baseline)."""
        return STYLES[self.kind]

    @property
    def level(self) -> float:
        """A horizontal line's height: the mean over the bases (a baseline's value is the same on every base)."""
        return statistics.mean(mean for _, mean, _ in self.points)


def series(sweep: dict[str, Any]) -> list[Series]:
    """Every line of the picture from a sweep (sweep.json): one per row of compare, in compare's order."""
    tuned = [r for b in sweep["bases"] for r in b["rows"] if row_kind(r) == "tuned"]
    several = len({r["readout"] for r in tuned}) > 1
    found: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for base in sweep["bases"]:
        for row in base["rows"]:
            if row["dev_accuracy"]:
                kind = row_kind(row)
                label = row["method"] + (f" / {row['readout']}" if kind == "tuned" and several else "")
                found.setdefault((label, kind), []).append((base["parameters"], *mean_std(row["dev_accuracy"])))
    return [Series(label, kind, sorted(points)) for (label, kind), points in found.items()]


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {std:.3f}"


def table(sweep: dict[str, Any]) -> str:
    """sweep.md's table: a row per (method, readout), a column per base, dev accuracy mean ± std in the cells."""
    bases = sweep["bases"]
    cells: dict[tuple[str, str], dict[int, str]] = {}
    for i, base in enumerate(bases):
        for row in base["rows"]:
            cells.setdefault((row["method"], row["readout"]), {})[i] = cell(row["dev_accuracy"])
    head = "| method | readout | " + " | ".join(f"{b['folder']} ({b['parameters']:,})" for b in bases) + " |"
    lines = [head, "|" + "---|" * (2 + len(bases))]
    for (method, readout), by_base in cells.items():
        lines.append("| " + " | ".join([method, readout, *(by_base.get(i, "-") for i in range(len(bases)))]) + " |")
    return "\n".join(lines)


def markdown(sweep: dict[str, Any]) -> str:
    """sweep.md: the command, what the cells are, and the table."""
    seeds = sweep["settings"]["seeds"]
    cells = (
        f"mean ± standard deviation over the seeds {', '.join(map(str, seeds))}"
        if len(seeds) > 1
        else f"one run each (seed {seeds[0]}, so no spread)"
    )
    return (
        f"# Method against base size: task {sweep['task']}, {sweep['objective']} bases\n\n"
        f"`{sweep['command'] or 'python train.py sweep'}`\n\n"
        f"Dev accuracy, {cells}; a column per base (its parameter count), "
        "each base's full table in OUT/<base>/results.md.\n\n" + table(sweep) + "\n"
    )


def folder_names(bases: list[str]) -> list[str]:
    """OUT's subfolder for each base: the base folder's name, made unique with -2, -3, ... where two are the same."""
    taken, names = {SWEEP_JSON, SWEEP_MD, PICTURE, MARKER}, []
    for base in bases:
        name = unique = Path(base).resolve().name
        k = 2
        while unique in taken:
            unique, k = f"{name}-{k}", k + 1
        taken.add(unique)
        names.append(unique)
    return names


def read_bases(bases: list[str]) -> tuple[list[int], str]:
    """(parameter count of each base, the objective they share); one-line errors for a missing or mixed base."""
    if len(bases) < 2:
        raise ValueError(
            f"--bases needs at least 2 pretrained runs of different sizes to draw a line, got {len(bases)}"
        )
    paths = [Path(b).resolve() for b in bases]
    twice = next((b for b, p in zip(bases, paths) if paths.count(p) > 1), None)
    if twice:
        raise ValueError(f"--bases lists {twice} twice: give each base once")
    counts, objectives = [], {}
    for base in bases:
        model, _, _ = load_run(base, "best", "cpu")
        counts.append(model.num_parameters())
        objectives.setdefault("causal" if model.config.causal else "masked", []).append(base)
    if len(objectives) > 1:
        which = " and ".join(
            f"{', '.join(runs)} {'is' if len(runs) == 1 else 'are'} {o}" for o, runs in objectives.items()
        )
        raise ValueError(f"--bases mix objectives: {which}; sweep bases pretrained with one objective")
    return counts, next(iter(objectives))


def write_sweep(sweep: dict[str, Any], folder: Path) -> None:
    atomic_write(folder / SWEEP_JSON, json.dumps(sweep, indent=2) + "\n")
    atomic_write(folder / SWEEP_MD, markdown(sweep))


def size_sweep(
    bases: list[str],
    task_dir: str,
    out: str,
    config: CompareConfig | None = None,
    *,
    quick: bool = False,
    overwrite: bool = False,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`train.py sweep`: `compare_run` on every base into OUT/<base folder>/, then OUT/sweep.json, sweep.md and
    method_vs_size.png; returns the sweep (what sweep.json holds). sweep.json and sweep.md grow base by base."""
    config = config or CompareConfig()
    if quick:
        config = CompareConfig(**{**config.__dict__, **QUICK})
    counts, objective = read_bases(bases)
    task = load_task(task_dir)
    folder, names = Path(out), folder_names(bases)
    reads = [*(("--bases", b) for b in bases), ("--task", task_dir)]
    known = [PRETRAIN, INSTRUCT, TUNE, COMPARE]
    check_output(folder, SWEEP, overwrite=overwrite, reads=reads, known=known)
    for name in names:  # each base's compare folder, before any base runs
        check_output(folder / name, COMPARE, overwrite=overwrite, reads=reads, known=[*known, SWEEP])
    sweep: dict[str, Any] = {
        "task": task.name,
        "task_dir": str(task_dir),
        "objective": objective,
        "command": command,
        "settings": dataclasses.asdict(config),
        "bases": [],
    }
    for i, (base, name, count) in enumerate(zip(bases, names, counts), start=1):
        log(f"sweep: base {i}/{len(bases)}, {base} ({count:,} parameters) -> {folder / name}")
        rows = compare_run(
            base,
            task_dir,
            str(folder / name),
            config,
            overwrite=overwrite,
            command=f"{command or 'python train.py sweep'} (base {base})",
            log=log,
        )
        if i == 1:  # claimed once the first base is done: a mistake that stops it (the task, a flag) writes nothing
            claim_output(folder, SWEEP, fresh=True)
        sweep["bases"].append({"base": str(base), "folder": name, "parameters": count, "rows": rows_as_json(rows)})
        write_sweep(sweep, folder)
    log(table(sweep))
    try:
        picture = plot_sweep(sweep, folder / PICTURE)
    except ValueError as e:
        raise ValueError(
            f"{e}; {folder / SWEEP_JSON} and {SWEEP_MD} are written: draw the picture later with "
            f"`python train.py sweep --plot-only {folder}`"
        ) from None
    log(f"written to {folder / SWEEP_MD}, {SWEEP_JSON} and {picture.name}")
    return sweep


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """sweep.json (of a sweep folder, or the file itself); one line when it is missing or not a sweep."""
    path = Path(path)
    path = path / SWEEP_JSON if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `python train.py sweep --bases ... --out DIR` first")
    sweep = read_json(path, "sweep")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("bases"), list):
        raise ValueError(f"{path} is not a sweep.json written by `train.py sweep` (no list of bases)")
    return sweep


def drawn_by_sweep(path: Path) -> bool:
    """Whether the file is a PNG that `plot_sweep` drew (its metadata names SOFTWARE)."""
    return drawn_by(path, SOFTWARE)


def y_label(seeds: list[int]) -> str:
    """The picture's y axis: the mean and spread over several seeds, or the one seed of every point."""
    return "dev accuracy (mean ± std over seeds)" if len(seeds) > 1 else f"dev accuracy (one run each, seed {seeds[0]})"


def plot_sweep(sweep: str | os.PathLike[str] | dict[str, Any], png: str | os.PathLike[str] | None = None) -> Path:
    """Dev accuracy against base parameters (log x), one line per `series`, to `png` (default: method_vs_size.png
    next to sweep.json); returns its path. `sweep` is a sweep folder, its sweep.json, or what size_sweep returned."""
    if isinstance(sweep, dict):
        if png is None:
            raise ValueError("plot_sweep: give the path of the PNG to write (png=...)")
        data = sweep
    else:
        data = load_sweep(sweep)
        png = png or (Path(sweep) if Path(sweep).is_dir() else Path(sweep).parent) / PICTURE
    target = Path(png)
    check_file_output(target, drawn_by_sweep, "sweep picture")
    lines = series(data)
    if not lines:
        raise ValueError("the sweep holds no dev accuracy to draw: run `python train.py sweep` into it first")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    grays = 0
    for line in lines:
        xs, means, stds = zip(*line.points)
        if line.style == "horizontal":
            ax.axhline(
                line.level, linestyle=":", linewidth=1.6, color=f"{0.15 + 0.25 * (grays % 3):.2f}", label=line.label
            )
            grays += 1
        else:
            fmt = "o-" if line.style == "line" else "s--"
            ax.errorbar(xs, means, yerr=stds, fmt=fmt, capsize=3, markersize=4, label=line.label)
    bases = sorted(data["bases"], key=lambda b: b["parameters"])
    ax.set_xscale("log")
    low, high = bases[0]["parameters"], bases[-1]["parameters"]
    pad = (high / low) ** 0.08 if high > low else 1.5  # 8% of the decades on each side
    ax.set_xlim(low / pad, high * pad)
    ax.set_xticks([b["parameters"] for b in bases], [f"{b['parameters']:,}\n{b['folder']}" for b in bases])
    ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    ax.set_xlabel("base parameters (log scale)")
    ax.set_ylabel(y_label(data["settings"]["seeds"]))
    ax.set_title(f"{data.get('task', 'task')}: method against base size ({data.get('objective', '')} bases)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_marked(fig, target, SOFTWARE)
