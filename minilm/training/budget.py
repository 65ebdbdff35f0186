"""A run sized by time: how many steps fit in a time budget, measured on the machine that trains.

    S = the largest S with   S t + ceil(S / E) c  <=  B - m
    W = min(warmup_steps, floor(S / 10))          E = min(max(eval_every, ceil(S / 20)), max(1, floor(S / 5)))

B is the budget, m the seconds spent measuring, t the seconds of one optimizer step and c of one evaluation with
its checkpoint, both measured on the first steps of the run itself (minilm.training.loop: `Loop.plan`). S fixes the
cosine schedule's length, the warm-up W is at most a tenth of the run, and the run evaluates every E steps: as near
`eval_every` as keeps between 5 and 20 evaluations. A faster machine trains more steps in the same time; the steps
decided are recorded with the run, so resuming it is exact.

Docs: docs/training.md (a run sized by time).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def parse_duration(text: str) -> float:
    """Seconds in a duration written as `90s`, `10m`, `1h30m` or `1.5h` (a bare number counts seconds)."""
    cleaned = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        seconds = float(cleaned)
    elif cleaned and DURATION.sub("", cleaned) == "":
        seconds = sum(float(n) * UNITS[unit] for n, unit in DURATION.findall(cleaned))
    else:
        raise ValueError(f"--time-budget must be a duration such as 90s, 10m or 1h30m, got {text!r}")
    if seconds <= 0:
        raise ValueError(f"--time-budget must be longer than 0 seconds, got {text!r}")
    return seconds


def duration(text: str) -> str:
    """The text of a valid duration, unchanged (how --time-budget is read and saved): one line when it is not."""
    parse_duration(text)
    return str(text).strip()


def format_duration(seconds: float) -> str:
    """`9m58s`, or `1h02m` past an hour."""
    seconds = round(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def eval_cadence(steps: int, eval_every: int) -> int:
    """E = min(max(eval_every, ceil(S / 20)), max(1, floor(S / 5))): between 5 and 20 evaluations in S steps."""
    return min(max(eval_every, math.ceil(steps / 20)), max(1, steps // 5))


def run_cost(steps: int, step_s: float, eval_s: float, eval_every: int) -> float:
    """Seconds of S steps with an evaluation every E steps and at the end: S t + ceil(S / E) c."""
    return steps * step_s + math.ceil(steps / eval_every) * eval_s


@dataclass(frozen=True)
class Plan:
    """What a time budget decided, and from what it was measured."""

    budget_s: float
    measured_s: float
    """m: the part of the budget spent measuring (the measuring steps are undone: the run starts from step 0)."""
    step_s: float
    eval_s: float
    measured_steps: int
    max_steps: int
    warmup_steps: int
    eval_every: int

    def describe(self) -> str:
        """The line a run prints when it has decided."""
        return (
            f"time budget {format_duration(self.budget_s)}: a step takes {self.step_s:.3g} s and an evaluation with "
            f"its checkpoint {self.eval_s:.3g} s (measured on {self.measured_steps} steps, undone), so "
            f"{self.max_steps:,} steps fit in the {format_duration(self.budget_s - self.measured_s)} left: warm-up "
            f"{self.warmup_steps}, evaluation every {self.eval_every} steps"
        )

    def settings(self) -> dict[str, object]:
        """What the run's settings file records, so --resume continues the same schedule."""
        return {"max_steps": self.max_steps, "warmup_steps": self.warmup_steps, "eval_every": self.eval_every}

    def record(self) -> dict[str, object]:
        """The measurements behind the decision (kept beside the settings, for the record)."""
        return {
            "budget_s": self.budget_s,
            "measured_s": round(self.measured_s, 3),
            "step_s": self.step_s,
            "eval_s": self.eval_s,
            "measured_steps": self.measured_steps,
        }


def plan_steps(
    budget_s: float,
    measured_s: float,
    step_s: float,
    eval_s: float,
    measured_steps: int,
    warmup_steps: int,
    eval_every: int,
) -> Plan:
    """The Plan of the module docstring: the most steps S whose cost fits in the budget left after measuring."""
    left = budget_s - measured_s

    def fits(steps: int) -> bool:
        return run_cost(steps, step_s, eval_s, eval_cadence(steps, eval_every)) <= left

    low, high = 0, max(0, math.floor(left / step_s)) + 1  # fits(low); not fits(high): no step is free
    while high - low > 1:  # the cost grows with S (up to an evaluation where the cadence widens): bisect ...
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    steps = low
    while fits(steps + 1):  # ... then take any step that still fits past a widening
        steps += 1
    if steps < 1:
        raise ValueError(
            f"a time budget of {format_duration(budget_s)} fits no training step here (a step takes {step_s:.3g} s, "
            f"an evaluation {eval_s:.3g} s, measuring took {measured_s:.3g} s): give a longer --time-budget, or "
            "--max-steps"
        )
    return Plan(
        budget_s=budget_s,
        measured_s=measured_s,
        step_s=step_s,
        eval_s=eval_s,
        measured_steps=measured_steps,
        max_steps=steps,
        warmup_steps=min(warmup_steps, steps // 10),
        eval_every=eval_cadence(steps, eval_every),
    )


def measuring_seconds(budget_s: float) -> float:
    """How long the first steps are timed: 2% of the budget, between 0.5 and 10 seconds."""
    return min(max(0.02 * budget_s, 0.5), 10.0)


def run_length(given: dict[str, object], resume: bool) -> dict[str, object]:
    """The settings the flags `--max-steps` / `--time-budget` imply: one of them sizes a new run, never both.

    A given time budget clears the default step count; a given step count clears the default time budget; a resumed
    run keeps the steps its start decided (`--max-steps` may still change them).
    """
    if "time_budget" in given and resume:
        raise ValueError(
            "--time-budget sizes a new run; a resumed run continues to the step count its start decided: drop "
            "--time-budget, or give --max-steps to train to another step"
        )
    if "time_budget" in given and "max_steps" in given:
        raise ValueError("give --max-steps (a fixed step count) or --time-budget (steps that fit the time), not both")
    if "time_budget" in given:
        return {"max_steps": None}
    if "max_steps" in given:
        return {"time_budget": None}
    return {}
