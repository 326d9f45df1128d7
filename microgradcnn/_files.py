"""Atomic file writes: the one way microgradcnn creates or replaces a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomic(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], *, fsync: bool = True
) -> Path:
    """Create or replace the file at exactly ``path`` atomically and return it as a ``Path``.

    ``write(f)`` fills a temporary file in the same directory, which is flushed to disk and then renamed over
    ``path``. Readers see the old file or the new one, never a partial one, even if ``write`` raises or the
    process is interrupted (Ctrl-C included): the temporary file is removed and ``path`` is left as it was.
    Missing parent directories are created. The new file gets the mode a plain ``open()`` would give it.
    ``fsync=False`` skips the flush to disk (milliseconds a file): as atomic for readers, Ctrl-C and a
    killed process, but a crash of the machine may lose the new file; for files cheap to lose (training
    telemetry), never for checkpoints.

    Raises:
        OSError: as the filesystem raises it, with ``path`` named in the message (a full disk, a read-only
            folder, a parent that is a file).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Dot-prefixed temp name in the same directory: os.replace is then a rename on one filesystem, and
        # even a SIGKILL leaves an obviously temporary file, never a plausible half-written one.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, target) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(err, target) from None
    except BaseException:  # KeyboardInterrupt included: never leave a temp file behind
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> Path:
    """``write_atomic`` for bytes already in memory."""
    return write_atomic(path, lambda f: f.write(data), fsync=fsync)


def _naming(err: OSError, target: Path) -> OSError:
    """``err`` as the same OSError subclass whose message names ``target`` (errno kept)."""
    reason = err.strerror or str(err)
    out = type(err)(err.errno, f"cannot write {target}: {reason}")
    out.filename = str(target)
    return out


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask
