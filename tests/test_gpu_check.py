"""bench/gpu_check.py, the one command for a rarely lent GPU: it must run unattended there, so every code path runs
here first: without CUDA (the GPU parts skipped), as a --smoke run (every part at tiny sizes on the CPU), under the
time guard, and with a part that fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.py"
GPU_PARTS = ("cuda-tests", "kernel-check", "attention", "tiles", "throughput", "pretrain")


def load_gpu_check():
    """bench/gpu_check.py imported from its path (bench/ is no package)."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def run_script(tmp_path: pathlib.Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path / "report"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--work-dir", str(tmp_path / "work"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (out / "gpu_check.json").is_file() and (out / "gpu_check.md").is_file(), done.stdout + done.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    return done, report, (out / "gpu_check.md").read_text()


def by_name(report: dict) -> dict[str, dict]:
    return {part["name"]: part for part in report["parts"]}


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine this would be the whole 8-minute check")
def test_without_cuda_the_gpu_parts_are_skipped_and_the_others_run(tmp_path):
    done, report, md = run_script(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    parts = by_name(report)
    assert list(parts) == ["environment", "graph-breaks", *GPU_PARTS]
    for name in GPU_PARTS:
        assert parts[name]["status"] == "skipped" and parts[name]["reason"] == "no CUDA device", parts[name]
        assert f"| {name} | skipped |" in md and "no CUDA device" in md
    assert parts["environment"]["status"] == "passed"
    assert parts["environment"]["data"]["torch"] == torch.__version__
    assert parts["environment"]["data"]["cuda_available"] is False
    graph = parts["graph-breaks"]
    assert graph["status"] == "passed"
    assert set(graph["data"]["backends"]) == {"sdpa", "math"}
    for result in graph["data"]["backends"].values():  # the count itself is whatever minilm has today
        assert result["graph_count"] >= 1 and result["graph_break_count"] >= 0
        assert (result["graph_break_count"] == 0) == (result["break_reasons"] == [])
    assert report["header"]["cuda"] is False and report["header"]["smoke"] is False
    assert "No CUDA device" in md and "NOT measurements" not in md
    assert report["header"]["command"].startswith("python ") and "--out" in report["header"]["command"]


def test_smoke_runs_every_part_that_can_run_on_the_cpu_and_says_it_measured_nothing(tmp_path):
    """In-process (the run above already showed the script starts on its own): every part's code at tiny sizes."""
    gpu_check = load_gpu_check()
    options = gpu_check.Options(tmp_path / "report", smoke=True, work_dir=tmp_path / "work", log=lambda _: None)
    report = gpu_check.run(list(gpu_check.PARTS), options)
    failed = {p["name"]: p.get("error") for p in report["parts"] if p["status"] == "failed"}
    assert gpu_check.exit_code(report) == 0, failed
    md = (tmp_path / "report" / "gpu_check.md").read_text()
    parts = by_name(report)
    assert {name: p["status"] for name, p in parts.items() if p["status"] != "passed"} == {"tiles": "skipped"}
    assert "interpreter" in parts["tiles"]["reason"]
    assert report["header"]["smoke"] is True
    assert "SMOKE RUN" in md and "NOT measurements" in md

    assert parts["cuda-tests"]["data"]["counts"]["passed"] > 0 and parts["cuda-tests"]["data"]["returncode"] == 0
    checks = parts["kernel-check"]["data"]["cases"]
    assert len(checks) == 12 and all(c["ok"] and c["out_max_abs_err"] < c["tol"] for c in checks)
    rows = parts["attention"]["data"]["rows"]
    assert {r["backend"] for r in rows} == {"math", "sdpa"} and {r["dtype"] for r in rows} == {"bf16", "fp16"}
    timed = [r for r in rows if "error" not in r]
    assert timed and all(r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 for r in timed)
    assert [r["error"] for r in rows if "error" in r] == ["skipped: math above T=32"] * 6
    assert [g["status"] for g in parts["attention"]["data"]["goals"]] == ["not measured"] * 3
    throughput = parts["throughput"]["data"]["rows"]
    modes = {(r["model"], r["mode"]) for r in throughput}
    assert {("minilm", "eager"), ("minilm", "compile")} <= modes
    assert all(r["tokens_per_s"] > 0 and r["warmup_s"] > 0 for r in throughput)
    pretrain = parts["pretrain"]["data"]
    assert pretrain["returncode"] == 0 and pretrain["bits_per_byte"] > 0 and pretrain["tokens_per_s_median"] > 0
    assert any(line.startswith("done:") for line in pretrain["lines"])
    # nothing but the two report files goes into --out (a device machine returns only a few files)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["gpu_check.json", "gpu_check.md"]
    assert (tmp_path / "work" / "pretrain" / "metrics.jsonl").is_file()


def test_a_budget_too_small_skips_the_long_parts_without_failing(tmp_path):
    """In-process (the budget counts from the module's import, which is long past): every part with an estimate is
    skipped, and the report says why."""
    gpu_check = load_gpu_check()
    options = gpu_check.Options(tmp_path, budget_s=1, smoke=True, work_dir=tmp_path / "work", log=lambda _: None)
    report = gpu_check.run(list(gpu_check.PARTS), options)
    assert gpu_check.exit_code(report) == 0
    md = (tmp_path / "gpu_check.md").read_text()
    parts = by_name(report)
    assert parts["environment"]["status"] == "passed"  # an estimate of 0: it always runs
    for name in ("graph-breaks", "cuda-tests", "kernel-check", "attention", "throughput", "pretrain"):
        assert parts[name]["status"] == "skipped", parts[name]
        assert parts[name]["reason"].startswith("would run past the budget (estimate "), parts[name]
    assert "would run past the budget" in md and "failed" not in md


def test_a_failing_part_is_recorded_and_the_next_part_still_runs(tmp_path):
    gpu_check = load_gpu_check()

    def explodes(ctx, data):
        data["measured"] = 42
        raise ValueError("boom\nsecond line")

    def reads_the_report(ctx, data):  # the report on disk already holds the part before this one
        written = json.loads((ctx.out / "gpu_check.json").read_text())
        data["seen"] = {p["name"]: p["status"] for p in written["parts"]}

    parts = [
        gpu_check.Part("explodes", False, 0, 0, explodes, lambda data: [f"measured {data['measured']}"]),
        gpu_check.Part("after", False, 0, 0, reads_the_report, lambda data: ["after ran"]),
    ]
    options = gpu_check.Options(tmp_path, budget_s=600, work_dir=tmp_path / "work", command="test", log=lambda _: None)
    report = gpu_check.run(parts, options)

    failed, after = report["parts"]
    assert failed["status"] == "failed" and failed["data"] == {"measured": 42}
    assert failed["error"]["type"] == "ValueError" and failed["error"]["message"] == "boom"
    assert any("raise ValueError" in line for line in failed["error"]["traceback"])
    assert after["status"] == "passed"
    assert after["data"]["seen"] == {"explodes": "failed", "after": "running"}
    assert gpu_check.exit_code(report) == 1
    on_disk = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [p["status"] for p in on_disk["parts"]] == ["failed", "passed"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| explodes | failed |" in md and "ValueError: boom" in md and "measured 42" in md and "after ran" in md


def test_the_goals_are_met_or_not_by_the_measured_ratios():
    gpu_check = load_gpu_check()

    def row(case, T, backend, ms, peak, dtype="bf16", d_k=64):
        return dict(dtype=dtype, case=case, T=T, d_k=d_k, backend=backend, fwd_bwd_ms=ms, peak_mib=peak)

    rows = [
        row("causal", 1024, "sdpa", 1.0, 100),
        row("causal", 1024, "triton", 1.1, 50),  # 0.91x sdpa
        row("causal", 2048, "sdpa", 4.0, 200),
        row("causal", 2048, "triton", 5.0, 100),  # 0.80x
        row("prefix+causal+padding", 1024, "sdpa", 3.0, 400),
        row("prefix+causal+padding", 1024, "triton", 1.0, 60),  # 3.0x
        row("prefix+causal+padding", 2048, "sdpa", 12.0, 1600),
        row("prefix+causal+padding", 2048, "triton", 12.0, 240),  # 1.0x: geometric mean sqrt(3) = 1.73x
        dict(row("bidirectional", 1024, "triton", 0, 0), error="out of memory"),
    ]
    del rows[-1]["fwd_bwd_ms"]
    a, b, c = gpu_check.attention_goals(rows)
    assert a["status"] == "met" and a["geomean"] == pytest.approx((1 / 1.1 * 0.8) ** 0.5) and a["sizes_met"] == "2/2"
    assert b["status"] == "met" and b["geomean"] == pytest.approx(3**0.5) and b["sizes_met"] == "1/2"
    assert c["status"] == "not met" and c["max"] == pytest.approx(4.0)  # prefix case: 60 -> 240 MiB is quadratic
    assert sorted(r["ratio"] for r in c["ratios"]) == pytest.approx([2.0, 4.0])
    rows[3]["fwd_bwd_ms"] = 8.0  # 0.5x at 2048: geometric mean 0.67x
    assert gpu_check.attention_goals(rows)[0]["status"] == "not met"
    assert [g["status"] for g in gpu_check.attention_goals([])] == ["not measured"] * 3


def test_pytest_summary_line_is_parsed_into_counts():
    gpu_check = load_gpu_check()
    output = "..F.s\nSKIPPED [2] tests/x.py:3: no GPU\n"
    output += "1 failed, 26 passed, 2 skipped, 1 warning, 3 deselected in 9.12s\n"
    assert gpu_check.parse_pytest_summary(output) == {
        "failed": 1,
        "passed": 26,
        "skipped": 2,
        "warnings": 1,
        "deselected": 3,
    }
    assert gpu_check.parse_pytest_summary("collected 0 items\nno summary\n") == {}


def test_tile_sweep_times_each_kernel_and_records_a_tile_that_does_not_build(tmp_path, monkeypatch):
    """The sweep's code through Triton's CPU interpreter (conftest.py switches it on without CUDA) at tiny sizes; a
    BLOCK_M of 24 is no power of two, which Triton refuses: that configuration gets an error, the others go on."""
    pytest.importorskip("triton")
    gpu_check = load_gpu_check()
    monkeypatch.setattr(
        gpu_check,
        "TILE_SWEEP",
        dict(
            dtype="fp32",
            head_dims=(16,),
            T=32,
            batch=1,
            heads=1,
            repeats=1,
            forward=((16, 16, 4), (24, 16, 4)),
            dk_dv=((16, 16, 4),),
            dq=((16, 32, 4),),
        ),
    )
    clock = gpu_check.Clock(600)
    ctx = gpu_check.Context(tmp_path, tmp_path, False, torch.cuda.is_available(), clock)
    ctx.part_start, ctx.part_estimate_s = gpu_check.time.perf_counter(), 60
    data: dict = {}
    gpu_check.part_tiles(ctx, data)
    rows = {(r["kernel"], tuple(r["tiles"])): r for r in data["rows"]}
    assert set(rows) == {
        ("forward", (32, 32, 4)),
        ("forward", (16, 16, 4)),
        ("forward", (24, 16, 4)),
        ("dk_dv", (32, 32, 4)),
        ("dk_dv", (16, 16, 4)),
        ("dq", (32, 32, 4)),
        ("dq", (16, 32, 4)),
    }
    assert "error" in rows[("forward", (24, 16, 4))]
    assert rows[("forward", (16, 16, 4))]["fwd_ms"] > 0 and rows[("dq", (16, 32, 4))]["fwd_bwd_ms"] > 0
    assert "fwd_ms" not in rows[("dq", (16, 32, 4))]  # the backward kernels are ranked by forward+backward
    best = {b["kernel"]: b for b in data["best"]}
    assert best["forward"]["default_tiles"] == (32, 32, 4)
    assert best["forward"]["best_tiles"] in [(32, 32, 4), (16, 16, 4)]
    assert best["dq"]["speedup"] == pytest.approx(best["dq"]["default_ms"] / best["dq"]["best_ms"])
    assert "| forward | 16 |" in "\n".join(gpu_check.render_tiles(data))


def test_a_subprocess_past_its_timeout_is_killed_and_its_output_kept():
    """cuda-tests and pretrain run under the time left; one that hangs is killed with what it printed so far."""
    gpu_check = load_gpu_check()
    code = "import time; print('started', flush=True); time.sleep(60)"
    done = gpu_check.run_command([sys.executable, "-c", code], timeout_s=1)
    assert done.timed_out and done.returncode != 0
    assert "started" in done.output and done.seconds < 20
