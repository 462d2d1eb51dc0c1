"""Recycling page cache behind a stream of bytes that is done with: downloads (store) and cache
files that a sequential reader or an upload has passed (cache).

Why: writing into fresh page cache is the most expensive part of moving a big file here (the
copy into newly allocated folios; on VMs that hand freed memory back to the host it is 2-3 CPU-s
per GiB). Dropping ranges once written back lets the next writes reuse the same few dozen MiB
of pages: 1 GiB of 256 KiB pwrites measured 312 -> 2,545 MiB/s on the project VM
(bench/TRANSFER.md, bench/pagecache_write.py). It also keeps a big transfer from evicting everyone else's cache, as
`dd oflag=nocache` does. A dropped range is still on disk; only its RAM copy goes.

POSIX_FADV_DONTNEED starts writeback of dirty pages but drops only the clean ones, so a range
is advised when done (clean pages go at once, writeback starts) and handed to one writeback
thread, which waits for that range to reach the disk (sync_file_range) and advises it again.
Advising again after a fixed lag of later ranges instead depended on the disk keeping up: a CI
run kept 80-88 of 96 MiB resident that way. The thread works on a dup of the caller's fd, so
the caller may close its own at once; callers never wait for it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading

log = logging.getLogger("s3mount")

MiB = 1024 * 1024

_fadvise = getattr(os, "posix_fadvise", None)

# SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER: start writeback and wait for all of it.
_SYNC_WAIT_WRITE_WAIT = 1 | 2 | 4


def _load_sync_file_range():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux/glibc: the first advice is all there is
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def sync_file_range(fd: int, offset: int, length: int) -> None:
        if fn(fd, offset, length, _SYNC_WAIT_WRITE_WAIT) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return sync_file_range


_sync_file_range = _load_sync_file_range()


class _Writeback:
    """One thread for the process: disks write one range at a time anyway, and a thread per
    stream would only queue in the kernel. Started on first use, again after a fork."""

    def __init__(self):
        self._queue: queue.SimpleQueue[PageRecycler] = queue.SimpleQueue()
        self._pid = -1
        self._lock = threading.Lock()

    def submit(self, recycler: "PageRecycler") -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._run, args=(self._queue,), daemon=True,
                                 name="s3mount-writeback").start()
                self._pid = os.getpid()
            self._queue.put(recycler)

    @staticmethod
    def _run(q: queue.SimpleQueue) -> None:
        while True:
            recycler = q.get()
            try:
                recycler._drain()
            except Exception:  # advice only: never let one file stop the thread
                log.exception("page cache writeback failed")


_writeback = _Writeback()


class PageRecycler:
    """The page cache recycling of one stream (one file written or read in order)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: list[tuple[int, int]] = []
        self._fd = -1               # our dup of the file, held while ranges are pending
        self._queued = False        # on the writeback thread's queue or being drained
        self._idle = threading.Event()
        self._idle.set()
        self._broken = _fadvise is None

    def done(self, fd: int, offset: int, length: int) -> None:
        """Bytes [offset, offset+length) of the file open as `fd` will not be needed soon.
        `fd` need only stay open for the call."""
        if self._broken or length <= 0 or fd < 0:
            return
        try:
            _fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError as e:  # advice only: a filesystem that refuses it still has the data
            log.debug("posix_fadvise failed, page cache recycling off for this file: %s", e)
            self._broken = True
            return
        if _sync_file_range is None:
            return
        with self._lock:
            if self._fd < 0:
                try:
                    self._fd = os.dup(fd)
                except OSError:  # out of descriptors: this range keeps its dirty pages
                    return
            self._pending.append((offset, length))
            if self._queued:
                return
            self._queued = True
            self._idle.clear()
        _writeback.submit(self)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every range handed over so far was written back and advised again."""
        return self._idle.wait(timeout)

    def _drain(self) -> None:
        while True:
            with self._lock:
                ranges, self._pending = self._pending, []
                fd = self._fd
                if not ranges:
                    os.close(fd)
                    self._fd = -1
                    self._queued = False
                    self._idle.set()
                    return
            for offset, length in _merged(ranges):
                try:
                    _sync_file_range(fd, offset, length)
                    _fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
                except OSError as e:
                    log.debug("page cache writeback of %d+%d failed: %s", offset, length, e)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Touching or overlapping ranges as one (a stream hands them over in order)."""
    out: list[list[int]] = []
    for offset, length in sorted(ranges):
        if out and offset <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], offset + length - out[-1][0])
        else:
            out.append([offset, length])
    return [(a, n) for a, n in out]
