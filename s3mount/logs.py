"""Log file handling: a file handler that reopens its file on SIGHUP (for logrotate)."""

from __future__ import annotations

import logging
import os
import threading


class ReopeningFileHandler(logging.FileHandler):
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        super().__init__(path, encoding="utf-8")
        self._reopen_lock = threading.Lock()

    def _open(self):
        old = os.umask(0o077)  # logs name buckets and keys: owner-only, like the cache
        try:
            return super()._open()
        finally:
            os.umask(old)

    def reopen(self) -> None:
        with self._reopen_lock, self.lock:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
