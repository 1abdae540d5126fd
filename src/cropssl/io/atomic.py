"""Atomic writes: a file or directory appears complete or not at all, and write errors name the fix.

Every output cropssl writes (shards, maps, exports, checkpoints, reports) goes through
:func:`atomic_path` (one file) or :func:`atomic_dir` (a directory): the content is written to a
hidden temporary sibling (``.{name}.<random>.tmp[.suffix]``) and renamed into place only when complete.
A crash, a kill or a SIGTERM during the write leaves the previous output untouched; SIGTERM is turned
into an exception while a write is in progress so the temporary is removed, and temporaries left by a
SIGKILL are removed the next time the same output is written. A read-only folder or a full disk raise
:class:`OutputError` naming the path, the space needed and what to do, instead of a bare ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"


class OutputError(OSError):
    """An output could not be written (read-only folder, full disk, ...); the message says what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


class Terminated(BaseException):
    """SIGTERM arrived while an atomic write was in progress (raised so the temporary is cleaned)."""


def _describe(exc: OSError, path: Path, needed: int | None) -> OutputError:
    if exc.errno == errno.ENOSPC:
        try:
            free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
        except OSError:
            free = -1
        need = f"about {needed / 1e6:.1f} MB are needed, " if needed else ""
        have = f"{free / 1e6:.1f} MB are free" if free >= 0 else "free space unknown"
        return OutputError(
            errno.ENOSPC,
            f"no space left on the device writing {path} ({need}{have}); free some space or write elsewhere",
        )
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return OutputError(
            exc.errno,
            f"cannot write {path}: {os.strerror(exc.errno or 0).lower()} (is the folder read-only?); choose "
            "a writable output location",
        )
    return OutputError(exc.errno or 0, f"cannot write {path}: {exc}")


def _reraise(exc: BaseException, path: Path, needed: int | None) -> None:
    """Raise ``exc`` again, as an :class:`OutputError` when it is a write error the user can fix."""
    fixable = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EPERM)
    if isinstance(exc, OSError) and not isinstance(exc, OutputError) and exc.errno in fixable:
        raise _describe(exc, path, needed) from exc
    raise exc


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):  # someone else (Lightning, Slurm glue) handles it: keep theirs
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def remove_stale(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporaries of ``path`` left by an earlier killed write (``.{name}.*.tmp*``); return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f".{path.name}.*{TMP_SUFFIX}*"))
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path`` atomically.

    Args:
        path: The final file.
        needed_bytes: Expected size (for the message when the disk is full).

    Raises:
        OutputError: the folder is not writable or the disk is full (naming the path and the fix).

    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX + path.suffix)
        os.close(fd)
    except OSError as exc:
        raise _describe(exc, path, needed_bytes) from exc
    tmp = Path(name)
    try:
        with _sigterm_raises():
            yield tmp
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _reraise(exc, path, needed_bytes)


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike[str], *, overwrite: bool = False, needed_bytes: int | None = None
) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` (a directory or file).

    Args:
        path: The final directory.
        overwrite: Replace an existing ``path`` (else :class:`FileExistsError` before anything is written).
        needed_bytes: Expected size (for the message when the disk is full).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: the folder is not writable or the disk is full.

    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    except OSError as exc:
        raise _describe(exc, path, needed_bytes) from exc
    try:
        with _sigterm_raises():
            yield tmp
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _reraise(exc, path, needed_bytes)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
