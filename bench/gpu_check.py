"""The whole GPU story of minilm in one command, sized for one NVIDIA H200 and at most 8 minutes.

    python bench/gpu_check.py --out DIR                      # every part, a 480 s budget
    python bench/gpu_check.py --out DIR --parts attention tiles --budget 300
    python bench/gpu_check.py --out DIR --smoke              # every part's code at tiny sizes on the CPU

A GPU is lent to this project rarely and briefly, and nothing can be debugged on it, so this script is prepared to
run there unattended under the machine's own Python (torch, triton and transformers installed; nothing can be
installed; pytest may be missing): run it from the repository root, no `pip install` needed. It writes

    DIR/gpu_check.json    every figure, machine-readable
    DIR/gpu_check.md      markdown tables to paste into docs/performance.md, under a header line with the date,
                          the GPU, the torch / triton / transformers versions and the exact command

and rewrites both after every part (and between the cases of the long parts), so a run killed by a timeout still
leaves everything measured so far. Nothing else goes into DIR (a device machine returns only a few files): the
pretraining run and its encoded corpus go to --work-dir, a new temporary folder by default.

Parts, in this order (estimates are for one H200, compilation included):

    environment    versions, the GPU, CPU count, git commit                                  everywhere
    graph-breaks   torch._dynamo.explain of a tiny minilm training step, per backend         everywhere
    cuda-tests     pytest tests/test_flash_attention.py tests/test_attention.py               CUDA + pytest
    kernel-check   the Triton kernel against `math`: out, dQ, dK, dV, bf16/fp16, d_k 64/128   CUDA
    attention      bench/attention.py's grid, and the kernel's three goals (met / not met)   CUDA
    tiles          a small tile sweep of the three Triton kernels (bf16, causal T=4096)       CUDA
    throughput     bench/train_throughput.py at GPT-2-small size, minilm vs GPT-2, eager
                   and torch.compile, MFU against the measured and the datasheet peak         CUDA (+ transformers)
    pretrain       `python train.py pretrain --device cuda --time-budget 2m`                 CUDA

Each part runs inside try/except: a failure is recorded (type, first line, the traceback's last lines) and the next
part runs. Exit code 0 when every part that ran passed, 1 when any failed; skipped parts are no failures.

Time guard: before a part starts, if the budget left is below its estimate it is skipped ("would run past the
budget"); the long parts (attention, tiles) check the clock between cases and stop early, recording the cases they
skipped, when the budget is spent or they have run well past their estimate (`Context.out_of_time`). Subprocesses
get the time left as their timeout. The budget counts from the script's start, the import of torch included.

Without CUDA the GPU parts are skipped ("no CUDA device") and the others run. `--smoke` instead runs every part at
tiny sizes on the CPU (math and sdpa only, no Triton, tiny models, a few steps), so that the test suite exercises
every code path here (tests/test_gpu_check.py); its figures are not measurements, and its report says so.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

START = time.perf_counter()  # the budget counts from here: importing torch (seconds on a cold machine) is part of it
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `import minilm` without installing it

import torch  # noqa: E402  (after START and sys.path)
from torch import Tensor  # noqa: E402

from minilm import ModelConfig, Transformer, causal_lm_loss  # noqa: E402
from minilm.model.attention import math_attention  # noqa: E402
from minilm.model.kernels import triton_unsupported  # noqa: E402


def load_bench(name: str) -> ModuleType:
    """bench/<name>.py as a module (bench/ is no package; loaded by path so no other `bench` on sys.path interferes)."""
    module_name = f"minilm_bench_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before exec: dataclasses look their module up while it runs
        spec.loader.exec_module(module)
    return sys.modules[module_name]


attention_bench = load_bench("attention")
throughput_bench = load_bench("train_throughput")

DEFAULT_BUDGET_S = 480.0
OVERRUN = 1.5  # a long part stops between cases once it has run this many times its estimate (and 30 s more)

# ---- sizes of each part: on the GPU, and in --smoke on the CPU ------------------------------------------------------

# graph-breaks: a tiny model (the count does not depend on the size); head dim 32, which the Triton kernel takes
GRAPH_CONFIG = dict(vocab_size=64, d_model=64, n_heads=2, n_layers=1, d_ff=128, max_len=32, dropout=0.0)
GRAPH_BATCH = 2

CUDA_TEST_FILES = ("tests/test_flash_attention.py", "tests/test_attention.py")
# --smoke: one test of test_attention.py, its CUDA cases skipped (the Triton tests take minutes in the CPU interpreter)
SMOKE_TESTS = ("tests/test_attention.py", "-k", "math_and_sdpa_agree")
CUDA_TESTS_TIMEOUT_S = 180

# kernel-check: the Triton kernel (smoke: sdpa) against math in float32, elementwise
# |kernel - math| <= tol + tol * |math|, as tests/test_flash_attention.py compares
KERNEL_CHECK = dict(backend="triton", dtypes=("bf16", "fp16"), head_dims=(64, 128), T=1024, batch=4, heads=8, prefix=16)
SMOKE_KERNEL_CHECK = dict(backend="sdpa", dtypes=("bf16", "fp16"), head_dims=(16, 32), T=32, batch=2, heads=2, prefix=4)
TOLERANCE = {"bf16": 2e-2, "fp16": 1e-2}

# attention: bf16 first, and the two cases the goals are about before bidirectional, so a run cut short keeps them.
# math above T=4096 is skipped: its T x T scores are what the kernels avoid, and at 8192 they cost time and GiBs.
ATTENTION_GRID = dict(
    dtypes=("bf16", "fp16"),
    cases=("causal", "prefix+causal+padding", "bidirectional"),
    seq_lens=(512, 1024, 2048, 4096, 8192),
    head_dims=(64, 128),
    backends=("math", "sdpa", "triton"),
    batch=4,
    heads=8,
    prefix_len=16,
    repeats=10,
    max_math_len=4096,
)
SMOKE_ATTENTION_GRID = dict(
    ATTENTION_GRID,
    seq_lens=(16, 32, 64),
    head_dims=(16,),
    backends=("math", "sdpa"),
    batch=2,
    heads=2,
    prefix_len=4,
    repeats=1,
    max_math_len=32,  # so the smoke run takes the skip path too
)
SPEED_GOALS = (  # (goal, mask case, the least triton fwd+bwd speed as a multiple of sdpa's)
    ("a", "causal", 0.8),
    ("b", "prefix+causal+padding", 1.5),
)
MEMORY_GOAL_MAX_RATIO = 2.5  # peak(2T) / peak(T): 2 is linear in T, 4 quadratic

# tiles: (BLOCK_M, BLOCK_N, num_warps) per kernel; one kernel's tiles vary, the others stay at default_tiles(bf16)
TILE_SWEEP = dict(
    dtype="bf16",
    head_dims=(64, 128),
    T=4096,
    batch=4,
    heads=8,
    repeats=10,
    forward=((64, 64, 4), (128, 64, 4), (128, 64, 8), (128, 128, 8)),
    dk_dv=((32, 64, 4), (32, 64, 8), (64, 64, 8), (64, 128, 8)),
    dq=((64, 64, 4), (64, 64, 8), (128, 64, 8)),
)
TILE_KERNELS = ("forward", "dk_dv", "dq")

# throughput: GPT-2 small (12 x 768, context 1024, head dim 64, vocabulary 50257), bf16 autocast, fused AdamW
THROUGHPUT = dict(
    size=(12, 768, 1024, 64, 50257),
    batch=8,
    precision="bf16",
    optimizer="fused",
    models=("minilm", "gpt2"),
    modes=("eager", "compile"),
    extra_models=("minilm-triton",),  # eager only: minilm as it trains on CUDA (its Triton kernel)
    steps=10,
    warmup=3,
    peak_size=8192,
    compile_backend="inductor",
)
SMOKE_THROUGHPUT = dict(
    THROUGHPUT,
    size=(1, 32, 16, 16, 64),
    batch=2,
    precision="fp32",
    optimizer="foreach",
    models=("minilm",),
    extra_models=("gpt2",),  # the peer eager only: tracing GPT-2 for a compiled variant adds seconds to the suite
    steps=2,
    warmup=1,
    peak_size=64,
    compile_backend="eager",  # dynamo traces, nothing is generated (inductor takes tens of seconds on a CPU)
)

PRETRAIN_BUDGET = "2m"
PRETRAIN_TIMEOUT_S = 330
SMOKE_PRETRAIN_FLAGS = tuple(
    "--max-steps 3 --eval-every 3 --log-every 1 --warmup-steps 1 --layers 1 --width 32 --heads 2 --context 32 "
    "--vocab 300 --batch-size 4 --eval-windows 4".split()
)
SMOKE_CORPUS_BYTES = 40_000  # --smoke pretrains on the first 40 kB of data/tinyshakespeare.txt (tokenizer: seconds)


# ---- the runner ------------------------------------------------------------------------------------------------------
class Skipped(Exception):
    """Raised by a part that cannot run here (the reason is its message); recorded as skipped, not failed."""


class CheckFailed(Exception):
    """Raised by a part whose measurement ran but whose check did not pass; the data it gathered is kept."""


@dataclass
class Clock:
    """The budget, counted from START."""

    budget_s: float

    def elapsed(self) -> float:
        return time.perf_counter() - START

    def left(self) -> float:
        return self.budget_s - self.elapsed()


@dataclass
class Context:
    """What a part function gets besides its data dict: where to write, the device, the clock."""

    out: Path
    work: Path
    smoke: bool
    cuda: bool
    clock: Clock
    save: Callable[[], None] = lambda: None  # rewrite both report files now
    part_start: float = 0.0
    part_estimate_s: float = 0.0

    @property
    def device(self) -> str:
        return "cuda" if self.cuda and not self.smoke else "cpu"

    def out_of_time(self) -> str | None:
        """Why a long part should stop before its next case, or None: the budget is spent, or the part has run
        OVERRUN x its estimate (and 30 s more), so it cannot crowd out the parts after it."""
        if self.clock.left() <= 0:
            return "the budget is spent"
        allowance = max(OVERRUN * self.part_estimate_s, self.part_estimate_s + 30)
        if time.perf_counter() - self.part_start > allowance:
            return f"the part has run past {allowance:.0f}s ({OVERRUN}x its estimate)"
        return None


@dataclass(frozen=True)
class Part:
    """One step of the check: `run(ctx, data)` fills `data` (kept even when it raises); `render(data)` gives its
    markdown lines."""

    name: str
    needs_cuda: bool
    estimate_s: float  # on one H200, compilation included
    smoke_estimate_s: float  # --smoke on a 2-core CPU
    run: Callable[[Context, dict[str, Any]], None]
    render: Callable[[dict[str, Any]], list[str]]
    smoke_skip: str = ""  # why --smoke does not run it; "" = it runs at tiny sizes


@dataclass
class Options:
    out: Path
    budget_s: float = DEFAULT_BUDGET_S
    smoke: bool = False
    work_dir: Path | None = None
    command: str = ""
    cuda: bool | None = None  # None: torch.cuda.is_available()
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


def describe_error(error: BaseException, traceback_lines: int = 12) -> dict[str, Any]:
    """{type, message (the first line), traceback (its last lines)} of an exception."""
    lines = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip().splitlines()
    message = str(error).strip().splitlines()
    return {
        "type": type(error).__name__,
        "message": message[0] if message else "",
        "traceback": lines[-traceback_lines:],
    }


def version_of(module: str) -> str | None:
    """The installed version of a module's distribution, None when it is not installed."""
    if importlib.util.find_spec(module) is None:
        return None
    for distribution in (module, f"pytorch-{module}"):  # CUDA nightlies ship Triton as pytorch-triton
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(distribution)
    return getattr(__import__(module), "__version__", "unknown")


def gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def header(options: Options, cuda: bool) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": gpu_name() if cuda else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": version_of("triton"),
        "transformers": version_of("transformers"),
        "command": options.command,
        "smoke": options.smoke,
        "cuda": cuda,
        "budget_s": options.budget_s,
    }


def run(parts: Sequence[Part], options: Options) -> dict[str, Any]:
    """Run `parts` in order under the time guard, rewriting DIR/gpu_check.{json,md} after each; returns the report."""
    cuda = torch.cuda.is_available() if options.cuda is None else options.cuda
    options.out.mkdir(parents=True, exist_ok=True)
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    clock = Clock(options.budget_s)
    report: dict[str, Any] = {
        "header": header(options, cuda),
        "work_dir": str(work),
        "parts": [
            {"name": p.name, "status": "pending", "estimate_s": p.smoke_estimate_s if options.smoke else p.estimate_s}
            for p in parts
        ],
    }

    def save() -> None:
        report["header"]["elapsed_s"] = clock.elapsed()
        write_report(report, parts, options.out)

    ctx = Context(options.out, work, options.smoke, cuda, clock, save)
    save()
    for part, entry in zip(parts, report["parts"]):
        estimate = entry["estimate_s"]
        reason = skip_reason(part, ctx, estimate)
        if reason is not None:
            entry.update(status="skipped", reason=reason)
            options.log(f"[{clock.elapsed():6.1f}s] {part.name}: skipped ({reason})")
            save()
            continue
        options.log(
            f"[{clock.elapsed():6.1f}s] {part.name}: start (estimate {estimate:.0f}s, {clock.left():.0f}s left)"
        )
        entry.update(status="running", data={})
        ctx.part_start, ctx.part_estimate_s = time.perf_counter(), estimate
        save()
        try:
            part.run(ctx, entry["data"])
        except Skipped as skip:
            entry.update(status="skipped", reason=str(skip))
        except Exception as error:
            entry.update(status="failed", error=describe_error(error))
        except BaseException as error:  # KeyboardInterrupt, or SIGTERM (see main): record it, then stop
            entry.update(status="interrupted", error=describe_error(error))
            raise
        else:
            entry["status"] = "passed"
        finally:
            entry["seconds"] = time.perf_counter() - ctx.part_start
            gc.collect()
            if cuda:  # after a CUDA error this raises too; the next parts report their own errors
                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()
            save()
        note = entry.get("reason") or (entry["error"]["message"] if "error" in entry else "")
        options.log(
            f"[{clock.elapsed():6.1f}s] {part.name}: {entry['status']} in {entry['seconds']:.1f}s"
            + (f" ({note})" if note else "")
        )
    return report


def skip_reason(part: Part, ctx: Context, estimate: float) -> str | None:
    if part.needs_cuda and not ctx.cuda and not ctx.smoke:
        return "no CUDA device"
    if ctx.smoke and part.smoke_skip:
        return part.smoke_skip
    if estimate > 0 and ctx.clock.left() < estimate:  # an estimate of 0: it always runs (the environment)
        return f"would run past the budget (estimate {estimate:.0f}s, {max(ctx.clock.left(), 0):.0f}s left)"
    return None


def exit_code(report: dict[str, Any]) -> int:
    """0 when every part that ran passed (skips are no failures), else 1."""
    return 0 if all(p["status"] in ("passed", "skipped", "pending") for p in report["parts"]) else 1


# ---- the report files ------------------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """`value` with NaN and infinities as None and tuples as lists, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_report(report: dict[str, Any], parts: Sequence[Part], out: Path) -> None:
    atomic_write_text(out / "gpu_check.json", json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "gpu_check.md", "\n".join(markdown(report, parts)) + "\n")


def header_line(h: dict[str, Any]) -> str:
    return (
        f"Date: {h['date']} · GPU: {h['gpu'] or 'none (no CUDA device)'} · torch {h['torch']} · "
        f"triton {h['triton'] or 'not installed'} · transformers {h['transformers'] or 'not installed'} · "
        f"command: `{h['command']}`"
    )


def markdown(report: dict[str, Any], parts: Sequence[Part]) -> list[str]:
    h = report["header"]
    lines = ["## GPU check (bench/gpu_check.py)", "", header_line(h), ""]
    if h["smoke"]:
        lines += [
            "> **SMOKE RUN (--smoke):** every part ran at tiny sizes on the CPU to exercise the code; "
            "**its figures are NOT measurements.**",
            "",
        ]
    elif not h["cuda"]:
        skipped = [p["name"] for p in report["parts"] if p.get("reason") == "no CUDA device"]
        lines += [
            f"> **No CUDA device on this machine:** the GPU parts were skipped ({', '.join(skipped) or 'none'}); "
            "only the parts that need no GPU ran.",
            "",
        ]
    lines += [
        f"Budget {h['budget_s']:.0f}s, elapsed {h.get('elapsed_s', 0):.0f}s.",
        "",
        "| part | status | seconds | estimate s | note |",
        "|---|---|---|---|---|",
    ]
    for entry in report["parts"]:
        note = entry.get("reason") or (
            f"{entry['error']['type']}: {entry['error']['message']}" if "error" in entry else ""
        )
        seconds = f"{entry['seconds']:.1f}" if "seconds" in entry else "-"
        lines.append(
            f"| {entry['name']} | {entry['status']} | {seconds} | {entry['estimate_s']:.0f} | {md_cell(note)} |"
        )
    for part, entry in zip(parts, report["parts"]):
        if not entry.get("data") and "error" not in entry:
            continue
        lines += ["", f"### {part.name}", ""]
        if "error" in entry:
            lines += [f"**{entry['status']}**: `{entry['error']['type']}: {md_cell(entry['error']['message'])}`", ""]
        try:
            lines += part.render(entry.get("data", {}))
        except Exception as error:  # a renderer must not lose the report; the JSON has the data either way
            lines.append(f"(could not render this part: {type(error).__name__}: {error}; see gpu_check.json)")
    return lines


def md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def fmt(value: float | None, spec: str = ".2f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


# ---- subprocesses ----------------------------------------------------------------------------------------------------
@dataclass
class Completed:
    returncode: int | None
    output: str
    seconds: float
    timed_out: bool


_children: list[subprocess.Popen] = []  # the one running now, killed with its process group on SIGTERM
# A subprocess leads a process group of its own, so that killpg reaches what it starts; in the same session (Python
# 3.11+), so that whatever ends this script's session ends it too.
PROCESS_GROUP: dict[str, Any] = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}


def run_command(command: Sequence[str], timeout_s: float) -> Completed:
    """Run `command` in the repository root with the repo on PYTHONPATH, stdout and stderr together; on timeout kill
    its whole process group (pytest and train.py start processes of their own) and return what it printed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    start = time.perf_counter()
    process = subprocess.Popen(
        list(command),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        **PROCESS_GROUP,
    )
    _children.append(process)
    try:
        output, _ = process.communicate(timeout=max(timeout_s, 1))
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(process)
        output, _ = process.communicate()
        timed_out = True
    finally:
        _children.remove(process)
    return Completed(process.returncode, output, time.perf_counter() - start, timed_out)


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()


def python_command(command: Sequence[str]) -> str:
    """How a reader would type it: `python ...` instead of the interpreter's full path."""
    return shlex.join(["python", *command[1:]]) if command and command[0] == sys.executable else shlex.join(command)


# ---- 1. environment --------------------------------------------------------------------------------------------------
def git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def part_environment(ctx: Context, data: dict[str, Any]) -> None:
    """Versions, the device and the code that ran."""
    kernel_file = ROOT / "minilm" / "model" / "kernels" / "flash_attention.py"
    status = git("status", "--porcelain")
    data.update(
        python=platform.python_version(),
        python_executable=sys.executable,
        platform=platform.platform(),
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        triton=version_of("triton"),
        transformers=version_of("transformers"),
        pytest=version_of("pytest"),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        cuda_available=ctx.cuda,
        git_commit=git("rev-parse", "HEAD"),
        git_dirty=None if status is None else bool(status),
        kernel_source_sha256=hashlib.sha256(kernel_file.read_bytes()).hexdigest()[:16]
        if kernel_file.exists()
        else None,
    )
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        data.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
        )


def render_environment(data: dict[str, Any]) -> list[str]:
    lines = ["| | |", "|---|---|"]
    for key, value in data.items():
        lines.append(f"| {key} | {md_cell(fmt(value, '.1f') if isinstance(value, float) else value)} |")
    return lines


# ---- 2. graph-breaks -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet_dynamo() -> Iterator[None]:
    """Dynamo logs every graph break as a warning with a stack; explain() returns them, so silence the log."""
    loggers = [logging.getLogger(name) for name in ("torch._dynamo", "torch._inductor")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def break_reason(reason: Any) -> str:
    """The first line of a graph break's reason and where in the code it happened."""
    text = (str(getattr(reason, "reason", reason)).strip().splitlines() or [""])[0]
    stack = getattr(reason, "user_stack", None) or []
    if stack:
        frame = stack[-1]
        filename = Path(frame.filename)
        with contextlib.suppress(ValueError):
            filename = filename.relative_to(ROOT)
        text += f" (at {filename}:{frame.lineno} in {frame.name})"
    return text


def part_graph_breaks(ctx: Context, data: dict[str, Any]) -> None:
    """torch._dynamo.explain of one training step's forward and causal LM loss, per attention backend."""
    backends = ["sdpa", "math"] + (["triton"] if ctx.device == "cuda" else [])
    data.update(config=GRAPH_CONFIG, batch=GRAPH_BATCH, device=ctx.device, backends={})
    failed = []
    for backend in backends:
        torch._dynamo.reset()
        config = ModelConfig(**GRAPH_CONFIG, attention=backend)
        model = Transformer(config, seed=0).to(ctx.device).train()
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, config.vocab_size, (GRAPH_BATCH, config.max_len), generator=generator).to(ctx.device)

        def step(ids: torch.Tensor, model: Transformer = model) -> torch.Tensor:
            return causal_lm_loss(model(ids), ids)

        result: dict[str, Any] = {}
        if backend == "triton":
            head = torch.empty(1, 1, 1, config.head_dim, device=ctx.device)
            result["triton_unsupported"] = triton_unsupported(head, head, 0.0)  # None: the kernel takes the call
        try:
            with quiet_dynamo():
                explanation = torch._dynamo.explain(step)(ids)
        except Exception as error:
            result["error"] = describe_error(error)
            failed.append(backend)
        else:
            result.update(
                graph_count=explanation.graph_count,
                graph_break_count=explanation.graph_break_count,
                break_reasons=[break_reason(r) for r in explanation.break_reasons],
            )
        data["backends"][backend] = result
    torch._dynamo.reset()
    if failed:
        raise CheckFailed(f"torch._dynamo.explain raised for {', '.join(failed)}")


def render_graph_breaks(data: dict[str, Any]) -> list[str]:
    cfg = data.get("config", {})
    lines = [
        f"`torch._dynamo.explain` of `causal_lm_loss(model(ids), ids)` (device {data.get('device')}, "
        f"{cfg.get('n_layers')} layer x {cfg.get('d_model')}, {cfg.get('n_heads')} heads, context "
        f"{cfg.get('max_len')}, batch {data.get('batch')}).",
        "",
        "| backend | graphs | graph breaks | break reasons |",
        "|---|---|---|---|",
    ]
    for backend, result in data.get("backends", {}).items():
        if "error" in result:
            lines.append(
                f"| {backend} | error | | {md_cell(result['error']['type'] + ': ' + result['error']['message'])} |"
            )
            continue
        reasons = "<br>".join(md_cell(r) for r in dict.fromkeys(result["break_reasons"])) or "none"
        lines.append(f"| {backend} | {result['graph_count']} | {result['graph_break_count']} | {reasons} |")
    return lines


def run_recorded(ctx: Context, data: dict[str, Any], command: list[str], limit_s: float) -> tuple[Completed, list[str]]:
    """Run a part's subprocess under min(limit_s, the budget left) and record the command, exit code, time and whether
    it timed out in `data`; returns it and its output's lines."""
    timeout = min(limit_s, max(ctx.clock.left(), 1.0))
    done = run_command(command, timeout)
    data.update(
        command=python_command(command),
        returncode=done.returncode,
        seconds=done.seconds,
        timed_out=done.timed_out,
        timeout_s=timeout,
    )
    return done, done.output.rstrip().splitlines()


# ---- 3. cuda-tests ---------------------------------------------------------------------------------------------------
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected|warnings?)\b")


def parse_pytest_summary(output: str) -> dict[str, int]:
    """{'passed': 40, 'skipped': 2, ...} from pytest's last summary line ("1 failed, 39 passed, 2 skipped in 9.1s")."""
    for line in reversed(output.strip().splitlines()):
        counts = PYTEST_COUNT.findall(line)
        if counts and re.search(r"\bin [\d.]+s", line):
            result: dict[str, int] = {}
            for number, word in counts:
                key = {"error": "errors", "warning": "warnings"}.get(word, word)
                result[key] = result.get(key, 0) + int(number)
            return result
    return {}


def part_cuda_tests(ctx: Context, data: dict[str, Any]) -> None:
    """The kernel's and attention's pytest files in a subprocess, on the GPU (smoke: test_attention.py on CPU)."""
    if importlib.util.find_spec("pytest") is None:
        raise Skipped("pytest is not installed")
    files = SMOKE_TESTS if ctx.smoke else CUDA_TEST_FILES
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *files]
    done, lines = run_recorded(ctx, data, command, CUDA_TESTS_TIMEOUT_S)
    data.update(
        counts=parse_pytest_summary(done.output),
        skip_reasons=[line for line in lines if line.startswith("SKIPPED")],
        failures=[line for line in lines if line.startswith(("FAILED", "ERROR"))],
        tail=lines[-40:],
    )
    if done.timed_out:
        raise CheckFailed(f"pytest ran past its {data['timeout_s']:.0f}s timeout")
    if done.returncode != 0:
        raise CheckFailed(f"pytest exited with {done.returncode}: {lines[-1] if lines else 'no output'}")


def render_cuda_tests(data: dict[str, Any]) -> list[str]:
    counts = ", ".join(f"{n} {word}" for word, n in data.get("counts", {}).items()) or "no summary line"
    lines = [
        f"`{data.get('command')}`: {counts} in {data.get('seconds', 0):.0f}s (exit code {data.get('returncode')})."
    ]
    if data.get("skip_reasons"):
        lines += ["", "Skipped:", ""] + [f"- `{md_cell(line)}`" for line in data["skip_reasons"]]
    if data.get("failures") or data.get("timed_out") or data.get("returncode"):
        lines += ["", "```text", *data.get("tail", []), "```"]
    return lines


# ---- 4. kernel-check -------------------------------------------------------------------------------------------------
def part_kernel_check(ctx: Context, data: dict[str, Any]) -> None:
    """out, dQ, dK, dV of the kernel against `math` in float32 on the same (rounded) inputs and upstream gradient."""
    cfg = SMOKE_KERNEL_CHECK if ctx.smoke else KERNEL_CHECK
    backend = cfg["backend"]
    data.update(
        backend=backend,
        reference="math in float32",
        rule="|kernel - math| <= tol + tol |math| elementwise",
        tolerance=TOLERANCE,
        T=cfg["T"],
        batch=cfg["batch"],
        heads=cfg["heads"],
        prefix=cfg["prefix"],
        cases=[],
    )
    failed = 0
    for dtype in cfg["dtypes"]:
        tol = TOLERANCE[dtype]
        for d_k in cfg["head_dims"]:
            for case in attention_bench.CASES:
                q, k, v, key_mask, causal = attention_bench.make_inputs(
                    case,
                    cfg["batch"],
                    cfg["heads"],
                    cfg["T"],
                    d_k,
                    cfg["prefix"],
                    attention_bench.DTYPES[dtype],
                    ctx.device,
                )
                row: dict[str, Any] = dict(dtype=dtype, d_k=d_k, case=case, tol=tol)
                data["cases"].append(row)
                if backend == "triton" and (reason := triton_unsupported(q, k, 0.0)) is not None:
                    row.update(ok=False, error=f"the kernel would not take the call ({reason}): it would run sdpa")
                    failed += 1
                    continue
                try:
                    row.update(compare_to_math(backend, q, k, v, causal, key_mask, tol))
                except Exception as error:  # a kernel that does not compile or launch: this case fails, the rest run
                    row.update(ok=False, error=f"{type(error).__name__}: {describe_error(error)['message']}")
                failed += not row["ok"]
    if failed:
        raise CheckFailed(f"{failed} of {len(data['cases'])} cases outside the tolerance")


def compare_to_math(
    backend: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, key_mask: Tensor | None, tol: float
) -> dict[str, Any]:
    """Max abs error and max error / (tol + tol |math|) of out, dq, dk, dv, and ok (every ratio <= 1)."""
    generator = torch.Generator(device=q.device).manual_seed(1)
    dout = torch.randn(q.shape, generator=generator, device=q.device, dtype=q.dtype)
    ours = outputs_and_grads(backend, q, k, v, causal, key_mask, dout)
    reference = outputs_and_grads("math32", q, k, v, causal, key_mask, dout)
    result: dict[str, Any] = {"ok": True}
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, reference):
        error = (a.float() - b).abs()
        result[f"{name}_max_abs_err"] = error.max().item()
        result[f"{name}_err_over_tol"] = (error / (tol + tol * b.abs())).max().item()
        result["ok"] &= result[f"{name}_err_over_tol"] <= 1.0
    return result


def outputs_and_grads(
    backend: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, key_mask: Tensor | None, dout: Tensor
) -> tuple[Tensor, ...]:
    """(out, dQ, dK, dV) of one backend; "math32" is `math` on float32 copies (the reference)."""
    if backend == "math32":
        q, k, v, dout = (t.detach().float() for t in (q, k, v, dout))
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    if backend == "math32":
        out = math_attention(q, k, v, causal, key_mask, 0.0)
    else:
        out = attention_bench.attention(q, k, v, causal, key_mask, 0.0, backend)
    return (out.detach(), *torch.autograd.grad(out, (q, k, v), dout))


def render_kernel_check(data: dict[str, Any]) -> list[str]:
    lines = [
        f"`{data.get('backend')}` against {data.get('reference')}: B={data.get('batch')}, h={data.get('heads')}, "
        f"T={data.get('T')} (P={data.get('prefix')} prefix keys in the prefix case, 1/8 of each row padded); "
        f"pass when {data.get('rule')}, tol = "
        + ", ".join(f"{v:g} ({k})" for k, v in data.get("tolerance", {}).items())
        + ". Max abs error per tensor:",
        "",
        "| dtype | d_k | case | out | dQ | dK | dV | worst err / tol | pass |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data.get("cases", []):
        if "error" in row:
            lines.append(f"| {row['dtype']} | {row['d_k']} | {row['case']} | {md_cell(row['error'])} | | | | | no |")
            continue
        errors = " | ".join(f"{row[f'{name}_max_abs_err']:.2e}" for name in ("out", "dq", "dk", "dv"))
        worst = max(row[f"{name}_err_over_tol"] for name in ("out", "dq", "dk", "dv"))
        ok = "yes" if row["ok"] else "**no**"
        lines.append(f"| {row['dtype']} | {row['d_k']} | {row['case']} | {errors} | {worst:.2f} | {ok} |")
    return lines


# ---- 5. attention ----------------------------------------------------------------------------------------------------
def geometric_mean(values: Sequence[float]) -> float | None:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else None


def attention_goals(rows: Sequence[dict[str, Any]], candidate: str = "triton") -> list[dict[str, Any]]:
    """The kernel's goals from bench_case rows, each {goal, text, rule, ratios (per dtype, T, d_k), geomean, status}:

    (a) fwd+bwd speed >= 0.8x sdpa on plain causal attention, (b) >= 1.5x sdpa on prefix+causal+padding: speed ratio
        = sdpa ms / triton ms; met when the geometric mean over every measured (dtype, T, d_k) reaches the target.
    (c) peak memory linear in T: peak(2T) / peak(T) of the kernel's fwd+bwd for each doubling of T (2 = linear,
        4 = quadratic), per dtype, case and d_k; met when every ratio is <= 2.5.
    A goal with no measured pair is "not measured".
    """
    timed = {(r["dtype"], r["case"], r["T"], r["d_k"], r["backend"]): r for r in rows if "fwd_bwd_ms" in r}
    goals = []
    for goal, case, target in SPEED_GOALS:
        ratios = []
        for (dtype, row_case, T, d_k, backend), row in timed.items():
            peer = timed.get((dtype, row_case, T, d_k, "sdpa"))
            if backend == candidate and row_case == case and peer is not None:
                ratio = peer["fwd_bwd_ms"] / row["fwd_bwd_ms"]
                ratios.append(dict(dtype=dtype, T=T, d_k=d_k, ratio=ratio, ok=ratio >= target))
        mean = geometric_mean([r["ratio"] for r in ratios])
        goals.append(
            dict(
                goal=goal,
                text=f"{candidate} fwd+bwd >= {target}x sdpa on {case}",
                rule=f"geometric mean of sdpa ms / {candidate} ms over every (dtype, T, d_k) >= {target}",
                target=target,
                ratios=ratios,
                geomean=mean,
                sizes_met=f"{sum(r['ok'] for r in ratios)}/{len(ratios)}",
                status="not measured" if mean is None else ("met" if mean >= target else "not met"),
            )
        )
    ratios = []
    peaks = {key: row["peak_mib"] for key, row in timed.items() if key[4] == candidate and row.get("peak_mib")}
    for (dtype, case, T, d_k, backend), peak in sorted(peaks.items()):
        doubled = peaks.get((dtype, case, 2 * T, d_k, backend))
        if doubled is not None:
            ratio = doubled / peak
            ratios.append(
                dict(dtype=dtype, case=case, d_k=d_k, T=T, T2=2 * T, ratio=ratio, ok=ratio <= MEMORY_GOAL_MAX_RATIO)
            )
    worst = max((r["ratio"] for r in ratios), default=None)
    goals.append(
        dict(
            goal="c",
            text=f"{candidate} peak memory roughly linear in T",
            rule=f"every peak(2T) / peak(T) <= {MEMORY_GOAL_MAX_RATIO} (linear: 2, quadratic: 4)",
            target=MEMORY_GOAL_MAX_RATIO,
            ratios=ratios,
            geomean=geometric_mean([r["ratio"] for r in ratios]),
            max=worst,
            sizes_met=f"{sum(r['ok'] for r in ratios)}/{len(ratios)}",
            status="not measured" if worst is None else ("met" if worst <= MEMORY_GOAL_MAX_RATIO else "not met"),
        )
    )
    return goals


def part_attention(ctx: Context, data: dict[str, Any]) -> None:
    """bench/attention.py's grid, case by case (bench_case), with the goals recomputed and the report saved after
    each case; stops between cases when out of time and lists the cases it skipped."""
    grid = SMOKE_ATTENTION_GRID if ctx.smoke else ATTENTION_GRID
    data.update(settings=grid, rows=[], skipped_cases=[], goals=attention_goals([]))
    for dtype in grid["dtypes"]:
        for case in grid["cases"]:
            for T in grid["seq_lens"]:
                for d_k in grid["head_dims"]:
                    if (reason := ctx.out_of_time()) is not None:
                        data["skipped_cases"].append(dict(dtype=dtype, case=case, T=T, d_k=d_k, reason=reason))
                        continue
                    data["rows"] += attention_bench.bench_case(
                        case,
                        T,
                        d_k,
                        grid["backends"],
                        batch=grid["batch"],
                        heads=grid["heads"],
                        prefix_len=grid["prefix_len"],
                        dtype=dtype,
                        device=ctx.device,
                        repeats=grid["repeats"],
                        max_math_len=grid["max_math_len"],
                    )
                    data["goals"] = attention_goals(data["rows"])
                    ctx.save()


def render_attention(data: dict[str, Any]) -> list[str]:
    s = data.get("settings", {})
    lines = [
        f"B={s.get('batch')}, h={s.get('heads')}, prefix length {s.get('prefix_len')} in the prefix case, 1/8 of each "
        f"row padded; median of {s.get('repeats')} runs after 2 warm-up calls"
        + (f"; math skipped above T={s['max_math_len']}" if s.get("max_math_len") else "")
        + ". TFLOP/s count the attention matmuls (causal halved, backward 2.5x forward); "
        "peak MiB is the most memory allocated during forward+backward; vs math / vs sdpa are forward+backward "
        "speed ratios.",
        "",
        "#### Goals",
        "",
        "| goal | status | geometric mean | per (dtype, T, d_k) | rule |",
        "|---|---|---|---|---|",
    ]
    for goal in data.get("goals", []):
        if goal["goal"] == "c":
            per = ", ".join(
                f"{r['dtype']} {r['case']} d{r['d_k']} {r['T']}->{r['T2']}: {r['ratio']:.2f}" for r in goal["ratios"]
            )
            mean = f"{fmt(goal['geomean'])} (max {fmt(goal['max'])})"
        else:
            per = ", ".join(f"{r['dtype']} T={r['T']} d{r['d_k']}: {r['ratio']:.2f}x" for r in goal["ratios"])
            mean = fmt(goal["geomean"], ".2f") + ("x" if goal["geomean"] is not None else "")
        lines.append(
            f"| ({goal['goal']}) {goal['text']} | **{goal['status']}** ({goal['sizes_met']}) | {mean} | "
            f"{per or '-'} | {goal['rule']} |"
        )
    if data.get("skipped_cases"):
        skipped = data["skipped_cases"]
        lines += [
            "",
            f"Stopped early ({skipped[0]['reason']}): {len(skipped)} cases not run: "
            + ", ".join(f"{c['dtype']} {c['case']} T={c['T']} d{c['d_k']}" for c in skipped),
        ]
    for dtype in dict.fromkeys(row["dtype"] for row in data.get("rows", [])):
        lines += ["", f"#### {dtype}", "", *attention_bench.TABLE_HEADER]
        lines += [attention_bench.table_row(row) for row in data["rows"] if row["dtype"] == dtype]
    return lines


# ---- 6. tiles --------------------------------------------------------------------------------------------------------
def part_tiles(ctx: Context, data: dict[str, Any]) -> None:
    """Time the Triton kernels with other tiles: one kernel's (BLOCK_M, BLOCK_N, warps) at a time, the others at
    default_tiles; the forward kernel by forward time, dK/dV and dQ by forward+backward time."""
    from minilm.model.kernels.flash_attention import FlashAttention, default_tiles

    sweep = TILE_SWEEP
    dtype = attention_bench.DTYPES[sweep["dtype"]]
    defaults = default_tiles(dtype)
    data.update(settings=sweep, defaults=dict(zip(TILE_KERNELS, defaults)), rows=[], skipped=[], best=[])
    for d_k in sweep["head_dims"]:
        q, k, v, _, _ = attention_bench.make_inputs(
            "causal", sweep["batch"], sweep["heads"], sweep["T"], d_k, 0, dtype, ctx.device
        )
        for index, kernel in enumerate(TILE_KERNELS):
            for config in dict.fromkeys([tuple(defaults[index]), *sweep[kernel]]):  # the default first
                row: dict[str, Any] = dict(
                    kernel=kernel, d_k=d_k, tiles=config, default=config == tuple(defaults[index])
                )
                if (reason := ctx.out_of_time()) is not None:
                    data["skipped"].append(dict(row, reason=reason))
                    continue
                data["rows"].append(row)
                tiles = tuple(config if i == index else defaults[i] for i in range(3))
                try:
                    row.update(
                        time_tiles(FlashAttention, q, k, v, tiles, kernel == "forward", sweep["repeats"], ctx.device)
                    )
                except Exception as error:  # a tile that does not compile or fit (shared memory, registers)
                    row["error"] = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
                ctx.save()
            data["best"].append(best_tiles(data["rows"], kernel, d_k))


def time_tiles(
    flash: Any, q: Tensor, k: Tensor, v: Tensor, tiles: tuple, time_forward: bool, repeats: int, device: str
) -> dict[str, float]:
    """fwd_ms (when asked) and fwd_bwd_ms of causal FlashAttention.apply with these tiles."""
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

    def forward() -> None:
        with torch.no_grad():
            flash.apply(qg, kg, vg, True, None, tiles)

    def forward_backward() -> None:
        flash.apply(qg, kg, vg, True, None, tiles).sum().backward()

    result = {"fwd_ms": attention_bench.time_ms(forward, repeats, device)} if time_forward else {}
    result["fwd_bwd_ms"] = attention_bench.time_ms(forward_backward, repeats, device)
    return result


def best_tiles(rows: Sequence[dict[str, Any]], kernel: str, d_k: int) -> dict[str, Any]:
    """The fastest tiles of one kernel and head dim next to the default, by fwd_ms (forward) or fwd_bwd_ms."""
    metric = "fwd_ms" if kernel == "forward" else "fwd_bwd_ms"
    timed = [r for r in rows if r["kernel"] == kernel and r["d_k"] == d_k and metric in r]
    default = next((r for r in timed if r["default"]), None)
    best = min(timed, key=lambda r: r[metric], default=None)
    return dict(
        kernel=kernel,
        d_k=d_k,
        metric=metric,
        default_tiles=default["tiles"] if default else None,
        default_ms=default[metric] if default else None,
        best_tiles=best["tiles"] if best else None,
        best_ms=best[metric] if best else None,
        speedup=default[metric] / best[metric] if default and best else None,
    )


def render_tiles(data: dict[str, Any]) -> list[str]:
    s = data.get("settings", {})
    lines = [
        f"{s.get('dtype')}, causal, B={s.get('batch')}, h={s.get('heads')}, T={s.get('T')}; tiles are (BLOCK_M, "
        f"BLOCK_N, warps); one kernel's tiles vary, the others stay at default_tiles; median of {s.get('repeats')} "
        "runs. The forward kernel is ranked by forward time, dK/dV and dQ by forward+backward time.",
        "",
        "| kernel | d_k | default tiles | default ms | fastest tiles | fastest ms | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in data.get("best", []):
        lines.append(
            f"| {b['kernel']} | {b['d_k']} | {b['default_tiles']} | {fmt(b['default_ms'])} | {b['best_tiles']} | "
            f"{fmt(b['best_ms'])} | {fmt(b['speedup'])}x |"
        )
    lines += ["", "| kernel | d_k | tiles | fwd ms | fwd+bwd ms | note |", "|---|---|---|---|---|---|"]
    for row in data.get("rows", []):
        note = md_cell(row.get("error", "default" if row["default"] else ""))
        lines.append(
            f"| {row['kernel']} | {row['d_k']} | {row['tiles']} | {fmt(row.get('fwd_ms'))} | "
            f"{fmt(row.get('fwd_bwd_ms'))} | {note} |"
        )
    if data.get("skipped"):
        lines += ["", f"Stopped early ({data['skipped'][0]['reason']}): {len(data['skipped'])} configurations not run."]
    return lines


# ---- 7. throughput ---------------------------------------------------------------------------------------------------
def part_throughput(ctx: Context, data: dict[str, Any]) -> None:
    """bench/train_throughput.py at GPT-2-small size: minilm and GPT-2, eager and compiled, in one round-robin."""
    cfg = SMOKE_THROUGHPUT if ctx.smoke else THROUGHPUT
    size = throughput_bench.Size(*cfg["size"])
    models, extra_models = list(cfg["models"]), list(cfg["extra_models"])
    data["settings"] = dict(cfg, size=size.name, n_heads=size.n_heads, head_dim=size.head_dim, vocab=size.vocab_size)
    if version_of("transformers") is None:
        models, extra_models = [m for m in models if m != "gpt2"], [m for m in extra_models if m != "gpt2"]
        data["peer"] = "skipped: transformers is not installed"
    specs = throughput_bench.specs(models, [cfg["precision"]], [cfg["optimizer"]], list(cfg["modes"]))
    specs += [throughput_bench.Spec(m, cfg["precision"], cfg["optimizer"], "eager") for m in extra_models]
    torch._dynamo.reset()
    peaks = throughput_bench.measure_peaks(ctx.device, [cfg["precision"]], cfg["peak_size"])
    device_name = torch.cuda.get_device_name() if ctx.device == "cuda" else ""
    data.update(
        measured_peak_flops=peaks[cfg["precision"]],
        datasheet_peak_flops=throughput_bench.datasheet_peak(device_name, cfg["precision"]),
        device_name=device_name or None,
    )
    try:
        with quiet_dynamo():
            rows = throughput_bench.benchmark(
                size, cfg["batch"], specs, ctx.device, cfg["steps"], cfg["warmup"], peaks, cfg["compile_backend"]
            )
    finally:
        torch._dynamo.reset()  # the compiled graphs go, and the GPU memory they hold with them
    for row in rows:
        if "tokens_per_s" in row:  # a 10-minute run's tokens, its warm-up (compilation) counted against it
            row["tokens_in_10_min"] = max(0.0, 600.0 - row["warmup_s"]) * row["tokens_per_s"]
    data["rows"] = rows
    errors = [f"{r['model']} {r['mode']}: {r['error']}" for r in rows if "error" in r]
    if errors:
        raise CheckFailed("; ".join(errors))


def render_throughput(data: dict[str, Any]) -> list[str]:
    s = data.get("settings", {})
    sheet = data.get("datasheet_peak_flops")
    lines = [
        f"Config {s.get('size')} (layers x width x context), {s.get('n_heads')} heads of {s.get('head_dim')}, "
        f"vocabulary {s.get('vocab')}, batch {s.get('batch')}, {s.get('precision')}, {s.get('optimizer')} AdamW; "
        f"{s.get('warmup')} warm-up steps (compilation happens there: `warm-up s`), then {s.get('steps')} timed "
        f"steps round-robin (median). torch.compile backend: {s.get('compile_backend')}.",
        "",
        f"MFU = (6N + 12LTd) x tokens/s over the measured {s.get('precision')} matmul peak "
        f"({fmt(data.get('measured_peak_flops', 0) / 1e12, '.1f')} TFLOP/s, {s.get('peak_size')}^3) and, `MFU "
        "(datasheet)`, over "
        + (
            f"the datasheet's dense bf16 peak ({sheet / 1e12:.1f} TFLOP/s)."
            if sheet
            else "no datasheet peak (unknown GPU)."
        ),
    ]
    if data.get("peer"):
        lines += ["", f"GPT-2 peer {data['peer']}."]
    rows = data.get("rows", [])
    lines += ["", *throughput_bench.TABLE_HEADER, *[throughput_bench.table_row(r) for r in rows]]
    lines += [
        "",
        "| model | mode | warm-up s | tokens/s | tokens in a 10-minute run (warm-up counted) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "tokens_per_s" in r:
            lines.append(
                f"| {r['model']} | {r['mode']} | {r['warmup_s']:.1f} | {r['tokens_per_s']:,.0f} | "
                f"{r['tokens_in_10_min'] / 1e6:,.1f} M |"
            )
    return lines


# ---- 8. pretrain -----------------------------------------------------------------------------------------------------
def part_pretrain(ctx: Context, data: dict[str, Any]) -> None:
    """`python train.py pretrain` for two minutes on data/ (smoke: 3 steps of a tiny model on 40 kB of it) in a
    subprocess; tokens/s from metrics.jsonl and the final bits per byte."""
    run_dir, cache = ctx.work / "pretrain", ctx.work / "cache"
    command = [sys.executable, "train.py", "pretrain", "--device", ctx.device, "--out", str(run_dir)]
    command += ["--cache-dir", str(cache), "--overwrite"]
    if ctx.smoke:
        corpus = ctx.work / "smoke_corpus.txt"
        with open(ROOT / "data" / "tinyshakespeare.txt", "rb") as source:
            corpus.write_bytes(source.read(SMOKE_CORPUS_BYTES))
        command += [*SMOKE_PRETRAIN_FLAGS, "--data", str(corpus)]
    else:
        command += ["--time-budget", PRETRAIN_BUDGET]
    done, lines = run_recorded(ctx, data, command, PRETRAIN_TIMEOUT_S)
    data.update(
        run_dir=str(run_dir),
        lines=[line for line in lines if line.startswith(("preset", "minilm:", "data:", "time budget", "done:"))],
        tail=lines[-25:],
    )
    data.update(read_metrics(run_dir / "metrics.jsonl"))
    if done.timed_out:
        raise CheckFailed(f"train.py pretrain ran past its {data['timeout_s']:.0f}s timeout")
    if done.returncode != 0:
        raise CheckFailed(f"train.py pretrain exited with {done.returncode}: {lines[-1] if lines else 'no output'}")
    if data.get("bits_per_byte") is None:
        raise CheckFailed("metrics.jsonl has no val_full_best record with bits_per_byte")


def read_metrics(path: Path) -> dict[str, Any]:
    """tokens/s (median and last of the progress records), steps and the final bits per byte from metrics.jsonl."""
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    speeds = [r["tokens_per_s"] for r in records if r.get("split") == "train" and "tokens_per_s" in r]
    final = next((r for r in reversed(records) if r.get("split") == "val_full_best"), {})
    return dict(
        tokens_per_s_median=statistics.median(speeds) if speeds else None,
        tokens_per_s_last=speeds[-1] if speeds else None,
        steps=max((r.get("step", 0) for r in records), default=None),
        bits_per_byte=final.get("bits_per_byte"),
        val_loss=final.get("loss"),
    )


def render_pretrain(data: dict[str, Any]) -> list[str]:
    lines = [
        f"`{data.get('command')}`: {data.get('steps')} steps, {fmt(data.get('tokens_per_s_median'), ',.0f')} tokens/s "
        f"(median of the progress lines; last {fmt(data.get('tokens_per_s_last'), ',.0f')}), final validation "
        f"**{fmt(data.get('bits_per_byte'), '.3f')} bits per byte** (loss {fmt(data.get('val_loss'), '.4f')} per "
        f"token), {data.get('seconds', 0):.0f}s in all.",
        "",
        "```text",
        *data.get("lines", []),
        "```",
    ]
    if data.get("returncode") or data.get("timed_out"):
        lines += ["", "```text", *data.get("tail", []), "```"]
    return lines


# ---- the parts and the command line ----------------------------------------------------------------------------------
TILES_SMOKE_SKIP = "not in --smoke: the sweep times compiled Triton kernels, and the CPU interpreter measures no speed"

# Estimates (seconds): on one H200 they are guesses made before any GPU run (Triton and inductor compile times
# included; kernel-check compiles the kernel variants the attention grid then reuses); --smoke's were measured on a
# 2-core CPU. Together the H200 estimates come to about the default budget, so pretrain, the last, runs only when
# the parts before it took no longer than estimated: `--parts pretrain` runs it alone.
PARTS = (
    Part("environment", False, 2, 0, part_environment, render_environment),
    Part("graph-breaks", False, 15, 5, part_graph_breaks, render_graph_breaks),
    Part("cuda-tests", True, 90, 5, part_cuda_tests, render_cuda_tests),
    Part("kernel-check", True, 45, 2, part_kernel_check, render_kernel_check),
    Part("attention", True, 60, 3, part_attention, render_attention),
    Part("tiles", True, 45, 0, part_tiles, render_tiles, smoke_skip=TILES_SMOKE_SKIP),
    Part("throughput", True, 90, 6, part_throughput, render_throughput),
    Part("pretrain", True, 140, 7, part_pretrain, render_pretrain),
)
PART_NAMES = tuple(p.name for p in PARTS)


class Terminated(BaseException):
    """SIGTERM (a timeout's first signal): stop the running part, record it, write the report."""


def on_sigterm(signum: int, frame: Any) -> None:
    for child in list(_children):
        kill_group(child)
    raise Terminated(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole run (default: %(default)s)"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PART_NAMES,
        default=list(PART_NAMES),
        metavar="PART",
        help=f"run only these, in the fixed order ({', '.join(PART_NAMES)}; default: all)",
    )
    parser.add_argument("--smoke", action="store_true", help="every part at tiny sizes on the CPU: no measurements")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where the pretraining run goes (default: a new temporary folder)"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", *(sys.argv if argv is None else ["bench/gpu_check.py", *argv])])
    options = Options(args.out, args.budget, args.smoke, args.work_dir, command)
    parts = [p for p in PARTS if p.name in args.parts]
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        report = run(parts, options)
    except (KeyboardInterrupt, Terminated) as stop:
        print(f"stopped ({type(stop).__name__}); the report holds what was measured: {args.out}", flush=True)
        return 1
    failed = [p["name"] for p in report["parts"] if p["status"] == "failed"]
    print(
        f"[{Clock(options.budget_s).elapsed():6.1f}s] done: "
        + (f"failed: {', '.join(failed)}" if failed else "no part failed")
        + f"; report in {args.out / 'gpu_check.md'} and {args.out / 'gpu_check.json'}",
        flush=True,
    )
    return exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
