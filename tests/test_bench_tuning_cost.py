"""Smoke test of bench/tuning_cost.py: a tiny run in-process, checked for shape and for numbers that must hold."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "tuning_cost.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_tuning_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tuning_cost_tiny_run(tmp_path, capsys):
    bench = load_script()
    assert abs(bench.check_cpu_peak() - 3.25) < 1e-6  # the profiler's running sum reads known allocations exactly

    width, prompt_len, classes = 32, 4, 2
    out = tmp_path / "cost.json"
    rows = bench.main(
        [
            "--layers",
            "2",
            "--width",
            str(width),
            "--heads",
            "2",
            "--vocab",
            "300",
            "--context",
            "64",
            "--batch",
            "4",
            "--seq",
            "16",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--prompt-len",
            str(prompt_len),
            "--hidden",
            "16",
            "--methods",
            "prompt",
            "lora",
            "full",
            "--json",
            str(out),
        ]
    )
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == ["prompt", "lora", "full"]  # header + one row each

    by_method = {r["method"]: r for r in rows}
    full, prompt = by_method["full"], by_method["prompt"]
    for key in ("trainable", "ms_per_step", "persistent_bytes", "step_peak_bytes", "peak_bytes"):
        assert full[f"{key}_vs_full"] == 1.0
    assert table[-1].split("|")[4].strip() == "1.0000" and table[-1].split("|")[6].strip() == "1.00"

    head = width * classes + classes
    assert prompt["trainable"] == prompt_len * width + head
    assert prompt["trainable"] < full["trainable"]
    assert full["step_peak_bytes"] >= 4 * full["trainable"]  # a full step holds every gradient at once
    assert prompt["persistent_bytes"] < full["persistent_bytes"]  # no AdamW state for the frozen base
    assert all(r["ms_per_step"] > 0 and len(r["step_times_ms"]) == 2 for r in rows)
    assert [r["method"] for r in json.loads(out.read_text())["rows"]] == ["prompt", "lora", "full"]
