"""A cache entry: the sparse local file of one object version, its block states and the
fetch, read, write and truncate operations on it. The DataCache (datacache.py) owns the budget
these blocks count against."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Callable

from ..pagecache import PageRecycler
from .blockset import to_runs

if TYPE_CHECKING:
    from .datacache import DataCache

JOURNAL_AHEAD = 32  # blocks (8 MiB of 256 KiB ones)
RECYCLE_BEHIND = 16 * 1024 * 1024  # kernel readahead arrives a little out of order
# A random reader's miss of 1 MiB as 4 GETs of 256 KiB at once: 3.1-4.0 ms instead of 4.2-5.3
# on SeaweedFS here (bench/README.md, "Random 1 MiB reads").
OWN_STREAMS = 4
LARGE_READ_BLOCKS = 3  # random misses of this many blocks on average are large reads (_random_miss)

Fetch = Callable[[int, int], None]  # fetch(offset, length): put remote bytes at offset in the file


class CacheFull(OSError):
    pass


class BlockLost(OSError):
    """A block was uploaded as a part, then evicted, and cannot be fetched back before complete."""


class CacheEntry:
    def __init__(self, cache: "DataCache", bucket: str, key: str, etag: str | None, size: int,
                 path: str, fd: int):
        self.cache = cache
        self.bucket, self.key, self.etag = bucket, key, etag
        self.size = size            # logical size
        self.remote_size = size     # blocks at or past this offset are never fetched
        self.path, self.fd = path, fd
        self.bs = cache.block_size
        self.present: set[int] = set()
        self.dirty: set[int] = set()        # written since the last upload
        self.unfetchable: set[int] = set()  # overwritten since the remote version: no refetch
        self.gen: dict[int, int] = {}       # per-block write counter, to spot rewrites mid-upload
        self.writes = 0                     # writes and truncates so far, for the same reason
        self.inflight: dict[int, threading.Event] = {}
        self.failed: dict[int, BaseException] = {}
        self.refs = 0
        self.truncated = False      # size changed without a block being written
        self.discarded = False      # its file is deleted; blocks fetched now are dropped
        self.extra: dict = {}       # the caller's, journaled with dirty data (path, headers...)
        self.written_index: str | None = None  # what the .json beside the data says now
        # Blocks past the end of the file that the journal on disk already lists as written, so
        # that a writer extending the file journals once per JOURNAL_AHEAD blocks, not per write.
        self.journal_ahead: range = range(0)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.seq_end = -1           # end of the last read, to spot sequential readers
        self.seq_bytes = 0          # bytes read back to back so far
        self.window = 0             # readahead bytes
        self.random_misses = 0      # non-sequential reads that had to fetch
        self.random_miss_blocks = 0  # ...and the blocks they fetched
        self.fill_next = -1         # next block a background fill claims; -1: no fill running
        # A sequential reader's blocks live on in the kernel's page cache of the mounted file;
        # this file's copy of them is recycled once the reader is RECYCLE_BEHIND past them.
        self.recycler = PageRecycler()
        self.recycled_to = 0        # bytes before this were handed to the recycler

    @property
    def is_dirty(self) -> bool:
        return bool(self.dirty) or self.truncated

    # -- fetching ------------------------------------------------------------------------------
    def _claim(self, first: int, last: int, most: int = 0) -> list[tuple[int, int]]:
        """Mark missing, fetchable blocks in [first, last] in flight; return their byte runs,
        each of at most `most` blocks (default: max_run_blocks)."""
        most = most or self.cache.max_run_blocks
        runs, run_start = [], None
        last = min(last, (self.remote_size - 1) // self.bs) if self.remote_size else -1
        for b in range(first, last + 2):
            want = b <= last and b not in self.present and b not in self.inflight \
                and b not in self.unfetchable
            if want and run_start is None:
                run_start = b
            if run_start is not None and (not want or b - run_start >= most):
                runs.append((run_start, b - 1))
                run_start = b if want else None
        for a, z in runs:
            ev = threading.Event()
            for b in range(a, z + 1):
                self.inflight[b] = ev
        return runs

    def _run_fetch(self, fetch: Fetch, a: int, z: int) -> None:
        start, end = a * self.bs, min((z + 1) * self.bs, self.remote_size)
        room = (z - a + 1) * self.bs
        err: BaseException | None = None
        try:
            self.cache.reserve(room, self)
            fetch(start, end - start)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting readers
            err = e
        with self.lock:
            ev = self.inflight.get(a)
            kept = err is None and not self.discarded
            for b in range(a, z + 1):
                self.inflight.pop(b, None)
                if kept:
                    self.present.add(b)
                    self.failed.pop(b, None)
                elif err is not None:
                    self.failed[b] = err
            if not self.inflight and self.fd >= 0 and (
                    self.discarded or (self.refs == 0 and not self.is_dirty)):
                os.close(self.fd)  # released or discarded while this readahead ran
                self.fd = -1
        if kept:
            self.cache.added(self, range(a, z + 1))
        else:
            self.cache.release_reservation(room)
        if ev is not None:
            ev.set()

    def ensure(self, start: int, end: int, fetch: Fetch, pool: Executor | None = None,
               ahead: int = 0) -> None:
        """Make bytes [start, end) valid locally; start fetching `ahead` more bytes after them."""
        if start >= end:
            return
        first, last = start // self.bs, (end - 1) // self.bs
        with self.lock:
            for b in range(first, last + 1):
                self.failed.pop(b, None)
                if b in self.unfetchable and b not in self.present:
                    raise BlockLost(5, f"block {b} of {self.key} was uploaded and evicted")
            missing = sum(1 for b in range(first, last + 1) if b not in self.present)
            self.cache.count_blocks(last - first + 1 - missing, missing)
            # A reader's own miss of several blocks comes in OWN_STREAMS parallel ranged GETs
            # (its readahead, when it has one, is in flight meanwhile anyway).
            split = not ahead and pool is not None
            runs = self._claim(first, last, -(-(last - first + 1) // OWN_STREAMS) if split else 0)
            ahead_runs = []
            if ahead:
                # Whole aligned runs (8 MiB): a window that slides one block per read would
                # otherwise fetch one small range per read, several times slower.
                run = self.cache.max_run_blocks
                target = ((end + ahead - 1) // self.bs // run + 1) * run - 1
                ahead_runs = self._claim(last + 1, target)
            waits = {id(ev): ev for b in range(first, last + 1)
                     if (ev := self.inflight.get(b)) is not None}
        if pool is not None:
            for a, z in ahead_runs:
                pool.submit(self._run_fetch, fetch, a, z)
            for a, z in runs[1:]:
                pool.submit(self._run_fetch, fetch, a, z)
            runs = runs[:1]
        else:
            runs = runs + ahead_runs
        for a, z in runs:  # the first run in this thread: no hand-off for the common case
            self._run_fetch(fetch, a, z)
        for ev in waits.values():
            ev.wait()
        with self.lock:
            for b in range(first, last + 1):
                if b in self.failed:
                    raise self.failed.pop(b)
        self.cache.touch(self, range(first, last + 1))

    # -- data ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int, fetch: Fetch, pool: Executor | None = None) -> bytes:
        end = self._readable(offset, size, fetch, pool)
        return os.pread(self.fd, end - offset, offset) if end > offset else b""

    def read_span(self, offset: int, size: int, fetch: Fetch, pool: Executor | None = None,
                  on_fill: Callable[[bool], None] | None = None) -> tuple[int, int]:
        """(fd, length): [offset, offset+length) of self.fd is valid, for a reader that reads
        the file itself (a spliced FUSE reply). If this read starts a whole-object fill,
        `on_fill(ended)` is called in the fill's threads: after each run lands (False), and
        once when the fill is over (True; by then whatever was in flight has landed)."""
        end = self._readable(offset, size, fetch, pool, on_fill)
        return self.fd, max(0, end - offset)

    def _readable(self, offset: int, size: int, fetch: Fetch, pool: Executor | None,
                  on_fill: Callable[[bool], None] | None = None) -> int:
        """Make [offset, offset+size) (cut at the end of the file) valid in the file, start any
        readahead or fill the access pattern calls for, and return the cut end."""
        with self.lock:
            end = min(offset + size, self.size)
            if offset >= end:
                return offset
            # The kernel's own readahead (1 MiB windows) makes any read look sequential for a
            # while; only a longer run of consecutive reads is a sequential reader.
            # Concurrent kernel requests arrive slightly out of order: "near the last end" counts.
            run_bytes = self.cache.max_run_blocks * self.bs
            if self.seq_end >= 0 and abs(offset - self.seq_end) <= run_bytes:
                self.seq_bytes += end - offset
            else:
                self.seq_bytes, self.window = end - offset, 0
                self.recycled_to = offset // run_bytes * run_bytes
            if self.seq_bytes > self.cache.sequential_after:
                self.window = min(max(self.window * 2, 2 * self.bs), self.cache.max_readahead)
            self.seq_end = max(self.seq_end, end) if self.window else end
            ahead = self.window
            blocks = range(offset // self.bs, (end - 1) // self.bs + 1)
            cached = not ahead and all(b in self.present for b in blocks)
            start_fill = not cached and not ahead and pool is not None \
                and self._random_miss(blocks)
            if ahead:
                self._recycle_behind(end, run_bytes)
        if cached:  # the common case of a warm cache: no claims, no waits, one LRU touch
            self.cache.count_blocks(len(blocks), 0)
            self.cache.touch(self, blocks)
        else:
            self.ensure(offset, end, fetch, pool, ahead)
        if start_fill:
            chains = [self.cache.fill_streams]  # those still running; the last one reports
            for _ in range(self.cache.fill_streams):
                pool.submit(self._fill_chain, fetch, chains, on_fill)
        return end

    def _recycle_behind(self, end: int, run_bytes: int) -> None:
        """Hand whole runs the sequential reader left RECYCLE_BEHIND behind to the recycler
        (under self.lock, so the fd is open)."""
        upto = (end - RECYCLE_BEHIND) // run_bytes * run_bytes
        if upto > self.recycled_to and self.fd >= 0:
            self.recycler.done(self.fd, self.recycled_to, upto - self.recycled_to)
            self.recycled_to = upto

    def recycle(self, start: int, end: int) -> None:
        """Bytes [start, end) are safely elsewhere (uploaded) and not needed in RAM soon."""
        with self.lock:
            if self.fd >= 0:
                self.recycler.done(self.fd, start, end - start)

    # -- filling the whole object behind a dense random reader -----------------------------------
    def _random_miss(self, blocks: range) -> bool:
        """Count a random read that must fetch `blocks` (some of them); True when a background
        fill should start. Under self.lock.

        A reader that has fetched 1/128 of an object's blocks at random (16 at least) in small
        reads is going over all of it (a database scan, fio, a zip index walk): fetching the
        rest in parallel 8 MiB runs costs the same bytes as its one-block misses and runs at
        transfer speed. Reads of LARGE_READ_BLOCKS or more already come at a good part of that
        speed (OWN_STREAMS GETs each), and a fill's 4 streams would slow them down for data
        they may never read (fio over a quarter of an object: 106-139 MiB/s with the fill,
        145-176 without): for them the fill waits until they have fetched a third of the
        object. Objects over a quarter of the cache are never filled, so a fill cannot
        thrash it."""
        if self.fill_next >= 0:
            return False
        fresh = sum(1 for b in blocks if b not in self.present and b not in self.inflight)
        if not fresh:
            return False  # the tail of a read the kernel split, fetched by its head
        self.random_misses += 1
        self.random_miss_blocks += fresh
        nblocks = -(-self.remote_size // self.bs)
        if self.random_misses < max(self.cache.fill_after, nblocks // 128):
            return False
        if self.random_miss_blocks >= LARGE_READ_BLOCKS * self.random_misses \
                and 3 * self.random_miss_blocks < nblocks:
            return False
        if self.remote_size > self.cache.data_capacity // 4:
            return False
        self.fill_next = 0
        return True

    def _fill_chain(self, fetch: Fetch, chains: list[int],
                    on_fill: Callable[[bool], None] | None) -> None:
        """One of `fill_streams` loops that claim and fetch the next missing 8 MiB run, in
        order, until the object is complete, a fetch fails, or the last handle is closed.
        Runs are claimed one at a time, so a reader never waits behind queued ones. The last
        loop to end waits for fetches in flight and reports the end to `on_fill`."""
        try:
            self._fill_runs(fetch, on_fill)
        finally:
            with self.lock:
                chains[0] -= 1
                last = chains[0] == 0
            if last and on_fill is not None:
                self._wait_inflight()
                on_fill(True)

    def _fill_runs(self, fetch: Fetch, on_fill: Callable[[bool], None] | None) -> None:
        run = self.cache.max_run_blocks
        while True:
            with self.lock:
                nblocks = -(-self.remote_size // self.bs)
                runs: list[tuple[int, int]] = []
                while not runs and 0 <= self.fill_next < nblocks and self.refs > 0 \
                        and not self.discarded:
                    a = self.fill_next
                    self.fill_next = a + run
                    runs = self._claim(a, a + run - 1)
                if not runs:
                    return
            for a, z in runs:
                self._run_fetch(fetch, a, z)
            with self.lock:
                if any(b in self.failed for a, z in runs for b in range(a, z + 1)):
                    return  # a reader that needs these blocks sees the error and retries
            if on_fill is not None:
                on_fill(False)

    def _wait_inflight(self) -> None:
        with self.lock:
            waits = list({id(ev): ev for ev in self.inflight.values()}.values())
        for ev in waits:
            ev.wait()

    def present_prefix(self, offset: int) -> int:
        """The end of the run of present blocks that starts at `offset` (a block boundary),
        cut at the object's size; `offset` itself if that block is missing. Under self.lock."""
        nblocks = -(-self.remote_size // self.bs)
        b = offset // self.bs
        while b < nblocks and b in self.present:
            b += 1
        return max(offset, min(b * self.bs, self.remote_size))

    def write(self, offset: int, data: bytes, fetch: Fetch) -> int:
        end = offset + len(data)
        if not data:
            return 0
        # Blocks only partly overwritten keep their other bytes: fetch those first. Before the
        # write's start that is any block holding remote bytes (appending at the end included);
        # after its end, only if remote bytes follow it.
        first_blk, end_blk = offset // self.bs, end // self.bs
        if offset % self.bs and first_blk * self.bs < self.remote_size:
            self.ensure(first_blk * self.bs, min((first_blk + 1) * self.bs, self.remote_size), fetch)
        if end % self.bs and end < self.remote_size:
            self.ensure(end_blk * self.bs, min((end_blk + 1) * self.bs, self.remote_size), fetch)
        first, last = offset // self.bs, (end - 1) // self.bs
        with self.lock:
            new = [b for b in range(first, last + 1) if b not in self.present]
        self.cache.reserve(len(new) * self.bs, self, dirty=True)
        with self.lock:
            if offset > self.size:  # the hole up to this write reads as zeros, never fetched
                self.remote_size = min(self.remote_size, self.size)
            n = os.pwrite(self.fd, data, offset)
            blocks = range(first, last + 1)
            fresh = [b for b in blocks if b not in self.present]
            newly_dirty = any(b not in self.dirty and b not in self.journal_ahead for b in blocks)
            self.present.update(blocks)
            self.dirty.update(blocks)
            for b in blocks:
                self.gen[b] = self.gen.get(b, 0) + 1
            self.writes += 1
            self.unfetchable.update(blocks)
            self.size = max(self.size, end)
            if newly_dirty:  # after the data, before the write is acknowledged
                self.cache.journal(self)
        self.cache.added(self, fresh, reserved=len(new) * self.bs)
        self.cache.touch(self, blocks)
        return n

    def truncate(self, length: int) -> None:
        with self.lock:
            os.ftruncate(self.fd, length)
            self.remote_size = min(self.remote_size, length)
            gone = [b for b in self.present if b * self.bs >= length]
            for b in gone:
                self.present.discard(b)
                self.dirty.discard(b)
            if length % self.bs and (length // self.bs) in self.present:
                self.dirty.add(length // self.bs)
            self.size = length
            self.truncated = True
            self.writes += 1
            self.cache.journal(self)
        self.cache.removed(self, gone)

    def fill(self, fetch: Fetch, pool: Executor | None = None) -> None:
        """Fetch every missing block (before a whole-object upload)."""
        self.ensure(0, self.size, fetch, pool)

    def mark_clean(self, etag: str) -> None:
        """After an upload of the whole object: this is now the remote version `etag`."""
        with self.lock:
            self.etag = etag
            self.remote_size = self.size
            self.dirty.clear()
            self.unfetchable.clear()
            self.truncated = False
            self.cache.journal(self)
        self.cache.space_freed()

    def rebase(self, etag: str, uploaded_size: int) -> None:
        """An upload finished while other writes went on: S3 now holds `etag` (what was
        uploaded), but the entry stays dirty and is uploaded again at the next flush."""
        with self.lock:
            self.etag = etag
            self.remote_size = min(uploaded_size, self.size)
            self.cache.journal(self)

    def mark_uploaded(self, blocks) -> None:
        """Blocks sent as a multipart part: evictable now, but not fetchable until complete."""
        with self.lock:
            self.dirty.difference_update(blocks)
        self.cache.space_freed()

    def index(self) -> dict:
        """The state to journal. A dirty one also lists the JOURNAL_AHEAD blocks after the end
        of the file as written ("ahead"): they are holes until a write reaches them, and
        recovery keeps only the blocks the file is long enough to hold."""
        with self.lock:
            d = {"bucket": self.bucket, "key": self.key, "etag": self.etag, "size": self.size,
                 "block_size": self.bs}
            if not self.is_dirty:
                d["present"] = to_runs(self.present)
                return d
            eof_block = -(-self.size // self.bs)
            ahead = range(eof_block, eof_block + JOURNAL_AHEAD)
            d.update(present=to_runs(self.present, ahead), dirty=True,
                     dirty_blocks=to_runs(self.dirty, ahead), remote_size=self.remote_size,
                     unfetchable=to_runs(self.unfetchable, ahead), extra=self.extra,
                     ahead=[ahead.start, ahead.stop - 1])
            return d
