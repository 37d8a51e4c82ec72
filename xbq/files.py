"""Files xbq writes: never through a symlink, never a FIFO or a device, replaced whole or not at
all, and written by one process at a time.

* :func:`atomic_write` creates its temporary file exclusively (``mkstemp``: ``O_CREAT |
  O_EXCL``, a random name) in the target's folder, fsyncs it, renames it over the target and
  fsyncs the folder: a crash leaves the old file or the new one, and a symlink planted at
  any name xbq might use redirects nothing.
* :func:`open_regular` opens an existing file only if it is a regular file
  (``O_NOFOLLOW | O_NONBLOCK``, then ``fstat``), so ``--out`` naming a FIFO, a device or a
  symlink gets one line instead of blocking or writing elsewhere.
* :class:`WriterLock` is an exclusive advisory lock (``flock`` through the ``filelock``
  package, which opens the lock file with ``O_NOFOLLOW``) held for the life of a writing
  command, with the holder's pid and command written into the lock file, so a second writer
  is told who holds it (or waits for it with ``--wait``). The kernel drops the lock when the
  holder exits, even on ``kill -9``: there are no stale locks to clean up.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

from xbq.errors import XbqError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def check_target(path: Path) -> bool:
    """True if ``path`` exists as a regular file, False if it does not exist; a one-line
    :class:`XbqError` if it is anything else (a symlink, a FIFO, a device, a folder)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise XbqError(f"cannot use {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise XbqError(f"{path} is a symbolic link; xbq writes only regular files (give the "
                       "link's target instead)")
    if not stat.S_ISREG(st.st_mode):
        raise XbqError(f"{path} is not a regular file; xbq reads and writes only regular "
                       "files")
    return True


def check_folder(path: Path) -> None:
    """One line unless ``path``'s folder exists, is a folder and can be written to."""
    folder = path.parent
    if not folder.is_dir():
        raise XbqError(f"directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise XbqError(f"cannot write to directory {folder}: permission denied")


def open_regular(path: Path, flags: int) -> int:
    """A file descriptor of the regular file ``path`` (never through a symlink, never a FIFO
    or device); one line otherwise."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        what = "is a symbolic link" if exc.errno == 40 else exc.strerror  # ELOOP
        raise XbqError(f"cannot open {path}: {what}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise XbqError(f"{path} is not a regular file; xbq reads and writes only regular "
                       "files")
    return fd


def read_bytes(path: Path) -> bytes:
    """The whole regular file ``path``."""
    fd = open_regular(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 22):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename itself is atomic
    finally:
        os.close(fd)


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the process's umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole: an exclusive temporary file in the same folder,
    fsynced, renamed over ``path``, the folder fsynced. ``path`` must not be a symlink or
    a special file."""
    path = Path(path)
    mode = (os.lstat(path).st_mode & 0o777) if check_target(path) else _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; keep the file's mode, or the umask's
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(path.parent)


def append_bytes(path: Path, data: bytes, *, create: bool = False) -> None:
    """Append ``data`` to the regular file ``path`` with one write, then fsync (``create``: make
    the file if it does not exist)."""
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | (os.O_CREAT if create else 0))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_path(path: Path) -> Path:
    """The lock file of a store: ``FILE.lock`` beside it."""
    return path.with_name(path.name + ".lock")


class WriterLock:
    """An exclusive lock on ``path`` for one writing command (see the module docstring).

    Parameters
    ----------
    path : Path
        The file written; the lock is ``path + ".lock"``.
    command : str
        Written into the lock file with the pid, the host and the time, so that a second
        writer can say who holds it.
    wait : bool
        Block until the holder finishes instead of failing at once.
    """

    def __init__(self, path: Path, command: str, *, wait: bool = False):
        from filelock import FileLock, Timeout

        self.path = lock_path(Path(path))
        check_target(self.path)
        holder = f"{os.getpid()} {socket.gethostname()} {int(time.time())} {command}\n"

        def mark(fd: int) -> None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
            os.fsync(fd)

        self._lock = FileLock(str(self.path), timeout=0, on_acquired=mark)
        try:
            self._lock.acquire()
            return
        except Timeout:
            if not os.path.lexists(self.path):  # not held: the lock file cannot be made
                raise XbqError(f"cannot create the lock file {self.path}") from None
        except OSError as exc:
            raise XbqError(f"cannot lock {self.path}: {exc.strerror}") from None
        who = self.holder()
        if not wait:
            raise XbqError(f"{path} is being written by {who}; wait for it to finish, or "
                           "pass --wait")
        print(f"xbq: waiting for {who} to finish writing {path}", file=sys.stderr)
        self._lock.acquire(timeout=-1)

    def holder(self) -> str:
        """Who holds the lock: ``pid N on HOST (COMMAND, since HH:MM:SS)``."""
        try:
            text = read_bytes(self.path)[:4096].decode(errors="replace").strip()
            pid, host, since, command = text.split(" ", 3)
            when = time.strftime("%H:%M:%S", time.localtime(int(since)))
            return f"pid {int(pid)} on {host} ({command}, since {when})"
        except (XbqError, ValueError, OSError):
            return "another process"

    def release(self) -> None:
        self._lock.release()
