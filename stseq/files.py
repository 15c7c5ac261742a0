"""Atomic file writes: a file is either its old version or its complete new one, never a torn
mix, whatever happens during the write (an exception, a full disk, kill -9, a power cut).

The new content goes to a temporary file in the same folder (same file system, so the final
rename is atomic), is flushed and fsync'ed, then ``os.replace`` puts it in place and the folder
is fsync'ed so that the rename itself survives a crash.
"""

import contextlib
import os
import tempfile
from pathlib import Path

TEMPORARY_SUFFIX = ".partial"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_options):
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``
    (flushed and fsync'ed first), on an exception it is removed and ``path`` is left as it was.
    Folders are created.

    Example::

        with atomic_write("runs/x/metrics.json", "w") as file:
            file.write(text)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=TEMPORARY_SUFFIX)
    try:
        os.chmod(temporary, FILE_MODE)  # mkstemp's files are private (0600)
        with os.fdopen(descriptor, mode, **open_options) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder):
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_partial_writes(folder):
    """Delete the temporary files that writes interrupted by a crash left in ``folder`` and its
    subfolders (``.<name>.<random>.partial``); returns how many were removed.

    Example::

        remove_partial_writes("runs/synthetic/3")   # before resuming that run
    """
    removed = 0
    for leftover in Path(folder).rglob(f".*{TEMPORARY_SUFFIX}"):
        if leftover.is_file():
            leftover.unlink()
            removed += 1
    return removed
