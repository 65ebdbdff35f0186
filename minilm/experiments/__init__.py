"""Layer 5, experiments: the methods measured against each other (compare), and the memory a piece of work takes.

Docs: docs/results.md, docs/performance.md.
"""

from minilm.experiments.compare import CompareConfig, compare, compare_run
from minilm.experiments.memory import peak_bytes, tensor_bytes

__all__ = ["CompareConfig", "compare", "compare_run", "peak_bytes", "tensor_bytes"]
