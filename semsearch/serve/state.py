"""What one server process holds: a shared reader, and a writer for the write endpoints."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import LockedError, SemsearchError
from ..reader import Reader
from .settings import ServeSettings

if TYPE_CHECKING:
    from ..index import Index

log = logging.getLogger("semsearch.serve")


class NotReady(Exception):
    """The index is not open or the model not loaded yet, or loading failed.

    Attributes:
        failed: True when loading failed (retrying will not help; the server's
            log and the message say why), False while still loading.
    """

    def __init__(self, message: str, failed: bool = False) -> None:
        super().__init__(message)
        self.failed = failed


class State:
    """One process's reader (shared by its request threads) and its writer.

    :meth:`start` opens the index and loads the query encoder in a thread, so
    that the server answers ``/healthz`` at once and ``/readyz`` once
    searches can run.
    """

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.started = time.time()
        self._reader: Reader | None = None
        self._error: str | None = None
        self._ready = threading.Event()
        self._write = threading.Lock()
        self._writer: Index | None = None

    def start(self) -> None:
        """Open the index and load the model, in the background."""
        threading.Thread(target=self._load, name="semsearch-open", daemon=True).start()

    def _load(self) -> None:
        try:
            reader = Reader.open(self.settings.index)
            # The first query loads the encoder and touches FAISS and SQLite: pay it
            # now. An empty index still loads the encoder, so that ready means ready.
            if len(reader):
                reader.search("warm up", k=1)
            else:
                reader.encoder.encode_queries(["warm up"])
            self._reader = reader
            log.info("semsearch: serving %s (generation %d)", reader.path, reader.generation)
        except SemsearchError as e:
            self._error = str(e)
            log.error("semsearch: cannot serve %s: %s", self.settings.index, e)
        except Exception as e:  # the server stays up to say so on /readyz
            self._error = f"{type(e).__name__}: {e}"
            log.exception("semsearch: cannot serve %s", self.settings.index)
        finally:
            self._ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until loading ended (ready or failed); whether it did."""
        return self._ready.wait(timeout)

    @property
    def error(self) -> str | None:
        """Why the index could not be opened, if it could not."""
        return self._error

    @property
    def reader(self) -> Reader:
        """The shared reader.

        Raises:
            NotReady: while loading, or if loading failed (with why).
        """
        if self._reader is None:
            if self._error is not None:
                raise NotReady(self._error, failed=True)
            raise NotReady("the index is still being opened")
        return self._reader

    @contextmanager
    def writer(self) -> Iterator[Index]:
        """The index to write to, one write at a time in this process.

        Raises:
            LockedError: if another write is running, here or in another process
                (the writer lock is taken without waiting by the write itself).
        """
        if not self._write.acquire(blocking=False):
            raise LockedError("another write to this index is running in this server")
        try:
            if self._writer is None:
                from ..index import Index

                index = Index.open(self.settings.index)
                index.lock_timeout = 0.0
                self._writer = index
            yield self._writer
        finally:
            self._write.release()

    def close(self) -> None:
        with self._write:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
