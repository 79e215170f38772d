"""Durable files: write, fsync, rename, fsync the directory.

A file either appears whole under its final name or not at all, and once a function
here returns, a power cut does not take it back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | Iterable[bytes], mode: int = 0o640) -> None:
    """Replace ``path`` with ``data`` (bytes, or chunks of them: a file larger than memory) so
    that readers and power cuts see old or new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk keeps no half-written copy
        raise
    fsync_dir(path.parent)


def makedirs_durable(path: Path) -> None:
    """Create ``path`` and its parents, fsyncing each new entry into its parent."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o770)  # less the umask: the appliance's units share with their group (0007)
        except FileExistsError:
            pass
        fsync_dir(p.parent)
