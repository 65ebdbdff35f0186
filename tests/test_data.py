"""The corpus pipeline: split, cache, byte accounting, windows and packing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLE_TEXT

from minilm import Tokenizer
from minilm.tokenizer import CLS_ID, EOS_ID, PAD_ID, SEP_ID
from minilm.training.corpus import (
    TokenStream,
    encode_documents,
    eval_windows,
    find_text_files,
    pack_lines,
    prepare_corpus,
    read_text,
    sample_blocks,
    sample_windows,
    split_text,
    token_byte_lengths,
)

CHINESE = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_split_keeps_whole_lines_and_loses_no_text():
    text = "".join(f"line {i}\n" for i in range(100))
    train, val = split_text(text, 0.1)
    assert train + val == text
    assert train.endswith("\n") and val.startswith("line ")
    assert 0.08 < len(val) / len(text) < 0.12


def test_token_byte_lengths_sum_to_the_utf8_size_of_the_text(tokenizer):
    documents = ["".join(SAMPLE_TEXT[:3]), CHINESE, "emoji 🙂 and ünïcödé\n"]
    stream = encode_documents(tokenizer, documents)
    lengths = token_byte_lengths(tokenizer)
    assert lengths[stream.ids].sum() == stream.n_bytes == sum(len(d.encode("utf-8")) for d in documents)
    assert lengths[EOS_ID] == 0


def test_encoded_stream_decodes_back_to_the_documents_with_eos_between(tokenizer):
    documents = ["".join(SAMPLE_TEXT[:2]), CHINESE]
    stream = encode_documents(tokenizer, documents)
    assert stream.ids.dtype == np.uint16
    eos = np.flatnonzero(stream.ids == EOS_ID)
    assert len(eos) == 2 and eos[-1] == len(stream) - 1
    assert tokenizer.decode(stream.ids[: eos[0]].tolist()) == documents[0]
    assert tokenizer.decode(stream.ids[eos[0] + 1 : eos[1]].tolist()) == documents[1]
    # line_starts mark each line (and each [EOS]) of the stream
    assert stream.line_starts[0] == 0 and stream.line_starts[-1] == len(stream)
    assert tokenizer.decode(stream.ids[stream.line_starts[0] : stream.line_starts[1]].tolist()) == SAMPLE_TEXT[0]


def test_corpus_is_encoded_once_and_the_cache_key_follows_the_tokenizer(tmp_path, tokenizer):
    data = write(tmp_path / "a.txt", "".join(SAMPLE_TEXT))
    first = prepare_corpus([data], tokenizer, tmp_path / "cache")
    stamp = (first.cache_dir / "train_ids.npy").stat().st_mtime_ns
    again = prepare_corpus([data], tokenizer, tmp_path / "cache")
    assert again.cache_dir == first.cache_dir
    assert (again.cache_dir / "train_ids.npy").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert np.array_equal(again.train.ids, first.train.ids)
    other = Tokenizer.train(texts=SAMPLE_TEXT, vocab_size=280)
    assert prepare_corpus([data], other, tmp_path / "cache").cache_dir != first.cache_dir
    write(data, "".join(SAMPLE_TEXT) + "one more line\n")
    assert prepare_corpus([data], tokenizer, tmp_path / "cache").cache_dir != first.cache_dir


def test_train_and_validation_bytes_add_up_to_the_corpus(tmp_path, tokenizer):
    text = "".join(SAMPLE_TEXT) + CHINESE * 5
    corpus = prepare_corpus([write(tmp_path / "a.txt", text)], tokenizer, tmp_path / "cache", val_fraction=0.2)
    assert corpus.train.n_bytes + corpus.val.n_bytes == len(text.encode("utf-8"))
    assert tokenizer.decode(corpus.val.ids.tolist()) == split_text(text, 0.2)[1]


def test_folders_are_searched_recursively_for_txt_files(tmp_path):
    write(tmp_path / "b.txt", "b\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "a.txt", "a\n")
    write(tmp_path / "notes.md", "not text data\n")
    assert find_text_files([tmp_path]) == [tmp_path / "b.txt", tmp_path / "sub" / "a.txt"]


def test_missing_path_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_text_files([tmp_path / "nope.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no .txt files"):
        find_text_files([tmp_path / "empty"])


def test_non_utf8_bytes_name_the_file_and_byte_offset_or_are_dropped_on_request(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: invalid byte 0xe9 at line 2, byte offset 14"):
        read_text(path)
    with pytest.warns(UserWarning, match="dropped 1 bytes"):
        assert read_text(path, skip_invalid_utf8=True) == "first line\ncaf\n"


def test_sampled_windows_are_contiguous_slices_reproduced_by_the_seed():
    stream = TokenStream(np.arange(1000, dtype=np.uint16), np.array([0, 1000]), 1000)
    a = sample_windows(stream, 8, 16, torch.Generator().manual_seed(3))
    b = sample_windows(stream, 8, 16, torch.Generator().manual_seed(3))
    assert a.shape == (8, 16) and a.dtype == torch.long and torch.equal(a, b)
    assert torch.equal(a - a[:, :1], torch.arange(16).expand(8, 16))  # consecutive ids = a contiguous slice


def test_a_split_shorter_than_one_window_is_a_clear_error():
    stream = TokenStream(np.arange(10, dtype=np.uint16), np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="fewer than one window of 16"):
        sample_windows(stream, 1, 16, torch.Generator())


@pytest.mark.parametrize("n", [2, 9, 10, 11, 50])
def test_eval_windows_score_every_token_after_the_first_exactly_once(n):
    T = 10
    stream = TokenStream(np.arange(n, dtype=np.uint16), np.array([0, n]), n)
    scored = [i for s in eval_windows(stream, T) for i in range(s + 1, min(s + T, n))]
    assert scored == list(range(1, n))


def test_packed_blocks_hold_whole_lines_between_cls_and_sep_and_never_mix_documents():
    # three documents of lines with 3, 4, 2 | 5 | 20 tokens (ids >= 7 are ordinary tokens)
    lines = [[7] * 3, [8] * 4, [9] * 2, [EOS_ID], [10] * 5, [EOS_ID], [11] * 20, [EOS_ID]]
    ids = np.array([i for line in lines for i in line], dtype=np.uint16)
    starts = np.concatenate([[0], np.cumsum([len(x) for x in lines])])
    blocks, lengths = pack_lines(TokenStream(ids, starts, 0), T=10)  # room for 8 tokens per block
    rows = [b[:n].tolist() for b, n in zip(blocks, lengths)]
    assert rows == [
        [CLS_ID, 7, 7, 7, 8, 8, 8, 8, SEP_ID],  # 3 + 4 fit, the 2-token line would not (3 + 4 + 2 > 8)
        [CLS_ID, 9, 9, SEP_ID],  # [EOS] closes the block
        [CLS_ID, 10, 10, 10, 10, 10, SEP_ID],
        [CLS_ID] + [11] * 8 + [SEP_ID],  # a line longer than 8 is cut into pieces of 8
        [CLS_ID] + [11] * 8 + [SEP_ID],
        [CLS_ID, 11, 11, 11, 11, SEP_ID],
    ]
    assert (blocks[0, lengths[0] :] == PAD_ID).all()
    input_ids, attention_mask = sample_blocks(blocks, lengths, 4, torch.Generator().manual_seed(0))
    assert torch.equal(
        attention_mask.sum(1),
        torch.from_numpy(lengths)[torch.randint(0, len(blocks), (4,), generator=torch.Generator().manual_seed(0))],
    )
    assert (input_ids[attention_mask == 0] == PAD_ID).all()
