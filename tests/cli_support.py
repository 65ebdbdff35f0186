"""Helpers shared by the command-line tests: train.py imported as a module, and the one-line-error check."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (train.py is a script at the repository root)


def fails(capsys, argv: list[str], *fragments: str) -> str:
    """Run train.py in-process; it must exit with code 2 and one stderr line containing every fragment."""
    try:
        code = train.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err
