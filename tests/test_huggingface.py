"""Hugging Face export and import: the exported GPT-2 computes minilm's logits and greedy tokens, AutoTokenizer encodes
like minilm's tokenizer, a run survives export + import bit for bit, and every folder that does not fit is one line.

The tests that load the folder with transformers take the `transformers` fixture (skipped without it); the others
run without it, and one proves that writing and reading the folder never imports it.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from cli_support import fails, fast_tune, pretrain_tiny, train
from conftest import random_ids
from torch import nn

from minilm import ModelConfig, Tokenizer, Transformer, generate
from minilm.files import save_weights
from minilm.model.masks import position_ids
from minilm.outputs import claim_output, output_kind
from minilm.tokenizer import BOS_ID, EOS_ID, PAD_ID
from minilm.training.huggingface import EXPORT, export_run, import_run
from minilm.training.run import PRETRAIN, load_run, write_run_files

TEXTS = [
    "To be, or not to be, that is the question.",
    "naïve café — 東京の夜 🙂",
    "  two spaces,\ta tab\nand a new line",
    "a gorgeous , witty movie . it is n't , is it ?",  # as written: transformers' space clean-up is off
]


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


def randomize(module: nn.Module, seed: int) -> None:
    """Every parameter drawn from N(0, 0.3^2), biases and LayerNorms included: a tensor mapped to the wrong place, or
    left out, changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def write_run(folder: Path, tokenizer: Tokenizer, causal: bool = True, seed: int = 0) -> Path:
    """A pretrain run folder (marker, config, tokenizer, best weights) of a 2-layer, 32-wide random model."""
    sizes = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 48, "max_len": 32}
    config = ModelConfig(vocab_size=tokenizer.vocab_size, **sizes, dropout=0.0, causal=causal)
    model = Transformer(config)
    randomize(model, seed)
    claim_output(folder, PRETRAIN, fresh=True)
    write_run_files(folder, tokenizer, config, {"objective": "causal" if causal else "masked"})
    save_weights(model, folder / "best.safetensors")
    return folder


def padded_batch(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of three rows of 10 tokens: left-padded by 3, right-padded by 3, unpadded."""
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, :3], mask[1, 7:] = 0, 0
    return random_ids(3, 10, vocab_size, seed=1).masked_fill(mask == 0, PAD_ID), mask


def gpt2_logits(hf: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers' logits with minilm's positions, pos(t) = |{s < t : m_s = 1}|: padding takes no position."""
    positions = position_ids(mask.bool(), torch.zeros(ids.size(0), dtype=torch.long), ids.size(1))
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits


def max_difference_at_real_tokens(model: Transformer, hf: nn.Module) -> float:
    ids, mask = padded_batch(model.config.vocab_size)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
    return (ours - gpt2_logits(hf, ids, mask))[mask.bool()].abs().max().item()


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer) -> Path:
    return write_run(tmp_path_factory.mktemp("runs") / "causal", tokenizer)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run) -> Path:
    return export_run(run, tmp_path_factory.mktemp("hf") / "causal")


def one_line_error(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, message


# ---- export: transformers computes minilm's model ------------------------------------------------------------------
def test_exported_model_gives_the_same_logits_as_minilm_on_a_padded_batch(transformers, run, exported):
    model, _, _ = load_run(run)
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    assert isinstance(hf, transformers.GPT2LMHeadModel) and hf.dtype == torch.float32
    assert max_difference_at_real_tokens(model, hf) < 1e-4
    ids, mask = padded_batch(model.config.vocab_size)  # transformers' own positions count the left padding too
    with torch.no_grad():
        default = hf(input_ids=ids, attention_mask=mask).logits
    assert (model(ids, attention_mask=mask) - default)[0, 3:].abs().max() > 1e-2


def test_transformers_greedy_generate_gives_minilms_greedy_tokens(transformers, run, exported):
    model, _, _ = load_run(run)
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # left padding, as transformers generates
    ids = random_ids(2, 6, model.config.vocab_size, seed=2).masked_fill(mask == 0, PAD_ID)
    ours = generate(model, ids, 12, attention_mask=mask, temperature=0)
    theirs = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    assert ours.size(1) > ids.size(1)
    assert torch.equal(ours, theirs)


def test_auto_tokenizer_encodes_and_decodes_like_minilms_tokenizer(transformers, exported, tokenizer):
    hf = transformers.AutoTokenizer.from_pretrained(exported)
    assert isinstance(hf, transformers.PreTrainedTokenizerFast)
    special = [hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id]
    assert special + [hf.bos_token_id, hf.eos_token_id] == list(range(7))
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert hf(text)["input_ids"] == ids
        assert hf.decode(ids) == tokenizer.decode(ids) == text
    with_special = tokenizer.encode("a [MASK] word[EOS]")
    assert hf("a [MASK] word[EOS]")["input_ids"] == with_special
    assert hf.decode(with_special, skip_special_tokens=True) == tokenizer.decode(with_special)
    batch, ours = hf(TEXTS, padding=True, return_tensors="pt"), tokenizer.encode_batch(TEXTS)
    assert torch.equal(batch["input_ids"], ours["input_ids"])
    assert torch.equal(batch["attention_mask"], ours["attention_mask"])


# ---- export: the folder and what it refuses --------------------------------------------------------------------
def test_export_and_import_write_their_folders_without_transformers(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # from here on, `import transformers` fails
    to = export_run(run, tmp_path / "hf")
    assert {p.name for p in to.iterdir()} == {*EXPORT.files, "minilm.json"} and output_kind(to) == "export"
    config = json.loads((to / "config.json").read_text(encoding="utf-8"))
    expected = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "activation_function": "gelu"}
    expected |= {"n_embd": 32, "n_head": 4, "n_layer": 2, "n_inner": 48, "n_positions": 32, "layer_norm_epsilon": 1e-5}
    expected |= {"tie_word_embeddings": True, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    assert {key: config[key] for key in expected} == expected
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (PAD_ID, BOS_ID, EOS_ID)
    tensors = safetensors.torch.load_file(to / "model.safetensors")
    assert "lm_head.weight" not in tensors and tensors["transformer.h.1.attn.c_attn.weight"].shape == (32, 96)
    assert output_kind(import_run(to, tmp_path / "back")) == "pretrain"


def test_export_then_import_gives_bitwise_equal_weights_and_the_same_tokenizer(run, exported, tmp_path):
    back = import_run(exported, tmp_path / "back")
    model, tokenizer, _ = load_run(run)
    again, tokenizer_again, args = load_run(back)
    assert again.config == model.config
    mine, theirs = model.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        assert theirs[name].dtype == torch.float32 and torch.equal(
            theirs[name].view(torch.int32), tensor.view(torch.int32)
        )
    assert tokenizer_again.backend.to_str() == tokenizer.backend.to_str()
    assert args["imported_from"] == str(exported.resolve()) and output_kind(back) == "pretrain"
    last = safetensors.torch.load_file(back / "model.safetensors")
    assert all(torch.equal(last[name], tensor) for name, tensor in theirs.items())


def test_export_refuses_a_masked_run_and_says_to_export_a_causal_one(tokenizer, tmp_path):
    masked = write_run(tmp_path / "masked", tokenizer, causal=False)
    with pytest.raises(ValueError) as error:
        export_run(masked, tmp_path / "hf")
    one_line_error(error, "masked (bidirectional)", "no transformers architecture computes it exactly", "causal run")
    assert not (tmp_path / "hf").exists()


def test_export_takes_an_instruction_tuned_run_like_a_pretrained_one(tokenizer, tmp_path):
    instructed = write_run(tmp_path / "instruct", tokenizer, seed=4)
    (instructed / "minilm.json").write_text('{"kind": "instruct"}', encoding="utf-8")  # what `train.py instruct` marks
    to = export_run(instructed, tmp_path / "hf")
    model, _, _ = load_run(instructed)
    again, _, _ = load_run(import_run(to, tmp_path / "back"))
    assert all(torch.equal(again.state_dict()[name], tensor) for name, tensor in model.state_dict().items())


def test_export_refuses_a_tuned_folder_and_names_its_base(tmp_path):
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "minilm.json").write_text('{"kind": "tune"}', encoding="utf-8")
    (tuned / "tuned.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        export_run(tuned, tmp_path / "hf")
    one_line_error(error, "holds a tuned model", "export its base run")
    assert not (tmp_path / "hf").exists()


def test_export_writes_only_into_a_new_or_empty_folder_or_over_its_own_export(run, tokenizer, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        export_run(run, foreign)
    one_line_error(error, f"--to {foreign} is not empty")
    other = write_run(tmp_path / "other", tokenizer)
    with pytest.raises(ValueError) as error:
        export_run(run, other)
    one_line_error(error, "holds a run written by `train.py pretrain`", "choose another --to")
    to = export_run(run, tmp_path / "hf")
    (to / "README.md").write_text("kept", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        export_run(run, to)
    one_line_error(error, "already holds a Hugging Face model folder", "--overwrite")
    assert "--out" not in str(error.value)
    (to / "config.json").write_text("{}", encoding="utf-8")
    assert export_run(run, to, overwrite=True) == to
    assert json.loads((to / "config.json").read_text(encoding="utf-8"))["model_type"] == "gpt2"
    assert (to / "README.md").read_text(encoding="utf-8") == "kept" and (foreign / "notes.txt").is_file()


# ---- import ---------------------------------------------------------------------------------------------------
def test_a_gpt2_model_saved_by_transformers_imports_with_equal_logits(transformers, tokenizer, tmp_path):
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=48,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    randomize(hf, seed=3)
    hf.save_pretrained(tmp_path / "gpt2")
    special = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, **special).save_pretrained(
        tmp_path / "gpt2"
    )
    model, imported_tokenizer, args = load_run(import_run(tmp_path / "gpt2", tmp_path / "run"))
    assert (model.config.d_ff, model.config.max_len, model.config.dropout) == (48, 32, 0.0)
    assert max_difference_at_real_tokens(model, hf) < 1e-4
    assert all(imported_tokenizer.encode(text) == tokenizer.encode(text) for text in TEXTS)
    assert args["imported_from"] == str((tmp_path / "gpt2").resolve())


DROP = object()
"""A change that removes the key from config.json."""


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"activation_function": "gelu_new"}, ["activation_function is 'gelu_new'", "the exact GELU"]),
        ({"activation_function": DROP}, ["activation_function is 'gelu_new'", "GPT2Config's default"]),
        ({"tie_word_embeddings": False}, ["tie_word_embeddings is false", "tied embeddings"]),
        ({"model_type": "llama"}, ["a 'llama' model, not 'gpt2'"]),
        ({"layer_norm_epsilon": 1e-6}, ["layer_norm_epsilon is 1e-06", "1e-05"]),
        ({"scale_attn_by_inverse_layer_idx": True}, ["not scaled by 1/sqrt(head_dim) alone"]),
        ({"attn_pdrop": 0.3}, ["minilm has one dropout probability", "to one value"]),
        ({"n_inner": 64}, ["is (48,) but config.json's sizes make it (64,)"]),
        ({"vocab_size": 5000}, ["vocab_size=5000", "resize_token_embeddings"]),
    ],
    ids=["gelu_new", "no-activation", "untied", "llama", "eps", "layer-scaling", "dropouts", "n_inner", "vocab"],
)
def test_import_refuses_a_config_that_minilm_does_not_compute_exactly(exported, tmp_path, change, fragments):
    folder = shutil.copytree(exported, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(change)
    config = {key: value for key, value in config.items() if value is not DROP}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError) as error:
        import_run(folder, tmp_path / "run")
    one_line_error(error, *fragments)
    assert not (tmp_path / "run").exists()


def test_import_refuses_a_folder_without_tokenizer_json_safetensors_or_a_tied_head(exported, tmp_path):
    no_tokenizer = shutil.copytree(exported, tmp_path / "no-tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError) as error:
        import_run(no_tokenizer, tmp_path / "run")
    one_line_error(error, "has no tokenizer.json", "save_pretrained")
    pickled = shutil.copytree(exported, tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError) as error:
        import_run(pickled, tmp_path / "run")
    one_line_error(error, "has no model.safetensors", "pytorch_model.bin", "writes safetensors")
    untied = shutil.copytree(exported, tmp_path / "untied")
    tensors = safetensors.torch.load_file(untied / "model.safetensors")
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1
    safetensors.torch.save_file(tensors, untied / "model.safetensors")
    with pytest.raises(ValueError) as error:
        import_run(untied, tmp_path / "run")
    one_line_error(error, "lm_head.weight differs from wte.weight", "tied embeddings")
    assert not (tmp_path / "run").exists()


def test_import_writes_only_into_a_new_or_empty_folder_or_over_a_run(exported, tokenizer, tmp_path):
    with pytest.raises(ValueError) as error:
        import_run(exported, exported)
    one_line_error(error, "is what this command reads")
    back = import_run(exported, tmp_path / "back")
    with pytest.raises(ValueError) as error:
        import_run(exported, back)
    one_line_error(error, "already holds a run", "--overwrite")
    assert "--resume" not in str(error.value)  # an imported run has no training state to continue
    with pytest.raises(ValueError) as error:
        import_run(exported, export_run(back, tmp_path / "hf"))
    one_line_error(error, "written by `train.py export`")
    assert import_run(exported, back, overwrite=True) == back


# ---- the command line -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory)


def write_task(folder: Path) -> Path:
    folder.mkdir()
    rows = {"train": ["merry day\t1", "sad night\t0", "happy song\t1", "dark woe\t0"], "dev": ["glad\t1", "grief\t0"]}
    for split, lines in rows.items():
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_cli_export_then_import_gives_a_run_that_generates_evaluates_and_tunes_like_the_original(
    pretrained, tmp_path, capsys
):
    hf, back = tmp_path / "hf", tmp_path / "back"
    assert train.main(["export", "--from", str(pretrained), "--to", str(hf)]) == 0
    assert "AutoModelForCausalLM.from_pretrained" in capsys.readouterr().out
    assert train.main(["import", "--from", str(hf), "--out", str(back)]) == 0
    assert str(back) in capsys.readouterr().out
    text = json.loads((pretrained / "train_args.json").read_text(encoding="utf-8"))["data"][0]
    for command in (["generate", "--prompt", "ROMEO:", "--max-new-tokens", "8"], ["eval", "--data", text]):
        outputs = []
        for folder in (pretrained, back):
            assert train.main([command[0], "--from", str(folder), *command[1:]]) == 0
            outputs.append(capsys.readouterr().out)
        assert outputs[0] == outputs[1] and outputs[0].strip()
    fails(capsys, ["eval", "--from", str(back)], "no data given", "--data")
    task = write_task(tmp_path / "task")
    tune = ["tune", "--base", str(back), "--method", "bitfit", "--task", str(task), "--out", str(tmp_path / "t")]
    assert train.main([*tune, *fast_tune(2)]) == 0
    assert (tmp_path / "t" / "tuned.json").is_file()


def test_cli_export_and_import_mistakes_are_one_line_with_exit_code_2(tokenizer, exported, tmp_path, capsys):
    masked = write_run(tmp_path / "masked", tokenizer, causal=False)
    fails(capsys, ["export", "--from", str(masked), "--to", str(tmp_path / "hf")], "masked", "export a causal run")
    fails(capsys, ["export", "--from", str(tmp_path / "nothing"), "--to", str(tmp_path / "hf")], "does not exist")
    fails(capsys, ["export", "--from", str(masked)], "--to")
    gelu_new = shutil.copytree(exported, tmp_path / "gelu_new")
    config = json.loads((gelu_new / "config.json").read_text(encoding="utf-8"))
    (gelu_new / "config.json").write_text(json.dumps({**config, "activation_function": "gelu_new"}), encoding="utf-8")
    fails(capsys, ["import", "--from", str(gelu_new), "--out", str(tmp_path / "run")], "gelu_new", "'gelu'")
    fails(capsys, ["import", "--from", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")], "does not exist")
    assert not (tmp_path / "hf").exists() and not (tmp_path / "run").exists()


def test_the_readme_example_loads_an_export_in_transformers_and_generates(transformers, exported, monkeypatch, capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Hugging Face export\n.*?```py\n(.*?)```", readme, re.S)
    assert block and "runs/causal-hf" in block.group(1)
    code = block.group(1).replace("runs/causal-hf", str(exported)).replace("max_new_tokens=40", "max_new_tokens=4")
    exec(compile(code, "README.md", "exec"), {})  # the tiny run's context is shorter than the README's 40 tokens
    assert capsys.readouterr().out.startswith("ROMEO:")
