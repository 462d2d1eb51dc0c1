"""The data cache: the byte budget over all cache entries (entry.py), LRU eviction of clean
blocks, and the index files that keep clean blocks and unsent writes across restarts.

Blocks (256 KiB) are fetched on first touch through a `fetch(offset, length)` callable the caller
passes in (this module knows no S3), several at once, and sequential readers get a growing
readahead window. Every present block counts against one byte budget; when it is full the least
recently used clean blocks are punched out of their files. Dirty blocks are never evicted:
writers wait for uploads to make room (back-pressure). Files are 0600 in 0700 directories; a
small JSON index beside each closed clean file (of INDEX_MIN_SIZE or more) lets its blocks
survive a restart, to be reused only while the object's ETag is unchanged.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import threading
import time
from typing import Callable

from .blockset import from_runs
from .entry import BlockLost, CacheEntry, CacheFull  # noqa: F401 - re-exported
from .holes import punch_hole
from .spares import SpareFiles

log = logging.getLogger("s3mount.cache")

MiB = 1024 * 1024

# A clean object smaller than this gets no index file: fetching it again after a restart is one
# request, as an open of it is anyway (that GET brings its metadata), while its index is a new
# inode, 0.3-0.7 ms of kernel CPU per file on this project's VMs (a third of a cold small read).
INDEX_MIN_SIZE = 64 * 1024


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
        self.fill_after = 16     # random fetching reads before a whole-object fill (entry.py)
        self.fill_streams = 4    # parallel 8 MiB GETs of a fill
        self.wait_timeout = wait_timeout
        self.clock = clock
        self.dir = os.path.join(root, "data")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)
        os.chmod(self.dir, 0o700)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self.used = 0                     # bytes of present blocks + reservations
        self._lru: collections.OrderedDict[tuple[int, int], CacheEntry] = collections.OrderedDict()
        self._clean: dict[tuple[str, str], CacheEntry] = {}  # closed, reusable
        self._seq = 0
        self.recovered: list[CacheEntry] = []  # dirty entries left by a crash
        self.hits = 0           # opens that found the object's blocks from before
        self.misses = 0
        self.block_hits = 0     # blocks a read found present
        self.block_misses = 0
        # Clean entries whose index is written by the "cache-index" thread, off the close path.
        self._index_queue: dict[int, CacheEntry] = {}
        self._index_cv = threading.Condition(threading.Lock())
        self._index_thread: threading.Thread | None = None
        self._index_flush = threading.Lock()  # close() waits for a write in progress
        self._load_index()
        self._spares = SpareFiles(self.dir)  # after _load_index, which removes old spares

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
        spare = self._spares.take()
        if spare is not None:
            try:
                os.rename(spare, path)
                return path, os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                log.debug("spare cache file %s unusable: %s", spare, e)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return path, fd

    def open(self, bucket: str, key: str, etag: str | None, size: int) -> CacheEntry:
        """An entry for this object version: the cached one if its ETag still matches."""
        with self._lock:
            old = self._clean.pop((bucket, key), None)
        if old is not None:
            with old.lock:  # the fd is closed under this lock when the last user goes
                if etag is not None and old.etag == etag and old.size == size:
                    if old.fd < 0:
                        old.fd = os.open(old.path, os.O_RDWR | os.O_CLOEXEC)
                    old.refs += 1
                    old.seq_end, old.seq_bytes, old.window = -1, 0, 0
                    old.random_misses, old.random_miss_blocks, old.fill_next = 0, 0, -1
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
        entry.truncated = True  # journaled by its first write: an empty new file holds no data
        return entry

    def release(self, entry: CacheEntry) -> None:
        """Drop a reference; a clean entry stays for reuse (and across restarts)."""
        with entry.lock:
            entry.refs -= 1
            if entry.refs > 0 or entry.is_dirty or entry.etag is None:
                return
        if entry.size >= INDEX_MIN_SIZE or entry.written_index is not None:
            self._queue_index(entry)
        with entry.lock:
            # Reopened on reuse, so a cache of many files holds no fds; never while a readahead
            # fetch may still write to it (its fd number could be reused by another file).
            if entry.refs == 0 and entry.fd >= 0 and not entry.inflight:
                os.close(entry.fd)
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
            entry.discarded = True
            # A readahead still writing to the fd closes it when it ends: closed now, its
            # number could be reused by another file and the fetch would write into that one.
            if entry.fd >= 0 and not entry.inflight:
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

    def _queue_index(self, entry: CacheEntry) -> None:
        with self._index_cv:
            self._index_queue[id(entry)] = entry
            if self._index_thread is None:
                self._index_thread = threading.Thread(target=self._index_writer, daemon=True,
                                                      name="cache-index")
                self._index_thread.start()
            self._index_cv.notify()

    def _index_writer(self) -> None:
        while True:
            with self._index_cv:
                while not self._index_queue:
                    self._index_cv.wait()
            time.sleep(0.2)  # let a burst of closes go by first
            self.flush_index()

    def flush_index(self) -> None:
        """Write the queued clean indexes now (close() and the writer thread)."""
        with self._index_flush:
            while True:
                with self._index_cv:
                    if not self._index_queue:
                        return
                    _, entry = self._index_queue.popitem()
                with entry.lock:  # discard() unlinks under this lock: never write after it
                    if entry.discarded or entry.refs > 0:
                        continue  # gone, or in use again: its next release queues it anew
                    try:
                        self._write_index(entry)
                    except OSError as e:
                        log.warning("cache index for %s not written: %s", entry.key, e)

    def _write_index(self, entry: CacheEntry) -> None:
        state = entry.index()
        index = json.dumps(state)
        if index == entry.written_index:
            entry.journal_ahead = _ahead_of(state)
            return  # e.g. the close after an upload's mark_clean: same state, already on disk
        path = entry.path + ".json"
        # Unsent writes go to a temp file renamed over the index: a crash finds either the old
        # journal or the new one, whole. A clean index is written in place: S3 has all of it,
        # so a torn one only costs a refetch, and it needs no new inode (up to 1 ms of kernel
        # CPU per file on some ext4 setups; a temp file per index was a third of a small
        # file's create + read time).
        target = path + ".tmp" if state.get("dirty") else path
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:  # 0600 from the first byte, not chmod'ed afterwards
            f.write(index)
        if target != path:
            os.replace(target, path)
        entry.written_index = index
        entry.journal_ahead = _ahead_of(state)  # only once it is on disk

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
            try:
                present = from_runs(meta["present"])
            except (KeyError, TypeError, ValueError):  # a damaged clean index: refetch instead
                present = set()
            entry = CacheEntry(self, meta["bucket"], meta["key"], meta["etag"], meta["size"], path, -1)
            entry.present = present
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
        held = range(-(-size // self.block_size))  # journaled blocks past these are "ahead"
        try:
            entry.present = {b for b in from_runs(meta.get("present", [])) if b in held}
            entry.dirty = {b for b in from_runs(meta.get("dirty_blocks", [])) if b in held}
            entry.unfetchable = {b for b in from_runs(meta.get("unfetchable", [])) if b in held}
        except (TypeError, ValueError):
            # Damaged block lists: take every block of the file as written, so that all of it
            # is uploaded rather than any of it lost.
            entry.present, entry.dirty, entry.unfetchable = set(held), set(held), set(held)
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
        self.flush_index()
        self._spares.close()
        with self._lock:
            entries = list(self._clean.values())
        for e in entries:
            if e.fd >= 0:
                os.close(e.fd)
                e.fd = -1


def _ahead_of(state: dict) -> range:
    first_last = state.get("ahead")
    return range(first_last[0], first_last[1] + 1) if first_last else range(0)
