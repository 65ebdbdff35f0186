"""The equation map: every equation in docs/ names the code that computes it and a test that checks it, and both exist."""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))
REFERENCE = re.compile(r"`((?:minilm|tests)/[\w/]+\.py)::([\w.]+)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")

# the symbols the core issue asks the docs to cover
REQUIRED = {
    "minilm/attention.py::scaled_dot_product_attention",
    "minilm/attention.py::MultiHeadAttention",
    "minilm/model.py::FeedForward.forward",
    "minilm/model.py::LayerNorm.forward",
    "minilm/objectives.py::causal_lm_loss",
    "minilm/objectives.py::masked_lm_loss",
    "minilm/objectives.py::mask_tokens",
}


def equation_sections(text: str) -> list[tuple[str, str]]:
    """Each $$ ... $$ block with the text that follows it up to the next block or heading."""
    parts = text.split("$$")
    assert len(parts) % 2 == 1, "unbalanced $$ delimiters"
    sections = []
    for index in range(1, len(parts), 2):
        after = re.split(r"\n#+ ", parts[index + 1])[0]
        sections.append((parts[index].strip(), after))
    return sections


def code_symbol_exists(path: str, symbol: str) -> bool:
    try:
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    except ModuleNotFoundError as missing:  # minilm/kernels needs the optional Triton: read the file instead
        assert missing.name == "triton", missing
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        return symbol in {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    target = module
    for name in symbol.split("."):
        if not hasattr(target, name):
            return False
        target = getattr(target, name)
    return True


def is_test_in_file(path: str, symbol: str) -> bool:
    """A test function `test_x`, or `Class.test_x`, defined in the test file."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}.{item.name}" for item in node.body if isinstance(item, ast.FunctionDef))
    return symbol.split(".")[-1].startswith("test_") and symbol in names


def test_docs_folder_has_pages():
    assert len(PAGES) >= 4


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_equation_points_at_code_and_a_test(page):
    for equation, after in equation_sections(page.read_text(encoding="utf-8")):
        paths = [path for path, _ in REFERENCE.findall(after)]
        assert any(p.startswith("minilm/") for p in paths), f"{page.name}: no code reference after $${equation[:60]}...$$"
        assert any(p.startswith("tests/") for p in paths), f"{page.name}: no test reference after $${equation[:60]}...$$"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_reference_exists(page):
    text = page.read_text(encoding="utf-8")
    for path, symbol in REFERENCE.findall(text):
        assert (ROOT / path).is_file(), f"{page.name}: {path} does not exist"
        exists = code_symbol_exists(path, symbol) if path.startswith("minilm/") else is_test_in_file(path, symbol)
        assert exists, f"{page.name}: {path}::{symbol} does not exist"
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+:", target):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_docs_cover_the_core_equations():
    referenced = {f"{path}::{symbol}" for page in PAGES for path, symbol in REFERENCE.findall(page.read_text(encoding="utf-8"))}
    assert REQUIRED <= referenced, f"not covered: {sorted(REQUIRED - referenced)}"


def test_the_checker_catches_a_missing_symbol_and_a_missing_test():
    assert not code_symbol_exists("minilm/attention.py", "no_such_function")
    assert not is_test_in_file("tests/test_attention.py", "test_no_such_test")
    assert code_symbol_exists("minilm/model.py", "LayerNorm.forward")
    assert is_test_in_file("tests/test_docs.py", "test_docs_cover_the_core_equations")
