"""The writer lock: one writer per index folder at a time, across processes.

An exclusive ``flock`` on ``write.lock`` in the index folder. The kernel drops
it when the holder exits, however it exits (``kill -9`` included), so a crash
never leaves a stale lock behind. The holder writes who it is into the file,
so that a second writer can say whom it is waiting for. Readers never take it.

The file is never removed while the index exists; only a failed first write
removes it, with the folder it made (see ``Index.creating``). A writer that was
waiting on the removed file checks, once it holds the lock, that the file it
locked is still the one at the path, and otherwise locks the new one (or fails
with :class:`LockedError` if the folder is gone), so two writers never both
believe they hold the lock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from .errors import LockedError

LOCK_FILE = "write.lock"
_POLL_SECONDS = 0.05


class WriterLock:
    """Hold the index folder's writer lock for the duration of a ``with`` block.

    Args:
        folder: the index folder.
        timeout: seconds to wait for another writer to finish; 0 fails at once.
        make_folder: make the folder if it is missing (when creating an index);
            otherwise a missing folder is a :class:`LockedError` (it was removed
            by a failed creation while this process waited).

    Raises:
        LockedError: if another process holds the lock after ``timeout`` seconds.
    """

    def __init__(self, folder: Path, timeout: float = 0.0, make_folder: bool = False) -> None:
        self.path = folder / LOCK_FILE
        self.timeout = timeout
        self.make_folder = make_folder
        self.made_folder = False
        """Whether this lock made the folder (only with ``make_folder``)."""
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        import fcntl

        deadline = time.monotonic() + max(self.timeout, 0.0)
        fd = self._open()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, self.path):
                    break
                # The holder removed the file (a failed first write removing the
                # index it made): this lock guards nothing; take the new file's.
                os.close(fd)
                fd = self._open()
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _describe(self.path)
                    os.close(fd)
                    waited = f" after waiting {self.timeout:g}s" if self.timeout > 0 else ""
                    raise LockedError(
                        f"another writer holds {self.path}{waited}: {holder}; "
                        "wait for it, or pass a longer --wait"
                    ) from None
                time.sleep(_POLL_SECONDS)
        self._fd = fd
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            if self.make_folder:
                try:
                    self.path.parent.mkdir(parents=True)
                    self.made_folder = True
                except FileExistsError:
                    pass
                return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            raise LockedError(
                f"the index folder {self.path.parent} was removed while this process "
                "waited to write to it (its creation failed); run again"
            ) from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open lock file is still the one at ``path``."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (here.st_dev, here.st_ino)


def _describe(path: Path) -> str:
    """Who holds the lock, from what the holder wrote."""
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "a process that has not said who it is yet"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
        f" ({holder.get('command', '?')})"
    )
