"""Exercises of a run sized by time (the steps that fit a budget) and of valid UTF-8 generation (one byte's step).

Docs: docs/course.md (the exercises).
"""

from __future__ import annotations

import dataclasses
import math

from minilm.exercises.exercise import Exercise
from minilm.model.utf8 import BETWEEN, State
from minilm.training.budget import Plan, eval_cadence, run_cost


# ---- UTF-8: the state after one byte --------------------------------------------------------------------------------
def step_allowing_surrogates(state: State, byte: int) -> State | None:
    """ED followed by A0-BF accepted: the surrogates D800-DFFF, which UTF-8 never encodes."""
    need, lo, hi = state
    if need:
        return (need - 1, 0x80, 0xBF) if lo <= byte <= hi else None
    if byte < 0x80:
        return BETWEEN
    if 0xC2 <= byte <= 0xDF:
        return (1, 0x80, 0xBF)
    if 0xE0 <= byte <= 0xEF:
        return (2, 0xA0 if byte == 0xE0 else 0x80, 0xBF)
    if 0xF0 <= byte <= 0xF4:
        return (3, 0x90 if byte == 0xF0 else 0x80, 0x8F if byte == 0xF4 else 0xBF)
    return None


def step_allowing_overlongs(state: State, byte: int) -> State | None:
    """C0, C1 and E0 80-9F, F0 80-8F accepted: overlong forms of characters that have a shorter encoding."""
    need, lo, hi = state
    if need:
        return (need - 1, 0x80, 0xBF) if lo <= byte <= hi else None
    if byte < 0x80:
        return BETWEEN
    if 0xC0 <= byte <= 0xDF:
        return (1, 0x80, 0xBF)
    if 0xE0 <= byte <= 0xEF:
        return (2, 0x80, 0x9F if byte == 0xED else 0xBF)
    if 0xF0 <= byte <= 0xF4:
        return (3, 0x80, 0x8F if byte == 0xF4 else 0xBF)
    return None


def step_past_10ffff(state: State, byte: int) -> State | None:
    """Lead bytes F5-F7 accepted, and anything after F4: code points past U+10FFFF."""
    need, lo, hi = state
    if need:
        return (need - 1, 0x80, 0xBF) if lo <= byte <= hi else None
    if byte < 0x80:
        return BETWEEN
    if 0xC2 <= byte <= 0xDF:
        return (1, 0x80, 0xBF)
    if 0xE0 <= byte <= 0xEF:
        return (2, 0xA0 if byte == 0xE0 else 0x80, 0x9F if byte == 0xED else 0xBF)
    if 0xF0 <= byte <= 0xF7:
        return (3, 0x90 if byte == 0xF0 else 0x80, 0xBF)
    return None


WELL_FORMED = {  # the Unicode standard's table of well-formed sequences: lead bytes -> ranges of the bytes after
    range(0xC2, 0xE0): ((0x80, 0xBF),),
    range(0xE0, 0xE1): ((0xA0, 0xBF), (0x80, 0xBF)),
    range(0xE1, 0xED): ((0x80, 0xBF), (0x80, 0xBF)),
    range(0xED, 0xEE): ((0x80, 0x9F), (0x80, 0xBF)),
    range(0xEE, 0xF0): ((0x80, 0xBF), (0x80, 0xBF)),
    range(0xF0, 0xF1): ((0x90, 0xBF), (0x80, 0xBF), (0x80, 0xBF)),
    range(0xF1, 0xF4): ((0x80, 0xBF), (0x80, 0xBF), (0x80, 0xBF)),
    range(0xF4, 0xF5): ((0x80, 0x8F), (0x80, 0xBF), (0x80, 0xBF)),
}


def step_by_table(state: State, byte: int) -> State | None:
    """One byte read against the table of well-formed byte sequences."""
    need, lo, hi = state
    if need:
        return (need - 1, 0x80, 0xBF) if lo <= byte <= hi else None
    if byte <= 0x7F:
        return BETWEEN
    for leads, after in WELL_FORMED.items():
        if byte in leads:
            return (len(after), *after[0])
    return None


# ---- the steps that fit a time budget --------------------------------------------------------------------------------
def plan_ignoring_evaluations(
    budget_s: float,
    measured_s: float,
    step_s: float,
    eval_s: float,
    measured_steps: int,
    warmup_steps: int,
    eval_every: int,
) -> Plan:
    """S = floor((B - m) / t): the evaluations and their checkpoints left out of the cost, so the run overruns."""
    steps = max(1, math.floor((budget_s - measured_s) / step_s))
    return Plan(
        budget_s, measured_s, step_s, eval_s, measured_steps, steps, min(warmup_steps, steps // 10),
        eval_cadence(steps, eval_every),
    )  # fmt: skip


def plan_by_counting_up(
    budget_s: float,
    measured_s: float,
    step_s: float,
    eval_s: float,
    measured_steps: int,
    warmup_steps: int,
    eval_every: int,
) -> Plan:
    """S found by trying S = 1, 2, ... while the next one still fits (slow for a long budget, but plain)."""
    left, steps = budget_s - measured_s, 0
    while run_cost(steps + 1, step_s, eval_s, eval_cadence(steps + 1, eval_every)) <= left:
        steps += 1
    if steps < 1:
        raise ValueError(f"a time budget of {budget_s:g} s fits no training step here: give a longer --time-budget")
    return Plan(
        budget_s, measured_s, step_s, eval_s, measured_steps, steps, min(warmup_steps, steps // 10),
        eval_cadence(steps, eval_every),
    )  # fmt: skip


def plan_ignoring_the_measuring(
    budget_s: float,
    measured_s: float,
    step_s: float,
    eval_s: float,
    measured_steps: int,
    warmup_steps: int,
    eval_every: int,
) -> Plan:
    """The whole budget B planned for the steps: the seconds already spent measuring are not taken off."""
    plan = plan_by_counting_up(budget_s, 0.0, step_s, eval_s, measured_steps, warmup_steps, eval_every)
    return dataclasses.replace(plan, measured_s=measured_s)


def plan_with_the_whole_warm_up(
    budget_s: float,
    measured_s: float,
    step_s: float,
    eval_s: float,
    measured_steps: int,
    warmup_steps: int,
    eval_every: int,
) -> Plan:
    """The warm-up kept at warmup_steps however short the run: a short run never leaves its warm-up."""
    plan = plan_by_counting_up(budget_s, measured_s, step_s, eval_s, measured_steps, warmup_steps, eval_every)
    return dataclasses.replace(plan, warmup_steps=warmup_steps)


BUDGET = "tests/test_budget.py"
UTF8 = "tests/test_utf8.py"

EXERCISES = (
    Exercise(
        id="utf8-step",
        target="minilm.model.utf8:step",
        docs="docs/generation.md#valid-utf-8-the-byte-level-constraint",
        tests=(
            f"{UTF8}::test_the_state_machine_agrees_with_python_on_every_one_to_four_byte_edge_case",
            f"{UTF8}::test_overlongs_surrogates_and_code_points_past_10ffff_are_rejected",
            f"{UTF8}::test_the_batch_mask_equals_the_per_token_check_for_random_states",
        ),
        hints=(
            "A state is (continuation bytes still needed, lowest and highest allowed next byte); BETWEEN needs none.",
            "With bytes pending, the byte must lie in [lo, hi]; after it, one fewer is needed and the range is 80-BF.",
            "Between characters: 00-7F is a whole character, C2-DF needs 1 more, E0-EF 2, F0-F4 3; the rest is None.",
            "The first byte after E0 is A0-BF, after ED 80-9F, after F0 90-BF, after F4 80-8F.",
        ),
        mutants=(step_allowing_surrogates, step_allowing_overlongs, step_past_10ffff),
        alternatives=(step_by_table,),
        imports="\nfrom minilm.model.utf8 import BETWEEN, State\n",
    ),
    Exercise(
        id="time-budget",
        target="minilm.training.budget:plan_steps",
        docs="docs/training.md#a-run-sized-by-time",
        tests=(
            f"{BUDGET}::test_the_plan_takes_the_most_steps_whose_cost_fits_the_budget_left",
            f"{BUDGET}::test_a_machine_twice_as_fast_trains_twice_the_steps_in_the_same_budget",
            f"{BUDGET}::test_the_default_schedule_is_kept_where_it_fits",
            f"{BUDGET}::test_a_budget_too_short_for_one_step_is_a_one_line_error",
            f"{BUDGET}::test_the_step_count_follows_the_measured_speed_and_the_run_keeps_to_its_budget[0.0]",
        ),
        hints=(
            "The time left is B - m. S steps with an evaluation every E cost run_cost(S, t, c, E) = S t + ceil(S/E) c.",
            "E depends on S (eval_cadence(S, eval_every)): find the largest S whose cost fits, e.g. by bisection.",
            "The warm-up is min(warmup_steps, S // 10); no step fitting is a ValueError.",
        ),
        mutants=(plan_ignoring_evaluations, plan_ignoring_the_measuring, plan_with_the_whole_warm_up),
        alternatives=(plan_by_counting_up,),
        imports="\nfrom minilm.training.budget import Plan, eval_cadence, run_cost\n",
    ),
)
