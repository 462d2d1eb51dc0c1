"""The data cache: one sparse local file per object version, blocks tracked and capped.

Blocks (256 KiB) are fetched on first touch through a `fetch(offset, length)` callable the caller
passes in (this module knows no S3), several at once, and sequential readers get a growing
readahead window. Every present block counts against one byte budget; when it is full the least
recently used clean blocks are punched out of their files. Dirty blocks are never evicted:
writers wait for uploads to make room (back-pressure). Files are 0600 in 0700 directories; a
small JSON index beside each closed clean file lets its blocks survive a restart, to be reused
only while the object's ETag is unchanged.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import Executor
from typing import Callable

from .holes import punch_hole

log = logging.getLogger("s3mount.cache")

Fetch = Callable[[int, int], None]  # fetch(offset, length): put remote bytes at offset in the file
MiB = 1024 * 1024


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
        self.extra: dict = {}       # the caller's, journaled with dirty data (path, headers...)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.seq_end = -1           # end of the last read, to spot sequential readers
        self.seq_bytes = 0          # bytes read back to back so far
        self.window = 0             # readahead bytes

    @property
    def is_dirty(self) -> bool:
        return bool(self.dirty) or self.truncated

    # -- fetching ------------------------------------------------------------------------------
    def _claim(self, first: int, last: int) -> list[tuple[int, int]]:
        """Mark missing, fetchable blocks in [first, last] in flight; return their byte runs."""
        runs, run_start = [], None
        last = min(last, (self.remote_size - 1) // self.bs) if self.remote_size else -1
        for b in range(first, last + 2):
            want = b <= last and b not in self.present and b not in self.inflight \
                and b not in self.unfetchable
            if want and run_start is None:
                run_start = b
            if run_start is not None and (not want or b - run_start >= self.cache.max_run_blocks):
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
            for b in range(a, z + 1):
                self.inflight.pop(b, None)
                if err is None:
                    self.present.add(b)
                    self.failed.pop(b, None)
                else:
                    self.failed[b] = err
        if err is None:
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
            runs = self._claim(first, last)
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
        with self.lock:
            end = min(offset + size, self.size)
            if offset >= end:
                return b""
            # The kernel's own readahead (1 MiB windows) makes any read look sequential for a
            # while; only a longer run of consecutive reads is a sequential reader.
            # Concurrent kernel requests arrive slightly out of order: "near the last end" counts.
            if self.seq_end >= 0 and abs(offset - self.seq_end) <= self.cache.max_run_blocks * self.bs:
                self.seq_bytes += end - offset
            else:
                self.seq_bytes, self.window = end - offset, 0
            if self.seq_bytes > self.cache.sequential_after:
                self.window = min(max(self.window * 2, 2 * self.bs), self.cache.max_readahead)
            self.seq_end = max(self.seq_end, end) if self.window else end
            ahead = self.window
        self.ensure(offset, end, fetch, pool, ahead)
        return os.pread(self.fd, end - offset, offset)

    def write(self, offset: int, data: bytes, fetch: Fetch) -> int:
        end = offset + len(data)
        if not data:
            return 0
        # Blocks only partly overwritten need their remote bytes first.
        for edge in (offset, end):
            blk = edge // self.bs
            if edge % self.bs and edge < self.remote_size:
                self.ensure(blk * self.bs, min((blk + 1) * self.bs, self.remote_size), fetch)
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
            newly_dirty = any(b not in self.dirty for b in blocks)
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
        with self.lock:
            d = {"bucket": self.bucket, "key": self.key, "etag": self.etag, "size": self.size,
                 "block_size": self.bs, "present": sorted(self.present)}
            if self.is_dirty:
                d.update(dirty=True, dirty_blocks=sorted(self.dirty), remote_size=self.remote_size,
                         unfetchable=sorted(self.unfetchable), extra=self.extra)
            return d


def _name_for(bucket: str, key: str) -> str:
    return hashlib.sha256(f"{bucket}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()[:40]


class DataCache:
    def __init__(self, root: str, *, capacity: int = 10 * 1024 * MiB, block_size: int = 256 * 1024,
                 max_readahead: int = 64 * MiB, clock: Callable[[], float] = time.monotonic,
                 wait_timeout: float = 120.0):
        self.root = root
        self.block_size = block_size
        self.capacity = capacity
        # Blocks may use all but 1/64 of the cap: the rest is for the small index files
        # (a block is counted as a whole 1 MiB even when it holds a 4 KiB object).
        self.data_capacity = capacity - capacity // 64
        self.max_readahead = max_readahead
        self.sequential_after = 4 * MiB  # > the kernel readahead of a random read (2 x 1 MiB)
        self.max_run_blocks = max(1, (8 * MiB) // block_size)
        self.wait_timeout = wait_timeout
        self.clock = clock
        self.dir = os.path.join(root, "data")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)
        os.chmod(self.dir, 0o700)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self.used = 0                     # bytes of present blocks + reservations
        self.dirty_bytes = 0
        self._lru: collections.OrderedDict[tuple[int, int], CacheEntry] = collections.OrderedDict()
        self._clean: dict[tuple[str, str], CacheEntry] = {}  # closed, reusable
        self._seq = 0
        self.recovered: list[CacheEntry] = []  # dirty entries left by a crash
        self.hits = 0           # opens that found the object's blocks from before
        self.misses = 0
        self.block_hits = 0     # blocks a read found present
        self.block_misses = 0
        self._load_index()

    # -- accounting ----------------------------------------------------------------------------
    def reserve(self, nbytes: int, entry: CacheEntry, dirty: bool = False) -> None:
        """Take room for new blocks, evicting clean ones; dirty writers wait for uploads."""
        if nbytes <= 0:
            return
        deadline = self.clock() + self.wait_timeout
        with self._lock:
            while self.used + nbytes > self.data_capacity:
                if self._evict_locked(self.used + nbytes - self.data_capacity):
                    continue
                if not dirty and self.used + nbytes > self.data_capacity:
                    break  # a read may overshoot briefly; its blocks become evictable at once
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise CacheFull(28, "cache full of data waiting for upload")  # ENOSPC
                self._space.wait(min(remaining, 1.0))
            self.used += nbytes

    def count_blocks(self, hits: int, misses: int) -> None:
        self.block_hits += hits   # approximate under races; statistics only
        self.block_misses += misses

    def release_reservation(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes
            self._space.notify_all()

    def added(self, entry: CacheEntry, blocks, reserved: int | None = None) -> None:
        """Blocks became present; their reservation becomes accounted blocks."""
        blocks = list(blocks)
        with self._lock:
            if reserved is not None:
                self.used += len(blocks) * self.block_size - reserved
            for b in blocks:
                self._lru[(id(entry), b)] = entry
                self._lru.move_to_end((id(entry), b))

    def touch(self, entry: CacheEntry, blocks) -> None:
        with self._lock:
            for b in blocks:
                k = (id(entry), b)
                if k in self._lru:
                    self._lru.move_to_end(k)

    def removed(self, entry: CacheEntry, blocks) -> None:
        with self._lock:
            for b in blocks:
                if self._lru.pop((id(entry), b), None) is not None:
                    self.used -= self.block_size
            self._space.notify_all()

    def space_freed(self) -> None:
        with self._lock:
            self._space.notify_all()

    def _evict_locked(self, need: int) -> bool:
        freed = 0
        for k in list(self._lru):
            if freed >= need:
                break
            entry = self._lru[k]
            blk = k[1]
            if not entry.lock.acquire(blocking=False):
                continue
            try:
                if blk in entry.dirty or blk in entry.inflight or blk not in entry.present:
                    continue
                if entry.fd >= 0:
                    punch_hole(entry.fd, blk * entry.bs, entry.bs)
                else:
                    try:
                        fd = os.open(entry.path, os.O_RDWR | os.O_CLOEXEC)
                    except FileNotFoundError:
                        fd = -1
                    if fd >= 0:
                        try:
                            punch_hole(fd, blk * entry.bs, entry.bs)
                        finally:
                            os.close(fd)
                entry.present.discard(blk)
            finally:
                entry.lock.release()
            del self._lru[k]
            self.used -= self.block_size
            freed += self.block_size
        return freed > 0

    # -- entries -------------------------------------------------------------------------------
    def _new_file(self, bucket: str, key: str) -> tuple[str, int]:
        with self._lock:
            self._seq += 1
            seq = self._seq
        path = os.path.join(self.dir, f"{_name_for(bucket, key)}.{os.getpid()}.{seq}.{os.urandom(4).hex()}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return path, fd

    def open(self, bucket: str, key: str, etag: str | None, size: int) -> CacheEntry:
        """An entry for this object version: the cached one if its ETag still matches."""
        with self._lock:
            old = self._clean.pop((bucket, key), None)
        if old is not None:
            if etag is not None and old.etag == etag and old.size == size:
                if old.fd < 0:
                    old.fd = os.open(old.path, os.O_RDWR | os.O_CLOEXEC)
                old.refs += 1
                old.seq_end, old.seq_bytes, old.window = -1, 0, 0
                self.hits += 1
                return old
            self.discard(old)
        self.misses += 1
        path, fd = self._new_file(bucket, key)
        os.ftruncate(fd, size)
        entry = CacheEntry(self, bucket, key, etag, size, path, fd)
        entry.refs = 1
        return entry

    def create(self, bucket: str, key: str) -> CacheEntry:
        """An entry for a new, empty object that does not exist remotely yet."""
        entry = self.open(bucket, key, None, 0)
        entry.truncated = True
        self.journal(entry)
        return entry

    def release(self, entry: CacheEntry) -> None:
        """Drop a reference; a clean entry stays for reuse (and across restarts)."""
        with entry.lock:
            entry.refs -= 1
            if entry.refs > 0 or entry.is_dirty or entry.etag is None:
                return
            self._write_index(entry)
        with entry.lock:
            if entry.refs == 0 and entry.fd >= 0:
                os.close(entry.fd)  # reopened on reuse: a cache of many files holds no fds
                entry.fd = -1
        with self._lock:
            prev = self._clean.get((entry.bucket, entry.key))
            self._clean[(entry.bucket, entry.key)] = entry
        if prev is not None and prev is not entry:
            self.discard(prev)

    def forget(self, bucket: str, key: str) -> None:
        with self._lock:
            old = self._clean.pop((bucket, key), None)
        if old is not None:
            self.discard(old)

    def discard(self, entry: CacheEntry) -> None:
        with entry.lock:
            blocks = list(entry.present)
            entry.present.clear()
            if entry.fd >= 0:
                os.close(entry.fd)
                entry.fd = -1
            for p in (entry.path, entry.path + ".json"):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
        self.removed(entry, blocks)

    def journal(self, entry: CacheEntry) -> None:
        """Record the entry's state beside its data, so unsent writes survive a crash."""
        if entry.fd >= 0:
            self._write_index(entry)

    def _write_index(self, entry: CacheEntry) -> None:
        tmp = entry.path + ".json.tmp"
        with open(tmp, "w") as f:
            json.dump(entry.index(), f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, entry.path + ".json")

    def _load_index(self) -> None:
        """Adopt the clean files a previous run left, with their blocks; drop everything else."""
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.endswith(".json") or name.endswith(".tmp"):
                continue
            meta = None
            try:
                with open(path + ".json") as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                pass
            if meta and meta.get("dirty") and meta.get("block_size") == self.block_size:
                self._adopt_dirty(path, meta)
                continue
            if not meta or meta.get("block_size") != self.block_size or not meta.get("etag"):
                for p in (path, path + ".json"):
                    try:
                        os.unlink(p)
                    except FileNotFoundError:
                        pass
                continue
            entry = CacheEntry(self, meta["bucket"], meta["key"], meta["etag"], meta["size"], path, -1)
            entry.present = set(meta["present"])
            self._clean[(entry.bucket, entry.key)] = entry
            for b in sorted(entry.present):
                self._lru[(id(entry), b)] = entry
            self.used += len(entry.present) * self.block_size
        if self.used > self.data_capacity:
            with self._lock:
                self._evict_locked(self.used - self.data_capacity)

    def _adopt_dirty(self, path: str, meta: dict) -> None:
        """Data a previous run wrote and never uploaded: kept for the caller to recover."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        size = os.fstat(fd).st_size  # the file is always as long as the data it holds
        entry = CacheEntry(self, meta["bucket"], meta["key"], meta.get("etag"), size, path, fd)
        entry.present = set(meta.get("present", []))
        entry.dirty = set(meta.get("dirty_blocks", []))
        entry.unfetchable = set(meta.get("unfetchable", []))
        entry.remote_size = min(meta.get("remote_size", size), size)
        entry.truncated = True  # it must be uploaded whatever its blocks say
        entry.extra = meta.get("extra") or {}
        for b in sorted(entry.present):
            self._lru[(id(entry), b)] = entry
        self.used += len(entry.present) * self.block_size
        self.recovered.append(entry)

    def stats(self) -> dict:
        with self._lock:
            dirty = sum(1 for (_, b), e in self._lru.items() if b in e.dirty) * self.block_size
            return {"cache_bytes": self.used, "cache_capacity": self.capacity,
                    "dirty_bytes": dirty, "open_hits": self.hits, "open_misses": self.misses,
                    "block_hits": self.block_hits, "block_misses": self.block_misses}

    def close(self) -> None:
        with self._lock:
            entries = list(self._clean.values())
        for e in entries:
            if e.fd >= 0:
                os.close(e.fd)
                e.fd = -1
