"""Writing outputs safely: atomic files, and one clear line when an output cannot be written.

Atomic writes mean a reader never sees a half-written file and a crash never leaves one that a
later run would take as complete. Every write error that is the user's to fix (permissions, a
read-only file system, a full disk, a file where a folder should be) becomes an ``OutputError``
naming the path and the cause, and ``writable_folder`` finds most of them before any work starts.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image

from geoxai.errors import OutputError

# errno values that mean "this output cannot be written here", as opposed to a bug.
WRITE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENOTDIR", "EISDIR", "EEXIST", "ENAMETOOLONG", "EFBIG")
    if hasattr(errno, name))
_PROBE_BYTES = 4096  # a probe this large fails on a full disk, where creating an empty file may not


def is_write_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError the user fixes by choosing another output (not a bug)."""
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def output_error(exc: OSError, path: str | Path, setting: str = "") -> OutputError:
    """``exc`` as one line: the setting, the path, the cause and what to do."""
    cause = exc.strerror or type(exc).__name__
    where = f"{setting} {path}" if setting else str(path)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), getattr(errno, "EFBIG", -1)):
        fix = "free disk space or choose another folder"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        fix = "a file stands where a folder is needed (or the reverse); choose another path"
    else:
        fix = "choose a writable folder or fix its permissions"
    culprit = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return OutputError(f"{where}: cannot write{culprit}: {cause}; {fix}")


def make_folder(path: str | Path, setting: str = "") -> Path:
    """``mkdir -p path``, with a write error as an ``OutputError``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if not is_write_error(exc) and exc.errno != errno.ENOENT:
            raise
        raise output_error(exc, path, setting) from None
    if not path.is_dir():
        raise output_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)), path, setting)
    return path


def writable_folder(path: str | Path, setting: str = "", create: bool = True) -> Path:
    """Prove ``path`` takes a small file, before long work starts; returns the folder.

    With ``create=False`` a missing folder is not made: its nearest existing parent is probed
    instead, so a command refused later leaves nothing behind. Raises ``OutputError`` naming
    ``setting`` (e.g. ``--out``) and the cause.
    """
    path = Path(path)
    if create:
        probe_in = make_folder(path, setting)
    else:
        probe_in = path
        while not probe_in.exists() and probe_in != probe_in.parent:
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise output_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(probe_in)), path, setting)
    try:
        fd, probe = tempfile.mkstemp(prefix=".geoxai-write-test.", dir=probe_in)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\0" * _PROBE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            os.unlink(probe)
    except OSError as exc:
        if not is_write_error(exc):
            raise
        raise output_error(exc, path, setting) from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it is renamed onto ``path`` only on success.

    Whatever happens, the temporary file is removed. A write error (in creating the temporary
    file, in the caller's writing, or in the rename) becomes an ``OutputError`` naming ``path``.
    """
    path = Path(path)
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        if not is_write_error(exc):
            raise
        raise output_error(exc, path) from None
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; follow the umask like open() does
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if not is_write_error(exc):
            raise
        raise output_error(exc, path) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_image(path: str | Path, image: Image.Image, **save_kwargs) -> None:
    """Save a PIL image atomically; the format follows ``path``'s suffix."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **save_kwargs)


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``target``; on success it replaces ``target`` whole.

    A reader sees the old folder or the new one, never half of either; the old one is removed
    only after the new one is in place.
    """
    target = Path(target)
    make_folder(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        if not is_write_error(exc):
            raise
        raise output_error(exc, target) from None
    try:
        yield tmp
        old = target.with_name(f".{target.name}.old-{tmp.name}") if target.exists() else None
        if old is not None:
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old)
    except OSError as exc:
        if not is_write_error(exc):
            raise
        raise output_error(exc, target) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def set_aside(path: str | Path) -> Path:
    """Rename a damaged file (or folder) to ``<name>.damaged-<UTC time>`` beside it, atomically, and
    return the new path: kept for a look, out of the way of what recomputes it. A path that cannot be
    renamed is an ``OutputError``; one that is gone, ``FileNotFoundError``."""
    import time

    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    number = 1
    while target.exists():
        target, number = path.with_name(f"{path.name}.damaged-{stamp}-{number}"), number + 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        raise  # already gone (set aside by another process): the caller decides
    except OSError as exc:
        raise output_error(exc, path) from None
    return target
