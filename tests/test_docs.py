"""The equation map, both ways: every equation in docs/ names the code that computes it and a test that checks it, and
both exist; every module names its docs page, and that page refers back to the module."""

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
    "minilm/model/attention.py::scaled_dot_product_attention",
    "minilm/model/attention.py::MultiHeadAttention",
    "minilm/model/layers.py::FeedForward.forward",
    "minilm/model/layers.py::LayerNorm.forward",
    "minilm/training/objectives.py::causal_lm_loss",
    "minilm/training/objectives.py::masked_lm_loss",
    "minilm/training/objectives.py::mask_tokens",
}
MODULES = sorted(p.relative_to(ROOT) for p in (ROOT / "minilm").rglob("*.py"))
DOCS_LINE = re.compile(r"^Docs: (.+)$", re.M)
PAGE = re.compile(r"docs/([\w-]+\.md)")


def equation_sections(text: str) -> list[tuple[str, str]]:
    """Each $$ ... $$ block with the text that follows it up to the next block or heading."""
    parts = text.split("$$")
    assert len(parts) % 2 == 1, "unbalanced $$ delimiters"
    sections = []
    for index in range(1, len(parts), 2):
        after = re.split(r"\n#+ ", parts[index + 1])[0]
        sections.append((parts[index].strip(), after))
    return sections


def defined_in_source(path: pathlib.Path, symbol: str) -> bool:
    """Whether `symbol` (a name, or Class.method) is defined in the file, read without importing it."""
    scope: list[ast.stmt] = ast.parse(path.read_text(encoding="utf-8")).body
    for name in symbol.split("."):
        found = [node for node in scope if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name]
        if not found:
            return False
        scope = found[0].body
    return True


def code_symbol_exists(path: str, symbol: str) -> bool:
    try:
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    except ModuleNotFoundError as missing:  # minilm/model/kernels needs the optional Triton: read the file instead
        assert missing.name == "triton", missing
        return defined_in_source(ROOT / path, symbol)
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
        assert any(p.startswith("minilm/") for p in paths), (
            f"{page.name}: no code reference after $${equation[:60]}...$$"
        )
        assert any(p.startswith("tests/") for p in paths), (
            f"{page.name}: no test reference after $${equation[:60]}...$$"
        )


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
    referenced = {
        f"{path}::{symbol}" for page in PAGES for path, symbol in REFERENCE.findall(page.read_text(encoding="utf-8"))
    }
    assert REQUIRED <= referenced, f"not covered: {sorted(REQUIRED - referenced)}"


def test_the_checker_catches_a_missing_symbol_and_a_missing_test():
    assert not code_symbol_exists("minilm/model/attention.py", "no_such_function")
    assert not is_test_in_file("tests/test_attention.py", "test_no_such_test")
    assert code_symbol_exists("minilm/model/layers.py", "LayerNorm.forward")
    assert is_test_in_file("tests/test_docs.py", "test_docs_cover_the_core_equations")


def test_a_module_that_needs_a_missing_package_is_checked_from_its_source_methods_included():
    """Without Triton installed, minilm/model/kernels/flash_attention.py cannot be imported; its symbols are read."""
    kernel = ROOT / "minilm/model/kernels/flash_attention.py"
    assert defined_in_source(kernel, "FlashAttention.backward")
    assert defined_in_source(kernel, "FlashAttention")
    assert not defined_in_source(kernel, "FlashAttention.no_such_method")
    assert not defined_in_source(kernel, "backward")  # a method is not a module-level name


def module_pages(path: pathlib.Path) -> list[str]:
    """The docs pages a module's docstring names on its `Docs:` line."""
    docstring = ast.get_docstring(ast.parse((ROOT / path).read_text(encoding="utf-8"))) or ""
    line = DOCS_LINE.search(docstring)
    return PAGE.findall(line.group(1)) if line else []


def module_name(path: pathlib.Path) -> str:
    """How docs refer to a module: its path, or its folder's path (with a slash) for a package's __init__.py."""
    return f"{path.parent.as_posix()}/" if path.name == "__init__.py" else path.as_posix()


@pytest.mark.parametrize("module", MODULES, ids=[m.as_posix() for m in MODULES])
def test_every_module_names_its_docs_page_and_the_page_refers_back(module):
    pages = module_pages(module)
    assert pages, f"{module}: its docstring has no `Docs: docs/<page>.md` line"
    for page in pages:
        assert (ROOT / "docs" / page).is_file(), f"{module} names docs/{page}, which does not exist"
    texts = [(ROOT / "docs" / page).read_text(encoding="utf-8") for page in pages]
    assert any(module_name(module) in text for text in texts), f"none of {pages} mentions {module_name(module)}"


def test_the_back_reference_check_reads_the_docs_line():
    assert module_pages(pathlib.Path("minilm/model/attention.py")) == ["attention.md", "kernels.md"]
    assert module_name(pathlib.Path("minilm/model/__init__.py")) == "minilm/model/"
