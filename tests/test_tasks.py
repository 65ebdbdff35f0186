"""Task folders: TSV / JSONL splits, the label set, task.json, and the errors for every malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minilm.tuning.tasks import Example, load_task

REPO = Path(__file__).resolve().parent.parent

TRAIN_ROWS = [
    ("a fine film", "pos"),
    ('"Quoted" start, with a comma', "neg"),
    ("dull and long", "neg"),
    ("lovely", "pos"),
    ("ok I guess", "mid"),
]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tsv(rows, header=("sentence", "label")) -> str:
    """A TSV with `header`; each row is (text, label) and is laid out in the header's column order."""
    lines = ["\t".join(header)]
    for text, label in rows:
        by_name = {"sentence": text, "text": text, "label": label}
        lines.append("\t".join(by_name[col] for col in header))
    return "\n".join(lines) + "\n"


def jsonl(rows, text_key="sentence") -> str:
    return "".join(json.dumps({text_key: text, "label": label}) + "\n" for text, label in rows)


def make_task(folder: Path, train=TRAIN_ROWS, dev=None, test=None, spec=None) -> Path:
    write(folder / "train.tsv", tsv(train))
    if dev is not None:
        write(folder / "dev.tsv", tsv(dev))
    if test is not None:
        write(folder / "test.tsv", tsv(test))
    if spec is not None:
        write(folder / "task.json", json.dumps(spec))
    return folder


def as_pairs(task, split):
    return [(e.text, task.labels[e.label]) for e in task.split(split)]


# --- reading TSV and JSONL -------------------------------------------------------------------------


def test_tsv_with_header_is_read_into_examples_with_label_indices(tmp_path):
    task = load_task(make_task(tmp_path / "sst"))
    assert task.name == "sst"
    assert task.labels == ["mid", "neg", "pos"]
    assert task.split("train")[0] == Example("a fine film", 2)
    assert as_pairs(task, "train") == TRAIN_ROWS
    assert list(task.splits) == ["train"]


def test_sentence_starting_with_a_double_quote_is_kept_verbatim_without_csv_unquoting(tmp_path):
    rows = [('"Quoted" start, with a comma', "neg"), ('"unterminated quote', "pos"), ('say ""hi""', "pos")]
    task = load_task(make_task(tmp_path / "t", train=rows))
    assert [e.text for e in task.split("train")] == [text for text, _ in rows]


def test_columns_may_come_in_any_order_and_text_may_replace_sentence(tmp_path):
    folder = tmp_path / "t"
    write(folder / "train.tsv", tsv(TRAIN_ROWS, header=("label", "text")))
    task = load_task(folder)
    assert as_pairs(task, "train") == TRAIN_ROWS
    # an extra column is allowed and ignored
    write(
        folder / "train.tsv",
        "id\tlabel\tsentence\n" + "".join(f"{i}\t{lab}\t{txt}\n" for i, (txt, lab) in enumerate(TRAIN_ROWS)),
    )
    assert as_pairs(load_task(folder), "train") == TRAIN_ROWS


def test_jsonl_splits_load_the_same_task_as_the_equivalent_tsv(tmp_path):
    dev = [("fine", "pos"), ("bad", "neg"), ("meh", "mid")]
    from_tsv = load_task(make_task(tmp_path / "a", dev=dev))
    folder = tmp_path / "b"
    write(folder / "train.jsonl", jsonl(TRAIN_ROWS))
    write(folder / "dev.jsonl", jsonl(dev, text_key="text"))
    from_jsonl = load_task(folder)
    assert from_jsonl.labels == from_tsv.labels
    assert from_jsonl.splits == from_tsv.splits


def test_jsonl_numeric_labels_become_strings(tmp_path):
    folder = tmp_path / "t"
    write(folder / "train.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    task = load_task(folder)
    assert task.labels == ["0", "1"]
    assert task.split("train") == [Example("good", 1), Example("bad", 0)]


def test_blank_lines_are_skipped_and_line_numbers_still_count_them(tmp_path):
    folder = tmp_path / "t"
    write(folder / "train.tsv", "sentence\tlabel\n\ngood\tpos\n   \nbad\tneg\n\n")
    assert as_pairs(load_task(folder), "train") == [("good", "pos"), ("bad", "neg")]
    write(folder / "train.jsonl", '\n{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n')
    (folder / "train.tsv").unlink()
    assert as_pairs(load_task(folder), "train") == [("good", "pos"), ("bad", "neg")]
    # line 5 (after two blank lines) is reported as line 5
    write(folder / "train.jsonl", '{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n\n{oops\n')
    with pytest.raises(ValueError, match=r"train\.jsonl line 5 is not valid JSON"):
        load_task(folder)


def test_crlf_line_endings_do_not_leak_into_labels_or_text(tmp_path):
    folder = tmp_path / "t"
    (folder).mkdir()
    (folder / "train.tsv").write_bytes(b"label\tsentence\r\npos\tgood one\r\nneg\tbad one\r\n")
    assert as_pairs(load_task(folder), "train") == [("good one", "pos"), ("bad one", "neg")]


# --- the label set ---------------------------------------------------------------------------------


def test_labels_default_to_the_sorted_labels_seen_in_train(tmp_path):
    rows = [("x", "zebra"), ("y", "apple"), ("z", "mango"), ("w", "apple")]
    task = load_task(make_task(tmp_path / "t", train=rows))
    assert task.labels == ["apple", "mango", "zebra"]
    assert [e.label for e in task.split("train")] == [2, 0, 1, 0]


def test_task_json_labels_fix_the_order_and_the_indices(tmp_path):
    task = load_task(make_task(tmp_path / "t", spec={"labels": ["pos", "neg", "mid"], "description": "toy"}))
    assert task.labels == ["pos", "neg", "mid"]
    assert [e.label for e in task.split("train")] == [0, 1, 1, 0, 2]


def test_task_json_labels_may_include_a_label_absent_from_train(tmp_path):
    task = load_task(make_task(tmp_path / "t", spec={"labels": ["pos", "neg", "mid", "unused"]}))
    assert task.labels[-1] == "unused"
    assert task.balance("train")["unused"] == 0


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_label_not_in_task_json_in_any_split_is_an_error_naming_file_line_label_and_known_labels(tmp_path, split):
    rows = {"train": list(TRAIN_ROWS), "dev": [("ok", "pos")], "test": [("ok", "neg")]}
    rows[split] = rows[split] + [("surprise", "wow")]
    line = len(rows[split]) + 1  # the header is line 1
    folder = make_task(
        tmp_path / "t", train=rows["train"], dev=rows["dev"], test=rows["test"], spec={"labels": ["pos", "neg", "mid"]}
    )
    with pytest.raises(ValueError) as info:
        load_task(folder)
    message = str(info.value)
    assert f"{split}.tsv line {line}" in message
    assert "'wow'" in message
    assert "pos, neg, mid" in message
    assert "task.json" in message


@pytest.mark.parametrize("split", ["dev", "test"])
def test_dev_or_test_label_absent_from_train_is_an_error_without_task_json(tmp_path, split):
    extra = {split: [("fine", "pos"), ("what", "other")]}
    folder = make_task(tmp_path / "t", **extra)
    with pytest.raises(ValueError) as info:
        load_task(folder)
    message = str(info.value)
    assert f"{split}.tsv line 3" in message and "'other'" in message
    assert "mid, neg, pos" in message and "train.tsv" in message


def test_label_words_are_read_from_task_json(tmp_path):
    spec = {"labels": ["neg", "pos", "mid"], "label_words": {"neg": " bad", "pos": " good", "mid": " so"}}
    task = load_task(make_task(tmp_path / "t", spec=spec))
    assert task.label_words == {"neg": " bad", "pos": " good", "mid": " so"}
    assert load_task(make_task(tmp_path / "u")).label_words == {}


@pytest.mark.parametrize(
    "words",
    [
        {"neg": " bad", "pos": " good"},  # misses mid
        {"neg": " bad", "pos": " good", "mid": " so", "extra": " x"},  # names a label that does not exist
    ],
)
def test_label_words_must_cover_exactly_the_labels(tmp_path, words):
    folder = make_task(tmp_path / "t", spec={"label_words": words})
    with pytest.raises(
        ValueError, match=r"task\.json.*label_words must give one word for each label \(mid, neg, pos\)"
    ):
        load_task(folder)


def test_unknown_task_json_key_is_an_error_listing_the_valid_keys(tmp_path):
    folder = make_task(tmp_path / "t", spec={"labels": ["pos", "neg", "mid"], "lables": []})
    with pytest.raises(ValueError, match=r"unknown key\(s\) lables; valid keys are labels, label_words, description"):
        load_task(folder)


def test_duplicate_label_in_task_json_is_an_error(tmp_path):
    folder = make_task(tmp_path / "t", spec={"labels": ["pos", "neg", "mid", "pos"]})
    with pytest.raises(ValueError, match=r"task\.json.*'pos' more than once"):
        load_task(folder)


@pytest.mark.parametrize(
    "spec, problem",
    [
        # a string would otherwise be taken character by character as the labels p, o, s, " ", n, ...
        ({"labels": "pos neg mid"}, "'labels' must be a list"),
        ({"label_words": [" good", " bad", " so"]}, "'label_words' must be an object"),
        ({"prefix_text": " "}, "'prefix_text' must be a non-empty string"),
        ({"prefix_text": ["a", "review"]}, "'prefix_text' must be a non-empty string"),
        (["pos", "neg", "mid"], "must be a JSON object"),
    ],
)
def test_task_json_of_the_wrong_shape_is_a_value_error_naming_it(tmp_path, spec, problem):
    folder = make_task(tmp_path / "t", spec=spec)
    with pytest.raises(ValueError, match=r"task\.json") as info:
        load_task(folder)
    assert problem in str(info.value)


def test_task_json_that_is_not_json_is_an_error_naming_it(tmp_path):
    folder = make_task(tmp_path / "t")
    write(folder / "task.json", "{labels: [pos, neg]}")
    with pytest.raises(ValueError, match=r"task\.json is not valid JSON"):
        load_task(folder)


def test_fewer_than_two_labels_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"1 label\(s\) \(pos\).*at least 2"):
        load_task(make_task(tmp_path / "a", train=[("good", "pos"), ("fine", "pos")]))
    with pytest.raises(ValueError, match=r"1 label\(s\) \(only\).*at least 2"):
        load_task(make_task(tmp_path / "b", spec={"labels": ["only"]}))


# --- Task.balance and Task.split -------------------------------------------------------------------


def test_balance_counts_examples_per_label_in_label_order(tmp_path):
    task = load_task(
        make_task(
            tmp_path / "t", dev=[("a", "pos"), ("b", "pos"), ("c", "neg")], spec={"labels": ["pos", "neg", "mid"]}
        )
    )
    assert list(task.balance("train").items()) == [("pos", 2), ("neg", 2), ("mid", 1)]
    assert list(task.balance("dev").items()) == [("pos", 2), ("neg", 1), ("mid", 0)]


def test_asking_for_a_split_that_does_not_exist_is_an_error_saying_which_exist(tmp_path):
    task = load_task(make_task(tmp_path / "t", dev=[("a", "pos")]))
    with pytest.raises(ValueError, match=r"no test split \(it has train, dev\).*test\.tsv or test\.jsonl"):
        task.split("test")
    with pytest.raises(ValueError, match=r"no test split \(it has train, dev\)"):
        task.balance("test")


# --- malformed folders and files -------------------------------------------------------------------


def test_missing_task_folder_is_a_file_not_found_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"task folder .*nowhere does not exist"):
        load_task(tmp_path / "nowhere")


def test_folder_without_a_train_file_is_a_file_not_found_error(tmp_path):
    folder = tmp_path / "t"
    write(folder / "dev.tsv", tsv([("a", "pos"), ("b", "neg")]))
    with pytest.raises(FileNotFoundError, match=r"has no train\.tsv or train\.jsonl"):
        load_task(folder)


def test_both_tsv_and_jsonl_for_one_split_is_an_error(tmp_path):
    folder = make_task(tmp_path / "t")
    write(folder / "train.jsonl", jsonl(TRAIN_ROWS))
    with pytest.raises(ValueError, match=r"both train\.tsv and train\.jsonl"):
        load_task(folder)


@pytest.mark.parametrize("header", ["text\tlabels", "sentence\tclass", "sentence label", "good\tpos", ""])
def test_header_without_label_and_text_columns_is_an_error_naming_the_file(tmp_path, header):
    folder = tmp_path / "t"
    write(folder / "train.tsv", header + "\nbad\tneg\n")
    with pytest.raises(ValueError, match=r"train\.tsv: the first line must be a header naming a 'label' column"):
        load_task(folder)


@pytest.mark.parametrize("row", ["good\tpos\textra", "no tab here"])
def test_wrong_number_of_fields_is_an_error_naming_file_and_line(tmp_path, row):
    folder = tmp_path / "t"
    write(folder / "train.tsv", f"sentence\tlabel\ngood\tpos\nbad\tneg\n{row}\n")
    with pytest.raises(ValueError, match=r"train\.tsv line 4: \d tab-separated fields, the header has 2"):
        load_task(folder)


def test_a_tab_inside_the_text_is_a_field_count_error_not_a_silent_split(tmp_path):
    folder = make_task(tmp_path / "t", dev=[("ok", "pos"), ("left\tright", "neg")])
    with pytest.raises(ValueError, match=r"dev\.tsv line 3: 3 tab-separated fields"):
        load_task(folder)


@pytest.mark.parametrize("kind", ["tsv", "jsonl"])
def test_empty_text_is_an_error_naming_file_and_line(tmp_path, kind):
    folder = tmp_path / "t"
    rows = [("good", "pos"), ("   ", "neg"), ("bad", "neg")]
    write(folder / f"train.{kind}", tsv(rows) if kind == "tsv" else jsonl(rows))
    line = 3 if kind == "tsv" else 2
    with pytest.raises(ValueError, match=rf"train\.{kind} line {line}: the text is empty"):
        load_task(folder)


def test_train_with_only_a_header_is_an_error(tmp_path):
    folder = tmp_path / "t"
    write(folder / "train.tsv", "sentence\tlabel\n\n")
    with pytest.raises(ValueError, match=r"train\.tsv has no examples"):
        load_task(folder)


@pytest.mark.parametrize("kind", ["tsv", "jsonl"])
def test_non_utf8_bytes_are_an_error_naming_file_and_line(tmp_path, kind):
    folder = tmp_path / "t"
    folder.mkdir()
    good = tsv([("good", "pos"), ("bad", "neg")]) if kind == "tsv" else jsonl([("good", "pos"), ("bad", "neg")])
    bad = "caf\xe9\tpos\n" if kind == "tsv" else '{"text": "caf\xe9", "label": "pos"}\n'
    (folder / f"train.{kind}").write_bytes(good.encode("utf-8") + bad.encode("latin-1"))
    line = 4 if kind == "tsv" else 3
    with pytest.raises(ValueError, match=rf"train\.{kind} is not UTF-8 text: invalid byte 0xe9 at line {line}\b"):
        load_task(folder)


@pytest.mark.parametrize(
    "line, problem",
    [
        ('["good", "pos"]', "expected a JSON object"),
        ('{"text": "good"}', "needs a 'label' and a 'sentence' or 'text' key"),
        ('{"sentence_": "good", "label": "pos"}', "needs a 'label' and a 'sentence' or 'text' key"),
        ('{"text": "good", "label": "pos"', "is not valid JSON"),
    ],
)
def test_malformed_jsonl_line_is_an_error_naming_file_and_line(tmp_path, line, problem):
    folder = tmp_path / "t"
    write(folder / "train.jsonl", jsonl([("good", "pos"), ("bad", "neg")]) + line + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl line 3") as info:
        load_task(folder)
    assert problem in str(info.value)


# --- the repository's real data --------------------------------------------------------------------


def test_repository_sentiment_task_has_labels_0_and_1_and_a_balanced_train_split():
    folder = REPO / "data" / "sentiment_rt"
    if not (folder / "train.tsv").is_file():
        pytest.skip("data/sentiment_rt/train.tsv is not in this checkout")
    task = load_task(folder)
    assert task.labels == ["0", "1"]
    counts = task.balance("train")
    assert counts["0"] > 0 and counts["0"] == counts["1"], counts


# --- task.json's template ---------------------------------------------------------------------------


def test_task_json_template_is_stored_on_the_task_and_is_none_without_one(tmp_path):
    task = load_task(make_task(tmp_path / "t", spec={"template": "Review: {text}\nVerdict:"}))
    assert task.template == "Review: {text}\nVerdict:"
    assert load_task(make_task(tmp_path / "u")).template is None
    assert load_task(make_task(tmp_path / "v", spec={"labels": ["neg", "pos", "mid"]})).template is None


@pytest.mark.parametrize(
    "template, problem",
    [
        ("no field\nhere", "it has no {text}"),
        (["{text} It was"], "not a string"),
        ("{text} given {premise}", "its fields are text, premise"),
        ("{input} It was", "its fields are input"),
        ("{text} [MASK] or [MASK]", "it has 2 [MASK] answer slots"),
    ],
)
def test_a_task_json_template_without_one_text_field_is_a_one_line_error_naming_the_file(tmp_path, template, problem):
    folder = make_task(tmp_path / "t", spec={"template": template})
    with pytest.raises(ValueError) as info:
        load_task(folder)
    message = str(info.value)
    assert str(folder / "task.json") in message and "'template'" in message and "{text}" in message
    assert problem in message and "\n" not in message


def test_tune_reads_out_through_the_task_json_template_unless_a_template_is_given(tmp_path, tokenizer):
    from minilm.tuning.readouts import PLAIN, ClassificationHead, build_readout

    words = {"neg": " bad", "pos": " good", "mid": " so"}
    task = load_task(make_task(tmp_path / "t", spec={"label_words": words, "template": "{text} It was"}))
    readout, _ = build_readout(task, tokenizer, 32)
    assert readout.template == "{text} It was"
    assert readout.after == tokenizer.encode(" It was") and readout.tail == []  # no [MASK]: the slot is the end
    assert build_readout(task, tokenizer, 32, template="{text} So")[0].template == "{text} So"
    assert isinstance(build_readout(task, tokenizer, 32, readout="head")[0], ClassificationHead)  # no template error
    plain = load_task(make_task(tmp_path / "u", spec={"label_words": words}))
    assert build_readout(plain, tokenizer, 32)[0].template == PLAIN
