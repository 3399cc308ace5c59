"""Publishing files and folders so that no reader ever sees half of one.

The one mechanism behind the model store, the derived cache, gallery edits and the
LLM answer cache: a file or folder is written under a private temporary name in the
folder where it will live, flushed to disk, and renamed into place in one step. What
is no longer wanted is first renamed aside to a unique ``.trash-*`` name, so a path
always holds either the old whole thing or the new one. Temporary and trash names
carry their creation time; :func:`sweep` removes those left behind by crashed or
interrupted processes once they are :data:`STALE_SECONDS` old, never sooner, since
another process may still be writing or reading them.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
#: Age after which a temporary or trash folder is taken for abandoned.
STALE_SECONDS = 6 * 3600

_STAMP = re.compile(r"-(\d{9,11})-\d+-[0-9a-z_]+$")


def _stamp(prefix: str, name: str) -> str:
    return f"{prefix}{name}-{int(time.time())}-{os.getpid()}-"


def _fsync_dir(folder: Path) -> None:
    # Makes a rename durable; Windows cannot open folders, and needs no such call.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDWR)
    except PermissionError:  # a read-only copy: POSIX can flush it through a read handle
        fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # Windows flushes only writable handles
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, names in os.walk(folder):
        for name in names:
            _fsync_file(os.path.join(dirpath, name))
        _fsync_dir(Path(dirpath))


def _umask() -> int:
    # The only portable way to read the umask is to set it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_file(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (str: UTF-8) in one step; OSError if it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=_stamp(TMP_PREFIX, path.name), dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it what open() would have (or what
        # the file it replaces had), so a sidecar beside a photo stays readable to all.
        try:
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def private_folder(parent: Path, name: str) -> Iterator[Path]:
    """A new empty folder in ``parent`` that only this writer uses.

    It becomes visible under its final name only through :func:`publish_folder`;
    whatever is still here on exit (an error, an interruption, a lost race) is removed.
    """
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_stamp(TMP_PREFIX, name), dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(tmp: Path, target: Path, *, replace: bool = False) -> bool:
    """Move the finished folder ``tmp`` to ``target`` (same parent) in one rename.

    Its files are flushed to disk first, so a power cut never publishes a folder whose
    contents are still in flight. When ``target`` exists, ``replace`` moves it aside and
    deletes it; without ``replace`` nothing is touched and False is returned: another
    process published first, and its folder is as good as ours.
    """
    _fsync_tree(tmp)
    if replace:
        old = move_aside(target)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return True
    if target.exists():
        return False
    try:
        # A folder cannot be renamed onto a non-empty one (and never replaces a file),
        # so of two writers racing here exactly one wins.
        os.rename(tmp, target)
    except OSError:
        if target.exists():
            return False
        raise
    _fsync_dir(target.parent)
    return True


def move_aside(path: Path, *, inode: int | None = None) -> Path | None:
    """Rename ``path`` to a unique ``.trash-*`` name beside it; that name, or None when
    ``path`` is gone (or, with ``inode``, is no longer the folder that was looked at:
    another process replaced it meanwhile, and the new one is not ours to move)."""
    try:
        if inode is not None and path.stat().st_ino != inode:
            return None
        trash = path.with_name(_stamp(TRASH_PREFIX, path.name) + secrets.token_hex(4))
        os.rename(path, trash)
    except FileNotFoundError:
        return None
    return trash


def discard(path: Path) -> None:
    """Move ``path`` aside, then delete it. What cannot be deleted now (a file open on
    Windows) stays under its trash name for a later :func:`sweep`."""
    with contextlib.suppress(OSError):
        trash = move_aside(path)
        if trash is not None:
            if trash.is_dir():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink()


def age_seconds(path: Path) -> float:
    """How long ago a temporary or trash name was made (else: since its last change)."""
    found = _STAMP.search(path.name)
    if found:
        return time.time() - int(found.group(1))
    return time.time() - path.lstat().st_mtime


def sweep(parent: Path, max_age: float = STALE_SECONDS) -> None:
    """Delete temporary and trash entries in ``parent`` older than ``max_age`` seconds."""
    with contextlib.suppress(OSError):
        for child in parent.iterdir():
            if not child.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                continue
            with contextlib.suppress(OSError):
                if age_seconds(child) < max_age:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink()
