"""Tensor memory: the peak bytes a piece of work allocates, on CPU (profiler events) or CUDA (allocator stats).

Docs: docs/performance.md (the cost of every tuning method).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable

import torch
from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null for the duration (Python-level errors are raised, not printed, here)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Run fn() under the profiler; the maximum running sum of CPU allocation (+) and free (-) bytes.

    PyTorch keeps no high-water mark for CPU tensors; the profiler records every allocation and free with a
    timestamp, and their running sum in time order is the live tensor bytes above the level at the start.
    """
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # the profiler's C++ side prints start/stop lines on the process's stderr
        prof.__enter__()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)
    results = getattr(prof.profiler, "kineto_results", None)
    if results is not None:  # raw events: one per allocation or free, with its own timestamp
        deltas = [
            (e.start_ns(), e.nbytes())
            for e in results.events()
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        ]
    else:  # older profilers: the same events through the FunctionEvent list
        deltas = [(e.time_range.start, e.cpu_memory_usage) for e in prof.events() if e.cpu_memory_usage]
    level = peak = 0
    for _, nbytes in sorted(deltas, key=lambda d: d[0]):
        level += nbytes
        peak = max(peak, level)
    return peak


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Most bytes fn() holds above what was live when it started: CUDA allocator statistics, or `cpu_peak_bytes`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return cpu_peak_bytes(fn)


def tensor_bytes(tensors: Iterable[object]) -> int:
    """Bytes of the distinct storages behind `tensors` (a tied tensor counts once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
