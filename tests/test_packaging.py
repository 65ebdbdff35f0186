"""The project installs and tests the way the README says: CI runs the README's command, torch 2.13.0 satisfies the pin."""

from __future__ import annotations

import pathlib
import re
from importlib import metadata

from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    install = re.search(r"## Install and test\n+```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert install, "README.md needs an 'Install and test' bash block"
    commands = [line.split("#")[0].strip() for line in install.group(1).splitlines() if "pytest" in line]
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert readme_test_command() in ci_lines


def test_ci_installs_the_local_torch_before_the_project():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.index("torch==2.13.0") < ci.index('-e ".[test')


def test_torch_requirement_admits_2_13_0_and_core_dependencies_are_declared():
    requirements = [Requirement(r) for r in metadata.requires("minilm")]
    core = {r.name: r for r in requirements if r.marker is None}
    assert set(core) == {"torch", "numpy", "tokenizers", "safetensors"}
    assert core["torch"].specifier.contains("2.13.0")
    assert any(r.name == "pytest" and r.marker.evaluate({"extra": "test"}) for r in requirements if r.marker)
    assert metadata.metadata("minilm")["Requires-Python"] == ">=3.10"


def test_readme_python_examples_run(monkeypatch):
    """Every ```python block in the README is a runnable example."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
