"""The package is layered: a module imports only from its own layer or a lower one, and no imports go in a circle.

    0 bpe, files, outputs, settings, tokenizer  <  1 model  <  2 training  <  3 prompting  <  4 tuning
    <  5 experiments, exercises  <  6 cli  <  the package itself (minilm/__init__.py, minilm/__main__.py)

Every import is read from the source (at module level and inside functions), so a hidden import counts too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = {
    "bpe": 0,
    "files": 0,
    "outputs": 0,
    "settings": 0,
    "task_files": 0,
    "tokenizer": 0,
    "model": 1,
    "training": 2,
    "prompting": 3,
    "tuning": 4,
    "experiments": 5,
    "exercises": 5,
    "cli": 6,
}
TOP = 7


def module_of(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(p): p for p in sorted((ROOT / "minilm").rglob("*.py"))}


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and to docs/layout.md")
    return LAYERS[parts[1]]


def imports(source: str, package: str, modules: set[str]) -> set[str]:
    """The minilm modules that `source` imports (`from a import b` counts as module a.b when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "minilm"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import, resolved against the importing package
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] != "minilm":
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def graph() -> dict[str, set[str]]:
    modules = set(MODULES)
    edges = {}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges[name] = imports(path.read_text(encoding="utf-8"), package, modules) - {name}
    return edges


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in edges.items()
        for b in targets
        if layer(b) > layer(a)
    )


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_module_imports_only_its_own_layer_or_lower():
    assert upward(graph()) == []


def test_no_import_cycle_in_the_package():
    assert cycle(graph()) is None


def test_the_layer_check_catches_an_upward_import_and_a_cycle():
    source = "from minilm.tuning.tuned import TunedModel\nimport minilm.files\n"
    found = imports(source, "minilm.model", set(MODULES))
    assert found == {"minilm.tuning.tuned", "minilm.files"}
    assert upward({"minilm.model.transformer": found}) == [
        "minilm.model.transformer (layer 1) imports minilm.tuning.tuned (layer 4)"
    ]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_an_import_inside_a_function_counts_too():
    source = "def f():\n    from minilm.cli import main\n"
    assert imports(source, "minilm.training", set(MODULES)) == {"minilm.cli"}


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_every_layer_is_in_the_layout_page(folder):
    layout = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    assert f"minilm/{folder}" in layout
