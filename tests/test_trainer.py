"""The training loop: schedule, weight-decay groups, learning, accumulation, bf16, early stopping, exact resume."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import tiny_config

from minilm import Tokenizer, Transformer
from minilm.files import save_state
from minilm.training.corpus import prepare_corpus
from minilm.training.optimizer import learning_rate, parameter_groups
from minilm.training.trainer import TrainConfig, Trainer

SHAKESPEARE = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare.txt"


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """The first 60,000 characters of the shipped corpus, a tokenizer of 300 tokens, and its encoded splits."""
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "shakespeare_head.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    tokenizer = Tokenizer.train(files=[path], vocab_size=300)
    return tokenizer, prepare_corpus([path], tokenizer, folder / "cache")


def make_trainer(small_corpus, out: Path, resume: bool = False, objective: str = "causal", **overrides) -> Trainer:
    tokenizer, corpus = small_corpus
    model_overrides = {k: overrides.pop(k) for k in list(overrides) if k in ("dropout", "max_len", "attention")}
    config = tiny_config(vocab_size=tokenizer.vocab_size, max_len=32, causal=objective == "causal", **model_overrides)
    values = dict(
        objective=objective,
        batch_size=8,
        max_steps=40,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        eval_every=10,
        eval_windows=16,
        log_every=10,
        precision="fp32",
    )
    values.update(overrides)
    out.mkdir(parents=True, exist_ok=True)
    return Trainer(
        Transformer(config, seed=0), tokenizer, corpus, TrainConfig(**values), out, resume=resume, log=lambda _: None
    )


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert [learning_rate(t, cfg) for t in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(10, cfg) == pytest.approx(1.0)
    assert learning_rate(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert learning_rate(110, cfg) == pytest.approx(0.1)
    decay = [learning_rate(t, cfg) for t in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(decay))


def test_learning_rate_without_min_lr_warms_up_then_stays_at_the_peak():
    """min_lr None is a constant schedule after the warm-up, not a cosine decay to 0."""
    cfg = TrainConfig(lr=1.0, min_lr=None, warmup_steps=4, max_steps=20)
    assert [learning_rate(t, cfg) for t in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert [learning_rate(t, cfg) for t in range(4, 21)] == pytest.approx([1.0] * 17)


def test_weight_decay_applies_to_linear_weight_matrices_only():
    model = Transformer(tiny_config())
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(
        n.endswith(("W_q.weight", "W_k.weight", "W_v.weight", "W_o.weight", "W_1.weight", "W_2.weight"))
        for n in decayed
    )
    assert len(decayed) == 6 * model.config.n_layers
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert {"tok_emb.weight", "pos_emb.weight", "ln_f.gamma", "blocks.0.attn.W_q.bias"} <= undecayed
    assert len(decayed) + len(undecayed) == len(list(model.parameters()))


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_training_lowers_validation_loss_well_below_its_start(small_corpus, tmp_path, objective):
    trainer = make_trainer(small_corpus, tmp_path, objective=objective, max_steps=60, eval_every=20)
    start = trainer.evaluate()["loss"]
    summary = trainer.fit()
    assert start == pytest.approx(math.log(trainer.model.config.vocab_size), abs=0.3)  # an untrained model is uniform
    assert summary["best_val_loss"] < start - 1.0
    for name in ("model.safetensors", "best.safetensors", "train_state.pt", "metrics.jsonl"):
        assert (tmp_path / name).is_file()
    if objective == "causal":
        assert 0 < summary["val"]["bits_per_byte"] < start / math.log(2)


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_resume_after_an_interruption_ends_bitwise_equal_to_an_uninterrupted_run(small_corpus, tmp_path, objective):
    # dropout on, so the restored dropout generator matters too
    make_trainer(small_corpus, tmp_path / "straight", objective=objective, dropout=0.1, log_every=5).fit()
    make_trainer(small_corpus, tmp_path / "broken", objective=objective, dropout=0.1, log_every=5).fit(
        stop_at=17
    )  # "crash"
    resumed = make_trainer(
        small_corpus, tmp_path / "broken", resume=True, objective=objective, dropout=0.1, log_every=5
    )
    assert resumed.step == 10  # the last checkpoint; steps 11..17 were lost with the crash and run again
    resumed.fit()
    straight = safetensors.torch.load_file(tmp_path / "straight" / "model.safetensors")
    again = safetensors.torch.load_file(tmp_path / "broken" / "model.safetensors")
    assert straight.keys() == again.keys()
    for name in straight:
        assert torch.equal(straight[name], again[name]), name
    records = [json.loads(line) for line in (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert steps == [1, 5, 10, 15, 20, 25, 30, 35, 40]  # step 15, logged after the checkpoint, is not there twice


def test_a_training_state_written_before_the_shared_loop_still_resumes(small_corpus, tmp_path):
    """A train_state.pt in the earlier layout (best_val_loss, tokens_seen, no "kind") resumes like today's."""
    make_trainer(small_corpus, tmp_path, max_steps=20).fit(stop_at=15)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    old = {k: v for k, v in state.items() if k not in ("kind", "best", "seen")}
    old.update(best_val_loss=state["best"], tokens_seen=state["seen"])
    save_state(old, tmp_path / "train_state.pt")
    resumed = make_trainer(small_corpus, tmp_path, max_steps=20, resume=True)
    assert (resumed.step, resumed.best, resumed.seen) == (state["step"], state["best"], state["seen"])
    assert resumed.fit()["step"] == 20


def test_gradient_accumulation_matches_one_big_batch(small_corpus, tmp_path):
    whole = make_trainer(small_corpus, tmp_path / "a", max_steps=3, batch_size=8, grad_accum=1)
    split = make_trainer(small_corpus, tmp_path / "b", max_steps=3, batch_size=8, grad_accum=4)
    for _ in range(3):
        whole.train_step()
        split.train_step()
    for p, q in zip(whole.model.parameters(), split.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_loss_curve_tracks_fp32(small_corpus, tmp_path):
    fp32 = make_trainer(small_corpus, tmp_path / "fp32", precision="fp32")
    bf16 = make_trainer(small_corpus, tmp_path / "bf16", precision="bf16")
    losses_32 = [fp32.train_step() for _ in range(30)]
    losses_16 = [bf16.train_step() for _ in range(30)]
    assert losses_32[-1] < losses_32[0] - 0.5  # it learned something, so the comparison means something
    for a, b in zip(losses_32, losses_16):
        assert abs(a - b) < 0.05 * a


def test_early_stopping_ends_the_run_after_patience_evaluations_without_improvement(
    small_corpus, tmp_path, monkeypatch
):
    trainer = make_trainer(small_corpus, tmp_path, max_steps=100, eval_every=5, patience=2)
    losses = iter([3.0, 2.5, 2.6, 2.5, 2.4])  # best at the 2nd eval, then two without improvement
    monkeypatch.setattr(
        trainer,
        "evaluate",
        lambda full=False, model=None: (
            {"loss": 2.0, "perplexity": 7.4, "bits_per_byte": 1.0}
            if full
            else {"loss": next(losses), "perplexity": 1.0}
        ),
    )
    summary = trainer.fit()
    assert summary["stopped_early"] and summary["step"] == 20
    assert safetensors.torch.safe_open(tmp_path / "best.safetensors", "pt").metadata()["step"] == "10"


def test_batch_size_must_split_over_accumulation_steps():
    with pytest.raises(ValueError, match="multiple of grad-accum"):
        TrainConfig(batch_size=10, grad_accum=4)
    with pytest.raises(ValueError, match="max-steps must be a positive integer"):
        TrainConfig(max_steps=0)
