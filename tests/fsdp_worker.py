"""Run under torchrun by tests/test_sharding.py: `train.py pretrain --fsdp` runs in one launch.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/fsdp_worker.py OUT STOP FLAGS...

OUT/whole is the run of FLAGS from start to end. OUT/resumed is the same run interrupted in every process at step STOP
(a KeyboardInterrupt, as from Ctrl-C), then continued with `--resume`. OUT/masked is FLAGS with the masked objective,
whose loss calls the model's `hidden_states` instead of its forward. One launch, so the test pays for starting
the processes once; the process group is made here, so the three runs share it (pretrain leaves a group it did not
make in place).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

from minilm.cli import main
from minilm.training.loop import Loop


def interrupted_at(stop: int):
    """Loop.train_step, raising KeyboardInterrupt when the loop is about to take step `stop` + 1."""
    train_step = Loop.train_step

    def step(self: Loop) -> float:
        if self.step == stop:
            raise KeyboardInterrupt
        return train_step(self)

    return step


if __name__ == "__main__":
    dist.init_process_group("gloo")
    out, stop, flags = Path(sys.argv[1]), int(sys.argv[2]), ["pretrain", "--fsdp", *sys.argv[3:]]
    codes = [main([*flags, "--out", str(out / "whole")])]
    plain = Loop.train_step
    Loop.train_step = interrupted_at(stop)  # type: ignore[method-assign]
    codes.append(main([*flags, "--out", str(out / "resumed")]))
    Loop.train_step = plain  # type: ignore[method-assign]
    codes.append(main(["pretrain", "--out", str(out / "resumed"), "--resume"]))
    codes.append(main([*flags, "--objective", "masked", "--out", str(out / "masked")]))
    dist.destroy_process_group()
    print("exit codes", codes)
    sys.exit(0 if codes == [0, 130, 0, 0] else 1)
