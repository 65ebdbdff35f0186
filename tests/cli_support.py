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


def tiny_run(
    context: int = 32, steps: int = 6, every: int = 3, windows: int = 8, warmup: int = 2, log: int = 0
) -> list[str]:
    """pretrain flags of a 1-layer, 32-wide model trained for `steps`, evaluated every `every` steps and logged every
    `log` steps (0: as often as it is evaluated)."""
    sizes = f"--vocab 300 --layers 1 --width 32 --heads 2 --context {context} --batch-size 8"
    schedule = f"--max-steps {steps} --eval-every {every} --eval-windows {windows} --log-every {log or every}"
    schedule += f" --warmup-steps {warmup}"
    return f"{sizes} {schedule}".split()


def fast_tune(steps: int) -> list[str]:
    """tune flags of a `steps`-step run of batches of 4 on the CPU, evaluated at its last step."""
    return (
        f"--max-steps {steps} --eval-every {steps} --batch-size 4 --log-every 1 --warmup-steps 1 --device cpu".split()
    )


def pretrain_tiny(tmp_path_factory, context: int = 32, chars: int = 30_000) -> Path:
    """A 1-layer, 32-wide causal run pretrained for a few steps on the head of the Shakespeare text."""
    text = tmp_path_factory.mktemp("data") / "shakespeare_head.txt"
    text.write_text((ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:chars], encoding="utf-8")
    out = tmp_path_factory.mktemp("runs") / "causal"
    assert train.main(["pretrain", "--data", str(text), "--out", str(out), *tiny_run(context)]) == 0
    return out
