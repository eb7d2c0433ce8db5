"""Atomic file replacement: write beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import os
import secrets

__all__ = ["replacing"]


@contextlib.contextmanager
def replacing(path):
    """Yield a fresh temporary path beside ``path``; on success it replaces ``path``.

    The temporary file is created empty (exclusively, with the default
    permissions) in the target's folder, so that the final ``os.replace`` is
    atomic: readers see the old file or the complete new one, never a part. On
    success the file is fsynced, renamed over ``path`` and the folder fsynced;
    on any exception (KeyboardInterrupt included) it is removed and ``path`` is
    left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        The file to (re)place; its folder must exist.

    Yields
    ------
    str
        The temporary path to write.
    """
    dest = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(dest)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
