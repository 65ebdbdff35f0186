"""Exercise mode: the grader accepts the library's function and correct ones written differently, rejects every
mutant, runs the learner's function inside the model, and the command's mistakes are one line with exit code 2.

The grading runs pytest, so these tests run it in processes of their own (pytest does not nest)."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minilm.exercises import COURSE, EXERCISES
from minilm.exercises.catalog.model import top_k_by_loop
from minilm.exercises.exercise import STUB_IMPORTS
from minilm.exercises.registry import CATALOG, ORDER

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def verified(tmp_path_factory) -> dict[str, dict[str, bool]]:
    """Every exercise graded with its reference, its alternatives and its mutants, in one process."""
    result = run("-m", "minilm.exercises.verify", cwd=tmp_path_factory.mktemp("verify"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_course_orders_every_exercise_once():
    assert sorted(ORDER) == sorted(CATALOG) and len(set(ORDER)) == len(ORDER) == len(COURSE)


def test_the_course_lists_every_exercise_with_the_command_that_starts_it():
    course = (ROOT / "docs" / "course.md").read_text(encoding="utf-8")
    for e in COURSE:
        assert f"| `{e.id}` |" in course and f"`python train.py exercise start {e.id}`" in course, e.id


def test_every_exercise_has_docs_hints_at_least_two_mutants_and_tests_that_exist():
    for e in COURSE:
        assert e.equation and e.hints and len(e.mutants) >= 2, e.id
        page, _, anchor = e.docs.partition("#")
        headings = re.findall(r"^#+ (.+)$", (ROOT / page).read_text(encoding="utf-8"), re.M)
        assert anchor in {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}, e.docs
        for node in e.tests:
            path, _, name = node.partition("::")
            assert name.split("[")[0] in (ROOT / path).read_text(encoding="utf-8"), node
        for mutant in e.mutants:
            assert inspect.signature(mutant).parameters.keys() == inspect.signature(e.reference).parameters.keys()


@pytest.mark.parametrize("exercise_id", list(EXERCISES))
def test_the_reference_and_every_alternative_pass_and_every_mutant_fails(verified, exercise_id):
    results = verified[exercise_id]
    assert results["reference"], f"{exercise_id}: the library's own function fails its exercise"
    for name, passed in results.items():
        if name.startswith("alternative:"):
            assert passed, f"{exercise_id}: the correct {name} fails"
        if name.startswith("mutant:"):
            assert not passed, f"{exercise_id}: the tests do not reject {name}"


def test_a_wrong_mask_fails_the_model_level_kv_cache_and_prefix_tests(tmp_path):
    """The learner's function runs inside the whole model: a top-left causal diagonal breaks the KV cache and the
    prefix, which only the model-level tests (not the mask's unit test) would show."""
    script = (
        "from minilm.exercises import EXERCISES\n"
        "from minilm.exercises.catalog.model import mask_top_left\n"
        "from minilm.exercises.grade import run_tests\n"
        "e = EXERCISES['attention-mask']\n"
        "model_level = [t for t in e.tests if 'test_model.py' in t or 'test_generate.py' in t]\n"
        "e = type(e)(**{**e.__dict__, 'tests': tuple(model_level)})\n"
        "for o in run_tests(e, mask_top_left): print(o.result, o.test)\n"
    )
    result = run("-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    failed = [line for line in result.stdout.splitlines() if line.startswith("failed")]
    assert any("test_kv_cache_chunks_give_the_same_logits_as_one_pass" in line for line in failed), result.stdout
    assert any("prefix" in line for line in failed), result.stdout
    assert any("test_kv_cache_decoding_gives_the_same_logits_as_recomputing" in line for line in failed)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    err = result.stderr.strip()
    assert result.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, result.stderr
    for fragment in fragments:
        assert fragment in err, err


def status(listing: str, exercise_id: str) -> str:
    """The status column of `exercise list` for one exercise."""
    line = next(line for line in listing.splitlines() if line.split()[0] == exercise_id)
    return " ".join(line.split()[1:-2])


def test_start_check_hint_and_list_from_a_stub_to_a_passing_solution_written_differently(tmp_path):
    train = str(ROOT / "train.py")
    listed = run(train, "exercise", "list", cwd=tmp_path)
    assert listed.returncode == 0 and all(f"{e.id} " in listed.stdout for e in COURSE)
    assert status(listed.stdout, "top-k") == "not started"

    assert run(train, "exercise", "start", "top-k", cwd=tmp_path).returncode == 0
    stub = tmp_path / "exercises" / "top-k.py"
    assert "def top_k_filter(logits: Tensor, k: int) -> Tensor:" in stub.read_text(encoding="utf-8")
    checked = run(train, "exercise", "check", "top-k", cwd=tmp_path)
    assert checked.returncode == 1 and "not written yet" in checked.stdout and "FAIL" in checked.stdout
    assert status(run(train, "exercise", "list", cwd=tmp_path).stdout, "top-k") == "failing"

    again = run(train, "exercise", "start", "top-k", cwd=tmp_path)  # never overwrites the learner's file
    one_line_error(again, "already exists")
    assert "not written yet" in stub.read_text(encoding="utf-8")

    solution = tmp_path / "mine.py"  # a loop, not the library's sort-and-scatter
    solution.write_text(
        STUB_IMPORTS + "\n\n" + inspect.getsource(top_k_by_loop).replace("top_k_by_loop", "top_k_filter")
    )
    checked = run(train, "exercise", "check", "top-k", "--file", str(solution), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all 3 properties hold" in checked.stdout and "FAIL" not in checked.stdout
    solution.replace(stub)
    assert run(train, "exercise", "check", "top-k", cwd=tmp_path).returncode == 0
    assert status(run(train, "exercise", "list", cwd=tmp_path).stdout, "top-k") == "passing"

    first = run(train, "exercise", "hint", "top-k", cwd=tmp_path)
    assert first.returncode == 0 and first.stdout.startswith("hint 1 of 2:")
    last = run(train, "exercise", "hint", "top-k", "3", cwd=tmp_path)
    assert "minilm/model/sampling.py" in last.stdout


def test_exercise_mistakes_are_one_line_with_exit_code_2(tmp_path):
    train = str(ROOT / "train.py")
    one_line_error(run(train, "exercise", "check", "no-such", cwd=tmp_path), "no exercise 'no-such'")
    one_line_error(run(train, "exercise", "check", "top-p", cwd=tmp_path), "does not exist", "exercise start top-p")
    (tmp_path / "other.py").write_text("def something_else(logits, p):\n    return logits\n")
    one_line_error(
        run(train, "exercise", "check", "top-p", "--file", "other.py", cwd=tmp_path), "defines no function top_p_filter"
    )
    (tmp_path / "broken.py").write_text("import torch\n\ndef top_p_filter(logits, p)\n    return logits\n")
    one_line_error(run(train, "exercise", "check", "top-p", "--file", "broken.py", cwd=tmp_path), "broken.py:3")
    (tmp_path / "raises.py").write_text("import torch\nimport no_such_module\n")
    one_line_error(
        run(train, "exercise", "check", "top-p", "--file", "raises.py", cwd=tmp_path), "raises.py:2", "no_such_module"
    )
