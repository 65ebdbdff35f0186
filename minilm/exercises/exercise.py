"""An exercise: one library function that computes one equation of the docs, the tests that grade it, hints, mutants.

    grade(f) = all(test(f swapped in wherever the library calls it) for test in exercise.tests)

The reference solution is the library function itself (`target`); its signature, docstring and equation (the
docstring's first line) are read from it, so an exercise never restates what the code says. Mutants are typical
mistakes, each a function with the same signature whose docstring's first line names the mistake: the tests must
reject every one of them (minilm/exercises/verify.py).

Docs: docs/course.md (how an exercise is graded).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STUB_IMPORTS = """from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
"""


def resolve(target: str) -> tuple[Any, str, Any]:
    """(owner, attribute, object) of "package.module:name" or "package.module:Class.method"."""
    module_name, _, qualname = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name, inspect.getattr_static(owner, name) if isinstance(owner, type) else getattr(owner, name)


@dataclass(frozen=True)
class Exercise:
    """One equation to write. `tests` are pytest node ids under the project root; `uses` are extra places the
    learner's function is routed through while grading: (target, adapter), where adapter(f) is what replaces the
    target (how a layer_norm written by the learner runs inside every LayerNorm of the model)."""

    id: str
    target: str
    docs: str
    tests: tuple[str, ...]
    hints: tuple[str, ...]
    mutants: tuple[Callable[..., Any], ...]
    uses: tuple[tuple[str, Callable[[Callable[..., Any]], Any]], ...] = ()
    alternatives: tuple[Callable[..., Any], ...] = field(default=(), repr=False)
    """Correct solutions written differently from the library's (a loop, einsum): the tests must pass them too."""
    imports: str = ""
    """Import lines the learner's stub needs beyond torch (the library's own helpers the function may use)."""

    @property
    def reference(self) -> Callable[..., Any]:
        return resolve(self.target)[2]

    @property
    def name(self) -> str:
        """The function's name in the learner's file."""
        return self.target.rpartition(".")[2].rpartition(":")[2]

    @property
    def equation(self) -> str:
        """The first line of the reference's docstring: the equation it computes."""
        return (self.docstring.splitlines() or [""])[0]

    @property
    def docstring(self) -> str:
        """The reference's own docstring (never one inherited from a base class's method)."""
        return inspect.cleandoc(self.reference.__doc__ or "")

    def stub(self) -> str:
        """The learner's starting file: imports, the signature, the docstring, a pointer to the docs, no body."""
        source = inspect.getsource(self.reference)
        lines = source.splitlines()
        indent = len(lines[0]) - len(lines[0].lstrip())
        lines = [line[indent:] for line in lines]
        start = next(i for i, line in enumerate(lines) if line.startswith("def "))
        end = next(i for i, line in enumerate(lines) if line.rstrip().endswith(":") and i >= start)
        signature = "\n".join(lines[start : end + 1])
        doc = self.docstring
        body = "\n".join(f"    {line}".rstrip() for line in doc.splitlines())
        return (
            f'"""Exercise {self.id}: write `{self.name}` (see {self.docs}).\n\n'
            f"Grade it with:  python train.py exercise check {self.id}\n"
            f"A hint:         python train.py exercise hint {self.id}\n"
            f'"""\n\n{STUB_IMPORTS}{self.imports}\n\n{signature}\n    """{body.strip()}\n    """\n'
            f'    raise NotImplementedError("{self.name} is not written yet: write its body ({self.docs})")\n'
        )
