"""A run sized by time: durations, the steps that fit a budget, and a budgeted run that follows the measured speed and
is exactly the fixed-step run of the length it chose."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from cli_support import ROOT, fails, tiny_run, train
from conftest import tiny_config

from minilm import Tokenizer, Transformer
from minilm.training.budget import eval_cadence, parse_duration, plan_steps, run_cost, run_length
from minilm.training.corpus import prepare_corpus
from minilm.training.trainer import TrainConfig, Trainer


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("2m30s", 150), ("45", 45), (" 10M ", 600)],
)
def test_a_duration_reads_hours_minutes_and_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10 minutes", "", "m", "0s", "10x", "-5m", "5m-3s"])
def test_a_duration_that_does_not_read_is_a_one_line_error(text):
    with pytest.raises(ValueError, match="--time-budget must be") as e:
        parse_duration(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("step_s, eval_s", [(0.5, 0.8), (0.05, 2.0), (1.3, 0.0), (0.002, 0.01)])
def test_the_plan_takes_the_most_steps_whose_cost_fits_the_budget_left(step_s, eval_s):
    plan = plan_steps(600.0, 10.0, step_s, eval_s, measured_steps=8, warmup_steps=100, eval_every=200)
    S, E = plan.max_steps, plan.eval_every
    assert run_cost(S, step_s, eval_s, E) <= 590.0
    assert run_cost(S + 1, step_s, eval_s, eval_cadence(S + 1, 200)) > 590.0  # one more step would not fit
    assert plan.warmup_steps == min(100, S // 10)
    assert 5 <= math.ceil(S / E) <= 20 or S < 5  # between 5 and 20 evaluations


def test_a_machine_twice_as_fast_trains_twice_the_steps_in_the_same_budget():
    slow = plan_steps(600.0, 10.0, 0.6, 0.0, 8, 100, 200)
    fast = plan_steps(600.0, 10.0, 0.3, 0.0, 8, 100, 200)
    assert fast.max_steps == 2 * slow.max_steps


def test_the_default_schedule_is_kept_where_it_fits():
    """1,800 steps (the step count the defaults were once measured at) keep warm-up 100 and an evaluation every 200."""
    plan = plan_steps(1800 * 0.3 + 9 * 0.5 + 5.0, 5.0, 0.3, 0.5, 8, 100, 200)
    assert (plan.max_steps, plan.warmup_steps, plan.eval_every) == (1800, 100, 200)


def test_a_budget_too_short_for_one_step_is_a_one_line_error():
    with pytest.raises(ValueError, match="fits no training step") as e:
        plan_steps(2.0, 1.5, 1.0, 0.5, 3, 100, 200)
    assert "\n" not in str(e.value)


def test_a_time_budget_or_a_step_count_sizes_a_new_run_never_both():
    assert run_length({"time_budget": "90s"}, resume=False) == {"max_steps": None}
    assert run_length({"max_steps": 50}, resume=False) == {"time_budget": None}
    assert run_length({}, resume=True) == {}
    with pytest.raises(ValueError, match="not both"):
        run_length({"time_budget": "90s", "max_steps": 50}, resume=False)
    with pytest.raises(ValueError, match="a resumed run continues"):
        run_length({"time_budget": "90s"}, resume=True)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "head.txt"
    path.write_text((ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    tokenizer = Tokenizer.train(files=[path], vocab_size=300)
    return tokenizer, prepare_corpus([path], tokenizer, folder / "cache")


class SimulatedTrainer(Trainer):
    """A trainer on a simulated machine: its clock advances `step_s` per step and `eval_s` per evaluation, so what the
    budget measures, and so the steps it decides, are exact."""

    step_s, eval_s, now = 0.0, 0.0, 0.0

    def forward_backward(self):
        self.now += self.step_s
        return super().forward_backward()

    def evaluate(self, full=False, model=None):
        self.now += 0.0 if full else self.eval_s
        return super().evaluate(full, model)


def budget_trainer(small_corpus, out: Path, step_s: float | None = None, eval_s: float = 0.0, **settings) -> Trainer:
    tokenizer, corpus = small_corpus
    values = dict(batch_size=4, lr=3e-3, warmup_steps=5, eval_every=10, eval_windows=4, log_every=1000)
    values.update(settings)
    config = TrainConfig(precision="fp32", device="cpu", **values)
    model = Transformer(tiny_config(vocab_size=tokenizer.vocab_size, max_len=16, dropout=0.1), seed=0)
    out.mkdir(parents=True, exist_ok=True)
    trainer = SimulatedTrainer(model, tokenizer, corpus, config, out, log=lambda _: None)
    if step_s is not None:
        trainer.step_s, trainer.eval_s = step_s, eval_s
        trainer.clock = lambda: trainer.now
    return trainer


@pytest.mark.parametrize("eval_s", [0.0, 2.0])
def test_the_step_count_follows_the_measured_speed_and_the_run_keeps_to_its_budget(small_corpus, tmp_path, eval_s):
    steps = {}
    for step_s in (0.5, 1.0):  # a machine, and one twice as slow, with a 1-minute budget
        trainer = budget_trainer(small_corpus, tmp_path / str(step_s), step_s, eval_s, time_budget="1m")
        summary = trainer.fit()
        steps[step_s] = summary["step"]
        assert summary["step"] == trainer.config.max_steps
        assert 60 - step_s - eval_s < summary["budget_used_s"] <= 60  # filled to within one step and evaluation
    if not eval_s:  # twice as fast, twice the steps (less what each spent measuring)
        assert steps[0.5] == pytest.approx(2 * steps[1.0], rel=0.1)


def test_a_budgeted_run_ends_bitwise_equal_to_the_fixed_run_of_the_length_it_chose(small_corpus, tmp_path):
    budgeted = budget_trainer(small_corpus, tmp_path / "budget", step_s=0.02, eval_s=0.01, time_budget="1s")
    budgeted.fit()
    plan = {k: getattr(budgeted.config, k) for k in ("max_steps", "warmup_steps", "eval_every")}
    fixed = budget_trainer(small_corpus, tmp_path / "fixed", **plan)
    fixed.fit()
    assert plan["max_steps"] > 5
    for (name, a), b in zip(budgeted.model.state_dict().items(), fixed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_pretrain_with_a_time_budget_records_the_steps_it_decided_and_resumes_to_them(tmp_path, capsys):
    text = tmp_path / "head.txt"
    text.write_text((ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    out = tmp_path / "run"
    flags = [a for a in tiny_run() if a not in ("--max-steps", "6")]
    assert train.main(["pretrain", "--data", str(text), "--out", str(out), *flags, "--time-budget", "2s"]) == 0
    printed = capsys.readouterr().out
    args = json.loads((out / "train_args.json").read_text(encoding="utf-8"))
    assert args["time_budget"] == "2s" and isinstance(args["max_steps"], int) and args["max_steps"] > 0
    assert args["time_budget_plan"]["step_s"] > 0
    assert f"{args['max_steps']:,} steps fit" in printed
    # resuming a finished budgeted run trains no further and keeps its schedule
    assert train.main(["pretrain", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "train_args.json").read_text(encoding="utf-8"))["max_steps"] == args["max_steps"]
    fails(capsys, ["pretrain", "--out", str(out), "--resume", "--time-budget", "5s"], "a resumed run continues")


def test_time_budget_mistakes_are_one_line_errors(tmp_path, capsys):
    out = str(tmp_path / "run")
    fails(capsys, ["pretrain", "--out", out, "--time-budget", "10x"], "--time-budget must be a duration")
    fails(capsys, ["pretrain", "--out", out, "--time-budget", "1m", "--max-steps", "5"], "not both")
    assert not Path(out).exists()
