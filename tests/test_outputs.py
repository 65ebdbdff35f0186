"""Nothing lost: no command deletes, empties or overwrites a folder (or a file) that minilm did not write for it.

The rule itself (minilm/outputs.py), then every command that writes a folder or a file: pretrain, tune, instruct,
compare, plot and classify's report. Each refused case is one line, exit code 2, and every file stays as it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cli_support import fails, fast_tune, pretrain_tiny, tiny_run, train

from minilm.outputs import MARKER, OutputKind, check_output, claim_output, output_kind

KIND = OutputKind("thing", "a thing", ("a.json", "b.bin", "sub/"))
OTHER = OutputKind("other", "another thing", ("c.json",))
FAST_TUNE = fast_tune(2)
TINY = tiny_run(steps=2, every=2, windows=4, warmup=1, log=1)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (recursively) with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---- the rule ----------------------------------------------------------------------------------------------
def test_a_new_or_empty_folder_may_be_written_but_not_resumed(tmp_path):
    check_output(tmp_path / "new", KIND)
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", KIND)
    with pytest.raises(ValueError, match="holds no thing to continue"):
        check_output(tmp_path / "empty", KIND, resume=True)


def test_a_folder_without_the_marker_is_never_replaced_even_with_overwrite(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(ValueError, match="holds no minilm output"):
            check_output(tmp_path / "mine", KIND, **flags)


def test_another_kind_of_output_is_refused_and_named(tmp_path):
    claim_output(tmp_path / "o", OTHER, fresh=True)
    (tmp_path / "o" / "c.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds another thing written by `train.py other`, not a thing"):
        check_output(tmp_path / "o", KIND, overwrite=True, known=[OTHER])


def test_the_same_kind_needs_resume_or_overwrite(tmp_path):
    claim_output(tmp_path / "t", KIND, fresh=True)
    (tmp_path / "t" / "a.json").write_text("{}")
    with pytest.raises(
        ValueError, match="already holds a thing: continue it with --resume, start over with --overwrite"
    ):
        check_output(tmp_path / "t", KIND)
    check_output(tmp_path / "t", KIND, resume=True)
    check_output(tmp_path / "t", KIND, overwrite=True)


def test_a_folder_the_command_reads_is_never_its_output(tmp_path):
    (tmp_path / "base").mkdir()
    with pytest.raises(ValueError, match="is what this command reads \\(--base"):
        check_output(tmp_path / "base", KIND, overwrite=True, reads=[("--base", tmp_path / "base")])
    claim_output(tmp_path / "t", KIND, fresh=True)
    with pytest.raises(ValueError, match="reads \\(--data"):  # a file the overwrite would replace
        check_output(tmp_path / "t", KIND, overwrite=True, reads=[("--data", tmp_path / "t" / "a.json")])


def test_overwrite_removes_only_the_kinds_own_files(tmp_path):
    folder = tmp_path / "t"
    claim_output(folder, KIND, fresh=True)
    for name in ("a.json", "b.bin", "notes.txt"):
        (folder / name).write_text(name)
    (folder / "sub").mkdir()
    (folder / "sub" / "x").write_text("x")
    claim_output(folder, KIND, fresh=True)
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "notes.txt"]
    assert output_kind(folder) == "thing"


def test_a_folder_written_before_the_marker_is_recognised_by_its_files(tmp_path):
    legacy = OutputKind("old", "an old thing", ("x.json", "y.json"), legacy=("x.json", "y.json"))
    (tmp_path / "x.json").write_text("{}")
    assert output_kind(tmp_path, [legacy]) is None
    (tmp_path / "y.json").write_text("{}")
    assert output_kind(tmp_path, [legacy]) == "old"


# ---- every command that writes a folder --------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory, context=128, chars=20000)


@pytest.fixture(scope="module")
def text_file(base_run) -> Path:
    return Path(json.loads((base_run / "train_args.json").read_text())["data"][0])


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("task") / "merry"
    folder.mkdir()
    rows = "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in [("O happy day", 1), ("Alas, woe", 0)] * 4)
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text(rows, encoding="utf-8")
    (folder / "task.json").write_text(json.dumps({"labels": ["0", "1"], "label_words": {"0": " sad", "1": " merry"}}))
    return folder


@pytest.fixture(scope="module")
def instruction_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("instructions")
    rows = [{"instruction": "Give the first word.", "input": "to be or not", "output": "to"}]
    for name in ("train.jsonl", "dev.jsonl"):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def users_folder(tmp_path: Path) -> Path:
    """A folder of the user's own, like ~/projects: files minilm did not write."""
    folder = tmp_path / "mine"
    (folder / "project").mkdir(parents=True)
    (folder / "notes.txt").write_text("do not lose me")
    (folder / "project" / "paper.tex").write_text("\\section{}")
    return folder


def test_pretrain_refuses_a_users_folder_even_with_overwrite(capsys, tmp_path, text_file):
    folder = users_folder(tmp_path)
    before = snapshot(folder)
    for extra in ([], ["--overwrite"]):
        fails(
            capsys,
            ["pretrain", "--data", str(text_file), "--out", str(folder), *TINY, *extra],
            "holds no minilm output",
        )
    assert snapshot(folder) == before


def test_pretrain_overwrite_replaces_its_run_and_keeps_other_files(capsys, tmp_path, text_file):
    out = tmp_path / "r"
    assert train.main(["pretrain", "--data", str(text_file), "--out", str(out), *TINY]) == 0
    (out / "notes.txt").write_text("mine")
    assert (
        train.main(["pretrain", "--data", str(text_file), "--out", str(out), *TINY, "--overwrite", "--seed", "1"]) == 0
    )
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "train_args.json").read_text())["seed"] == 1


def test_pretrain_into_the_folder_of_its_data_is_refused(capsys, tmp_path, text_file):
    data = tmp_path / "corpus"
    data.mkdir()
    (data / "a.txt").write_text(text_file.read_text())
    before = snapshot(data)
    fails(capsys, ["pretrain", "--data", str(data), "--out", str(data), *TINY, "--overwrite"], "reads (--data")
    assert snapshot(data) == before


def test_tune_refuses_its_base_and_a_folder_of_runs(capsys, tmp_path, base_run, task_dir):
    runs = base_run.parent
    before_base, before_runs = snapshot(base_run), snapshot(runs)
    common = ["tune", "--base", str(base_run), "--method", "bitfit", "--task", str(task_dir), *FAST_TUNE]
    fails(capsys, [*common, "--out", str(base_run), "--overwrite"], "is what this command reads (--base")
    fails(capsys, [*common, "--out", str(runs), "--overwrite"], "holds no minilm output")
    assert snapshot(base_run) == before_base and snapshot(runs) == before_runs


def test_tune_refuses_a_pretrained_run_as_its_output(capsys, tmp_path, base_run, task_dir, text_file):
    other_run = tmp_path / "run"
    assert train.main(["pretrain", "--data", str(text_file), "--out", str(other_run), *TINY]) == 0
    before = snapshot(other_run)
    fails(
        capsys,
        [
            "tune",
            "--base",
            str(base_run),
            "--method",
            "bitfit",
            "--task",
            str(task_dir),
            *FAST_TUNE,
            "--out",
            str(other_run),
            "--overwrite",
        ],
        "holds a run written by `train.py pretrain`, not a tuned model",
    )
    assert snapshot(other_run) == before


def test_instruct_never_deletes_its_base_or_a_folder_of_runs(capsys, tmp_path, base_run, instruction_dir):
    """The bug this rule came from: `instruct --out runs` deleted every run, `--out <base> --overwrite` the base."""
    runs = base_run.parent
    before = snapshot(runs)
    common = [
        "instruct",
        "--base",
        str(base_run),
        "--data",
        str(instruction_dir),
        "--max-steps",
        "1",
        "--batch-size",
        "1",
    ]
    fails(capsys, [*common, "--out", str(base_run), "--overwrite"], "is what this command reads (--base")
    fails(capsys, [*common, "--out", str(runs)], "holds no minilm output")
    fails(capsys, [*common, "--out", str(runs), "--overwrite"], "holds no minilm output")
    assert snapshot(runs) == before


def test_instruct_refuses_a_users_folder_and_replaces_its_own_run_only_with_overwrite(
    capsys, tmp_path, base_run, instruction_dir
):
    folder = users_folder(tmp_path)
    before = snapshot(folder)
    common = [
        "instruct",
        "--base",
        str(base_run),
        "--data",
        str(instruction_dir),
        "--max-steps",
        "1",
        "--batch-size",
        "1",
        "--eval-examples",
        "1",
    ]
    fails(capsys, [*common, "--out", str(folder), "--overwrite"], "holds no minilm output")
    assert snapshot(folder) == before
    out = tmp_path / "inst"
    assert train.main([*common, "--out", str(out)]) == 0
    fails(capsys, [*common, "--out", str(out)], "already holds an instruction-tuned run", "--resume", "--overwrite")
    assert train.main([*common, "--out", str(out), "--overwrite"]) == 0


def test_compare_refuses_a_users_folder_and_its_own_results_without_overwrite(capsys, tmp_path, base_run, task_dir):
    folder = users_folder(tmp_path)
    before = snapshot(folder)
    common = [
        "compare",
        "--base",
        str(base_run),
        "--task",
        str(task_dir),
        "--quick",
        "--methods",
        "bitfit",
        "--readouts",
        "head",
    ]
    fails(capsys, [*common, "--out", str(folder), "--overwrite"], "holds no minilm output")
    assert snapshot(folder) == before
    out = tmp_path / "cmp"
    assert train.main([*common, "--out", str(out)]) == 0
    fails(capsys, [*common, "--out", str(out)], "already holds a comparison", "--overwrite")
    assert train.main([*common, "--out", str(out), "--overwrite"]) == 0


# ---- every command that writes one file --------------------------------------------------------------------
def test_plot_replaces_only_a_picture_it_drew(capsys, tmp_path, base_run):
    pytest.importorskip("matplotlib")
    foreign = tmp_path / "notes.png"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n not drawn by minilm")
    readme = tmp_path / "README.md"
    readme.write_text("# mine")
    for target in (foreign, readme):
        before = target.read_bytes()
        fails(capsys, ["plot", "--from", str(base_run), "--output", str(target)], "was not written by minilm")
        assert target.read_bytes() == before
    ours = tmp_path / "loss.png"
    assert train.main(["plot", "--from", str(base_run), "--output", str(ours)]) == 0
    assert train.main(["plot", "--from", str(base_run), "--output", str(ours)]) == 0  # its own picture: replaced
    fails(capsys, ["plot", "--from", str(base_run), "--output", str(tmp_path)], "is a folder")


def test_classify_replaces_only_a_report_it_wrote(capsys, tmp_path, base_run, task_dir):
    tuned = tmp_path / "tuned"
    assert (
        train.main(
            [
                "tune",
                "--base",
                str(base_run),
                "--method",
                "bitfit",
                "--task",
                str(task_dir),
                *FAST_TUNE,
                "--out",
                str(tuned),
            ]
        )
        == 0
    )
    foreign = tmp_path / "results.json"
    foreign.write_text('{"mine": true}')
    fails(
        capsys,
        ["classify", "--from", str(tuned), "--task", str(task_dir), "--report", str(foreign)],
        "was not written by minilm",
    )
    assert json.loads(foreign.read_text()) == {"mine": True}
    report = tmp_path / "report.json"
    for _ in range(2):  # its own report: replaced
        assert train.main(["classify", "--from", str(tuned), "--task", str(task_dir), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["written_by"] == "minilm classify"
