"""Empty cache files made ahead of need by a background thread.

Creating an inode costs up to 1 ms of kernel CPU on some ext4 setups (measured on the project's
VM: 730 us of system time per O_CREAT), and an open of an uncached object needs a new cache file.
A few empty 0600 files made ahead take that off the open's path: the open renames one into place.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("s3mount.cache")

SPARE_PREFIX = "spare."


class SpareFiles:
    def __init__(self, directory: str, keep: int = 16):
        self.dir = directory
        self.keep = keep
        self._files: list[str] = []
        self._cv = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._closed = False

    def take(self) -> str | None:
        """The path of an empty file to rename into place, or None (create one yourself)."""
        with self._cv:
            path = self._files.pop() if self._files else None
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._make, daemon=True,
                                                name="cache-spares")
                self._thread.start()
            self._cv.notify()
        return path

    def _make(self) -> None:
        while True:
            with self._cv:
                while len(self._files) >= self.keep and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                self._seq += 1
                path = os.path.join(self.dir, f"{SPARE_PREFIX}{os.getpid()}.{self._seq}")
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            except OSError as e:  # a full disk, say: opens create their own files
                log.debug("no spare cache file: %s", e)
                with self._cv:
                    self._thread = None
                return
            with self._cv:
                if self._closed:
                    os.unlink(path)
                    return
                self._files.append(path)

    def close(self) -> None:
        """Remove the spares; no new one appears after this returns."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)  # a file it is creating now is removed by the thread itself
        with self._cv:
            files, self._files = self._files, []
        for p in files:
            try:
                os.unlink(p)
            except OSError:
                pass
