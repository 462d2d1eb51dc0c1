"""Recycling page cache behind a stream of bytes that is done with: downloads (store) and cache
files that a sequential reader or an upload has passed (cache).

Why: writing into fresh page cache is the most expensive part of moving a big file here (the
copy into newly allocated folios; on VMs that hand freed memory back to the host it is 2-3 CPU-s
per GiB). Dropping ranges once written back lets the next writes reuse the same few dozen MiB
of pages: 1 GiB of 256 KiB pwrites measured 312 -> 2,545 MiB/s on the project VM
(bench/TRANSFER.md, bench/pagecache_write.py). It also keeps a big transfer from evicting everyone else's cache, as
`dd oflag=nocache` does. A dropped range is still on disk; only its RAM copy goes.

POSIX_FADV_DONTNEED starts writeback of dirty pages and drops the clean ones, so each range is
advised when it is done (writeback starts) and again after each of the next ADVICE_ROUNDS - 1
lags of later ranges (by then clean: dropped). A disk that writes slower than the stream leaves
a range dirty at its second call; the later calls catch it (a CI run kept 80 of 96 MiB
resident with two calls). Pages dirty even at the last call simply stay cached. Advice on a
range already dropped finds no pages and costs microseconds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque

log = logging.getLogger("s3mount")

MiB = 1024 * 1024
DEFAULT_LAG = 32 * MiB
ADVICE_ROUNDS = 4

_fadvise = getattr(os, "posix_fadvise", None)


class PageRecycler:
    def __init__(self, lag: int = DEFAULT_LAG, rounds: int = ADVICE_ROUNDS):
        self.lag = lag
        # One queue per round still to come: ranges advised k times, waiting for the next.
        self._rounds: list[deque[tuple[int, int]]] = [deque() for _ in range(max(1, rounds - 1))]
        self._bytes = [0] * len(self._rounds)
        self._lock = threading.Lock()
        self._broken = _fadvise is None

    def done(self, fd: int, offset: int, length: int) -> None:
        """Bytes [offset, offset+length) of the file open as `fd` will not be needed soon.
        The caller keeps `fd` open for the call (any fd of the same file will do later)."""
        if self._broken or length <= 0 or fd < 0:
            return
        with self._lock:
            try:
                _fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
                self._push(0, offset, length)
                for k, queue in enumerate(self._rounds):
                    while queue and self._bytes[k] - queue[0][1] >= self.lag:
                        off, n = queue.popleft()
                        self._bytes[k] -= n
                        _fadvise(fd, off, n, os.POSIX_FADV_DONTNEED)
                        if k + 1 < len(self._rounds):
                            self._push(k + 1, off, n)
            except OSError as e:  # advice only: a filesystem that refuses it still has the data
                log.debug("posix_fadvise failed, page cache recycling off for this file: %s", e)
                self._broken = True
                for queue in self._rounds:
                    queue.clear()

    def _push(self, k: int, offset: int, length: int) -> None:
        self._rounds[k].append((offset, length))
        self._bytes[k] += length
