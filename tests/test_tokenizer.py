"""The byte-level BPE tokenizer: fixed special ids, exact round trips for any UTF-8 text, standard files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from minilm import SPECIAL_TOKENS, Tokenizer
from minilm.bpe import bpe_merges, word_counts
from minilm.tokenizer import MIN_VOCAB_SIZE, UNK_ID

SHAKESPEARE_HEAD = (Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[
    :3000
]


def trained_merges(tokenizer: Tokenizer) -> list:
    """The merges of a trained tokenizer, in the order they were learned (its tokenizer.json)."""
    return json.loads(tokenizer.backend.to_str())["model"]["merges"]


ROUND_TRIP_TEXTS = {
    "english": "To be, or not to be: that is the question.\n  Indented line\twith a tab.",
    "chinese": "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？",
    "emoji": "Launch 🚀 party 🎉, family 👩‍👩‍👧‍👦 and flags 🇯🇵🇫🇷",
    "mixed": "Café naïve résumé — Ελληνικά, русский, العربية, हिन्दी 😀",
}


def test_special_tokens_have_fixed_ids(tokenizer):
    assert SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected_id
    ids = (
        tokenizer.pad_id,
        tokenizer.unk_id,
        tokenizer.cls_id,
        tokenizer.sep_id,
        tokenizer.mask_id,
        tokenizer.bos_id,
        tokenizer.eos_id,
    )
    assert ids == tuple(range(7))


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_TEXTS))
def test_round_trip_is_exact_and_never_unknown(tokenizer, name):
    """The tokenizer was trained on English only: byte-level BPE still covers every UTF-8 string."""
    text = ROUND_TRIP_TEXTS[name]
    ids = tokenizer.encode(text)
    assert UNK_ID not in ids
    assert tokenizer.decode(ids) == text


def test_special_token_written_in_text_becomes_its_id(tokenizer):
    ids = tokenizer.encode("the [MASK] fox")
    assert ids.count(tokenizer.mask_id) == 1
    assert tokenizer.decode(ids, skip_special_tokens=False) == "the [MASK] fox"


def test_save_then_load_gives_identical_ids(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = Tokenizer.load(path)
    for text in ROUND_TRIP_TEXTS.values():
        assert loaded.encode(text) == tokenizer.encode(text)
    # it is a standard tokenizer.json: the `tokenizers` library reads it on its own
    assert HFTokenizer.from_file(str(path)).encode(
        ROUND_TRIP_TEXTS["english"], add_special_tokens=False
    ).ids == tokenizer.encode(ROUND_TRIP_TEXTS["english"])


def test_training_reaches_the_requested_vocab_size_and_is_deterministic():
    text = ["the cat sat on the mat and the dog sat on the log\n"] * 50 + [
        "a quick brown fox jumps over lazy dogs\n"
    ] * 50
    first = Tokenizer.train(texts=text, vocab_size=290, min_frequency=1)
    second = Tokenizer.train(texts=text, vocab_size=290, min_frequency=1)
    assert first.vocab_size == 290
    assert first.backend.to_str() == second.backend.to_str()


def test_training_from_files_matches_training_from_strings(tmp_path):
    lines = ["one two three four\n", "five six seven eight\n"] * 30
    (tmp_path / "a.txt").write_text("".join(lines), encoding="utf-8")
    from_file = Tokenizer.train(files=[tmp_path / "a.txt"], vocab_size=280)
    from_strings = Tokenizer.train(texts=lines, vocab_size=280)
    assert from_file.encode("three four five") == from_strings.encode("three four five")


def test_batch_encoding_pads_and_truncates(tokenizer):
    texts = ["to be", "to be or not to be that is"]
    lengths = [len(tokenizer.encode(t)) for t in texts]
    right = tokenizer.encode_batch(texts)
    assert right["input_ids"].shape == (2, max(lengths))
    assert right["attention_mask"].sum(dim=1).tolist() == lengths
    assert right["input_ids"][0, lengths[0] :].eq(tokenizer.pad_id).all()
    assert right["input_ids"][0, : lengths[0]].tolist() == tokenizer.encode(texts[0])

    left = tokenizer.encode_batch(texts, side="left")
    assert left["input_ids"][0, -lengths[0] :].tolist() == tokenizer.encode(texts[0])
    assert left["attention_mask"][0, : max(lengths) - lengths[0]].eq(0).all()

    truncated = tokenizer.encode_batch(texts, max_length=3)
    assert truncated["input_ids"].shape == (2, 3)
    assert truncated["input_ids"][1].tolist() == tokenizer.encode(texts[1])[:3]


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8 text: invalid byte 0xe9 at line 2, byte offset 14"):
        Tokenizer.train(files=[path], vocab_size=300)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.train(files=[tmp_path / "missing.txt"], vocab_size=300)


def test_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="the training corpus is empty"):
        Tokenizer.train(files=[tmp_path / "blank.txt"], vocab_size=300)


def test_a_bare_string_instead_of_a_list_is_a_clear_error():
    with pytest.raises(ValueError, match=r"texts must be a list of strings, not one string: write texts=\[text\]"):
        Tokenizer.train(texts="hello world", vocab_size=300)


def test_vocab_smaller_than_bytes_plus_specials_is_rejected():
    with pytest.raises(ValueError, match=f"needs at least {MIN_VOCAB_SIZE}"):
        Tokenizer.train(texts=["hello"], vocab_size=100)


def test_loading_a_tokenizer_with_other_special_ids_is_rejected(tmp_path):
    other = HFTokenizer(models.BPE())
    other.add_special_tokens(["<s>", "[PAD]"])
    other.save(str(tmp_path / "other.json"))
    with pytest.raises(ValueError, match=r"maps \[PAD\] to id 1, minilm needs 0"):
        Tokenizer.load(tmp_path / "other.json")


def test_bpe_merges_written_out_are_the_merges_the_tokenizers_trainer_learns():
    """The rule of minilm/bpe.py, merge by merge, on English and non-ASCII text: the same pairs in the same order."""
    texts = [SHAKESPEARE_HEAD, "naïve café — 日本語の文章, déjà vu " * 3]
    tokenizer = Tokenizer.train(texts=texts, vocab_size=MIN_VOCAB_SIZE + 120)
    trained = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained_merges(tokenizer)]
    assert len(trained) == 120
    assert bpe_merges(word_counts(texts), len(trained)) == trained
