"""Safe files: every write goes to a temp file that is renamed over the target, so a crash never leaves half a file."""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write `data` to `path` so that readers see either the old file or the complete new one.

    The bytes go to a temp file in the same folder, are flushed to disk, and the temp file is
    renamed over `path` (`os.replace` is atomic on POSIX and Windows within one file system).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
