"""Cache entries: a sparse local file holding an object's bytes, with per-block presence.

An entry mirrors one object version (its ETag). Blocks are fetched on first touch through a
`fetch(offset, length)` callable that writes into the entry's file; writes go to the file and
mark the entry dirty until the caller uploads it and calls `mark_clean`. Files are created 0600
in a 0700 directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Callable

log = logging.getLogger("s3mount.cache")

Fetch = Callable[[int, int], None]  # fetch(offset, length): put remote bytes at offset in the file

MiB = 1024 * 1024


class CacheEntry:
    def __init__(self, cache: "DataCache", bucket: str, key: str, etag: str | None, size: int,
                 path: str, fd: int):
        self.cache = cache
        self.bucket, self.key, self.etag = bucket, key, etag
        self.size = size            # logical size of the data in this entry
        self.remote_size = size     # bytes at or past this offset are never fetched
        self.path, self.fd = path, fd
        self.bs = cache.block_size
        self.present: set[int] = set()
        self.dirty = False
        self.refs = 0
        self.lock = threading.RLock()

    # -- presence ------------------------------------------------------------------------------
    def _missing_runs(self, start: int, end: int, max_run: int) -> list[tuple[int, int]]:
        """Byte runs [a, b) inside [start, end) that must be fetched, block aligned."""
        end = min(end, self.remote_size)
        if start >= end:
            return []
        runs: list[tuple[int, int]] = []
        first, last = start // self.bs, (end - 1) // self.bs
        run_start = None
        for b in range(first, last + 2):
            missing = b <= last and b not in self.present
            if missing and run_start is None:
                run_start = b
            if run_start is not None and (not missing or (b - run_start) * self.bs >= max_run):
                a = run_start * self.bs
                runs.append((a, min(b * self.bs, self.remote_size)))
                run_start = b if missing else None
        return runs

    def ensure(self, start: int, end: int, fetch: Fetch, max_run: int = 8 * MiB) -> None:
        """Make bytes [start, end) locally valid, fetching missing blocks."""
        with self.lock:
            for a, b in self._missing_runs(start, end, max_run):
                fetch(a, b - a)
                for blk in range(a // self.bs, (b - 1) // self.bs + 1):
                    self.present.add(blk)

    def missing_bytes(self) -> int:
        with self.lock:
            return sum(b - a for a, b in self._missing_runs(0, self.remote_size, 1 << 62))

    # -- data ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int, fetch: Fetch) -> bytes:
        with self.lock:
            end = min(offset + size, self.size)
            if offset >= end:
                return b""
            self.ensure(offset, end, fetch)
            return os.pread(self.fd, end - offset, offset)

    def write(self, offset: int, data: bytes, fetch: Fetch) -> int:
        with self.lock:
            end = offset + len(data)
            # Blocks only partly overwritten need their remote bytes first.
            for edge in (offset, end):
                blk = edge // self.bs
                if edge % self.bs and edge < self.remote_size and blk not in self.present:
                    self.ensure(blk * self.bs, (blk + 1) * self.bs, fetch)
            if offset > self.size:  # a hole between the old end and this write reads as zeros
                self.remote_size = min(self.remote_size, self.size)
            n = os.pwrite(self.fd, data, offset)
            for blk in range(offset // self.bs, (end - 1) // self.bs + 1 if n else 0):
                self.present.add(blk)
            self.size = max(self.size, end)
            self.dirty = True
            return n

    def truncate(self, length: int) -> None:
        with self.lock:
            os.ftruncate(self.fd, length)
            self.remote_size = min(self.remote_size, length)
            if length < self.size:
                first_gone = -(-length // self.bs)
                self.present = {b for b in self.present if b < first_gone}
            self.size = length
            self.dirty = True

    def fill(self, fetch: Fetch) -> None:
        """Fetch every missing block (before a whole-object upload)."""
        self.ensure(0, self.size, fetch, max_run=64 * MiB)

    def mark_clean(self, etag: str) -> None:
        with self.lock:
            self.etag = etag
            self.remote_size = self.size
            self.present = set(range(-(-self.size // self.bs)))
            self.dirty = False


class DataCache:
    def __init__(self, root: str, *, block_size: int = MiB):
        self.root = root
        self.block_size = block_size
        self.dir = os.path.join(root, "data")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)
        os.chmod(self.dir, 0o700)
        self._lock = threading.Lock()
        self._clean: dict[tuple[str, str], CacheEntry] = {}  # closed, clean, reusable
        self._seq = 0

    def _new_file(self, bucket: str, key: str) -> tuple[str, int]:
        with self._lock:
            self._seq += 1
            seq = self._seq
        digest = hashlib.sha256(f"{bucket}/{key}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
        path = os.path.join(self.dir, f"{digest}.{os.getpid()}.{seq}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return path, fd

    def open(self, bucket: str, key: str, etag: str | None, size: int) -> CacheEntry:
        """An entry for this object version: the cached one if its ETag still matches."""
        with self._lock:
            old = self._clean.pop((bucket, key), None)
        if old is not None:
            if etag is not None and old.etag == etag and old.size == size and not old.dirty:
                old.refs += 1
                return old
            self.discard(old)
        path, fd = self._new_file(bucket, key)
        os.ftruncate(fd, size)
        entry = CacheEntry(self, bucket, key, etag, size, path, fd)
        entry.refs = 1
        return entry

    def create(self, bucket: str, key: str) -> CacheEntry:
        """An entry for a new, empty object that does not exist remotely yet."""
        entry = self.open(bucket, key, None, 0)
        entry.dirty = True
        return entry

    def release(self, entry: CacheEntry) -> None:
        """Drop a reference; a clean entry stays for reuse by the next open of the same ETag."""
        with entry.lock:
            entry.refs -= 1
            if entry.refs > 0:
                return
        if entry.dirty or entry.etag is None:
            return  # kept by the caller (pending upload) or simply forgotten by discard()
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
            if entry.fd >= 0:
                os.close(entry.fd)
                entry.fd = -1
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        with self._lock:
            entries = list(self._clean.values())
            self._clean.clear()
        for e in entries:
            self.discard(e)
