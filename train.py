"""minilm's command line (minilm/cli/): `python train.py --help` lists the commands; no command means pretrain."""

import sys

from minilm.cli import main

if __name__ == "__main__":
    sys.exit(main())
