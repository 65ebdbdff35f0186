"""The project installs and tests as the README says: CI runs the README's command, torch 2.13.0 satisfies the pin."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    install = re.search(
        r"## Install and test\n+```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S
    )
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


def test_the_cuda_extra_installs_triton_only_where_triton_publishes_wheels():
    """The README's install (`.[test,cuda]`) works on macOS and Windows: Triton's marker is false there."""
    triton = [Requirement(r) for r in metadata.requires("minilm") if r.startswith("triton")]
    assert len(triton) == 1 and triton[0].marker is not None
    assert triton[0].marker.evaluate({"extra": "cuda", "sys_platform": "linux"})
    for platform in ("darwin", "win32"):
        assert not triton[0].marker.evaluate({"extra": "cuda", "sys_platform": platform})


def test_readme_python_examples_run(monkeypatch):
    """Every ```python block in the README is a runnable example (a ```py block needs a run folder and an optional
    package: the Hugging Face one runs in tests/test_huggingface.py)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})


def test_python_dash_m_minilm_runs_the_same_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "minilm", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m minilm" in result.stdout
    for command in ("pretrain", "generate", "tune", "classify", "instruct", "compare"):
        assert command in result.stdout


def test_the_minilm_console_script_is_declared_and_runs():
    scripts = {
        e.name: e.value for e in metadata.entry_points(group="console_scripts") if e.dist and e.dist.name == "minilm"
    }
    assert scripts == {"minilm": "minilm.cli:console"}
    path = shutil.which("minilm") or str(pathlib.Path(sys.executable).parent / "minilm")
    if not pathlib.Path(path).exists():
        pytest.skip("the console script is installed only by `pip install -e .`")
    result = subprocess.run([path, "tune", "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "usage: minilm tune" in result.stdout, result.stderr


def test_train_py_is_a_shim_of_a_few_lines():
    lines = [line for line in (ROOT / "train.py").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) <= 8 and "from minilm.cli import main" in lines
