"""`python -m minilm ...`: the same command line as `python train.py ...` (minilm.cli).

Docs: docs/cli.md.
"""

import sys

from minilm.cli import main

sys.exit(main(prog="python -m minilm"))
