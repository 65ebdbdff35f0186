"""ModelConfig validates itself with messages that say what to fix, and round-trips through JSON."""

from __future__ import annotations

import pytest

from minilm import ModelConfig


def test_config_json_round_trip_is_exact():
    config = ModelConfig(
        vocab_size=500,
        d_model=48,
        n_heads=6,
        n_layers=3,
        d_ff=96,
        max_len=40,
        dropout=0.2,
        causal=False,
        attention="math",
    )
    assert ModelConfig.from_json(config.to_json()) == config


def test_config_save_and_load_round_trip(tmp_path):
    config = ModelConfig(d_model=64, n_heads=8)
    config.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == config
    assert not [p for p in tmp_path.iterdir() if p.name != "config.json"], "no temp file may be left behind"


def test_head_dim_is_width_over_heads():
    assert ModelConfig(d_model=96, n_heads=3).head_dim == 32


def test_width_not_divisible_by_heads_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"d_model=250 is not divisible by n_heads=4.*multiple of n_heads \(e\.g\. 248 or 252\)"
    ):
        ModelConfig(d_model=250, n_heads=4)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("vocab_size", 0, "vocab_size must be a positive integer"),
        ("n_layers", -1, "n_layers must be a positive integer"),
        ("max_len", 2.5, "max_len must be a positive integer"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
        ("attention", "flash", "attention='flash' is unknown: use one of auto, math, sdpa"),
        ("causal", "yes", "causal must be true or false"),
    ],
)
def test_invalid_field_is_a_clear_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{field: value})


def test_unknown_key_in_json_is_rejected_with_the_valid_keys():
    with pytest.raises(ValueError, match=r"unknown model config key\(s\) n_head: valid keys are"):
        ModelConfig.from_json('{"n_head": 4}')


def test_malformed_json_is_a_clear_error():
    with pytest.raises(ValueError, match="model config is not valid JSON"):
        ModelConfig.from_json("{d_model: 4")


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModelConfig.load(tmp_path / "nope.json")
