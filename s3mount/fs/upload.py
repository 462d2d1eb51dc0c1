"""Multipart upload sessions for open files.

A file written sequentially streams: each part is uploaded in the background once the writer has
passed it, so close only waits for the tail. A part written again is uploaded again (S3 keeps the
last upload of a part number). At close, parts of an existing object that were not touched are
copied server-side (UploadPartCopy), so a small change to a large object re-uploads only the
parts it changed. Part sizes grow in tiers of 1,000 parts, so 10,000 parts hold over 5 TiB.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Executor, Future

from ..cache import CacheEntry
from ..store import NoSuchUploadError, S3Client
from ..store.transfer import Transfer

log = logging.getLogger("s3mount.fs")

PARTS_PER_TIER = 1000
MAX_PARTS = 10_000


def part_bounds(number: int, base: int) -> tuple[int, int]:
    """[start, end) of part `number` (1-based): 1,000 parts of `base`, then of 2x, 4x, ..."""
    start, size, n = 0, base, number - 1
    while n >= PARTS_PER_TIER:
        start += PARTS_PER_TIER * size
        size *= 2
        n -= PARTS_PER_TIER
    return start + n * size, start + (n + 1) * size


def part_at(offset: int, base: int) -> int:
    """The part number holding byte `offset`."""
    number, start, size = 1, 0, base
    while offset >= start + PARTS_PER_TIER * size:
        start += PARTS_PER_TIER * size
        size *= 2
        number += PARTS_PER_TIER
    return number + (offset - start) // size


def layout(size: int, base: int) -> list[tuple[int, int, int]]:
    """(number, start, end) of every part of an object of `size` bytes."""
    parts, n = [], 1
    while True:
        start, end = part_bounds(n, base)
        if start >= size and parts:
            return parts
        parts.append((n, start, min(end, size)))
        if end >= size:
            return parts
        n += 1


class UploadSession:
    def __init__(self, client: S3Client, transfer: Transfer, pool: Executor, bucket: str,
                 key: str, entry: CacheEntry, headers: dict[str, str], base_part: int,
                 max_inflight: int):
        self.client, self.transfer, self.pool = client, transfer, pool
        self.bucket, self.key = bucket, key
        self.entry = entry
        self.headers = dict(headers)  # what CreateMultipartUpload was given
        self.base = base_part
        self.max_inflight = max_inflight
        self.upload_id: str | None = None
        self.done: dict[int, tuple[str, int]] = {}   # part -> (etag, length uploaded)
        self.inflight: dict[int, Future] = {}
        self.lock = threading.Lock()
        self.next_part = 1  # streaming: the first part not yet considered
        self.bytes_done = 0
        self.finishing = False  # set by finish: no more streamed parts after that

    def _ensure_started(self) -> str:
        with self.lock:
            if self.upload_id is None:
                self.upload_id = self.client.create_multipart(self.bucket, self.key, self.headers)
            return self.upload_id

    def _blocks(self, start: int, end: int) -> range:
        bs = self.entry.bs
        return range(start // bs, (end - 1) // bs + 1)

    def _upload_part(self, number: int, start: int, end: int) -> None:
        entry = self.entry
        with entry.lock:
            gens = {b: entry.gen.get(b, 0) for b in self._blocks(start, end)}
            data = os.pread(entry.fd, end - start, start)
        etag = self.client.upload_part(self.bucket, self.key, self._ensure_started(), number, data)
        with entry.lock:
            unchanged = [b for b, g in gens.items() if entry.gen.get(b, 0) == g]
            clean = len(unchanged) == len(gens)
        entry.mark_uploaded(unchanged)
        if clean:
            entry.recycle(start, end)
        with self.lock:
            if clean:
                self.done[number] = (etag, end - start)
            self.bytes_done += end - start

    def _wait_room(self) -> None:
        while True:
            with self.lock:
                running = [f for f in self.inflight.values() if not f.done()]
                if len(running) < self.max_inflight:
                    return
                first = running[0]
            first.exception()  # wait; a failure is raised again at finish

    # -- streaming -----------------------------------------------------------------------------
    def stream(self, write_end: int) -> None:
        """Start uploads of the parts a sequential writer has passed."""
        entry = self.entry
        while True:
            start, end = part_bounds(self.next_part, self.base)
            if end > write_end or end > entry.size:
                return
            with entry.lock:
                blocks = self._blocks(start, end)
                ready = all(b in entry.present for b in blocks) and \
                    any(b in entry.dirty for b in blocks)
            number = self.next_part
            self.next_part += 1
            if not ready:
                continue
            self._wait_room()
            with self.lock:
                if self.finishing:
                    return  # a close is completing this upload; it uploads the rest itself
                self.inflight[number] = self.pool.submit(self._upload_part, number, start, end)

    # -- completion ----------------------------------------------------------------------------
    def finish(self, fetch) -> tuple[str, int]:
        """Upload or copy whatever parts need it, complete; returns (new ETag, its size)."""
        entry = self.entry
        with self.lock:
            self.finishing = True
            running = list(self.inflight.values())
        for f in running:
            f.exception()
        self.inflight.clear()
        size = entry.size
        parts = layout(size, self.base)
        if len(parts) > MAX_PARTS:
            raise OSError(27, "file too large for S3 (over 10,000 parts)")  # EFBIG
        jobs = []
        for number, start, end in parts:
            with entry.lock:
                blocks = self._blocks(start, end)
                touched = any(b in entry.dirty for b in blocks)
                unfetchable = any(b in entry.unfetchable for b in blocks)
            prior = self.done.get(number)
            if prior is not None and prior[1] == end - start and not touched:
                continue
            if not unfetchable and entry.etag and end <= entry.remote_size:
                jobs.append((self._copy_part, number, start, end))
            else:
                jobs.append((self._fill_and_upload, number, start, end, fetch))
        self._ensure_started()
        futures = [self.pool.submit(*job) for job in jobs]
        for f in futures:
            f.result()
        try:
            etag = self.client.complete_multipart(
                self.bucket, self.key, self.upload_id,
                [(n, self.done[n][0]) for n, _, _ in parts])
            return etag, size
        except NoSuchUploadError:
            self.upload_id = None
            self.done.clear()
            raise

    def _copy_part(self, number: int, start: int, end: int) -> None:
        entry = self.entry
        etag = self.client.upload_part_copy(self.bucket, self.key, self._ensure_started(), number,
                                            self.bucket, entry.key, start, end, if_match=entry.etag)
        with self.lock:
            self.done[number] = (etag, end - start)
            self.bytes_done += end - start

    def _fill_and_upload(self, number: int, start: int, end: int, fetch) -> None:
        self.entry.ensure(start, end, fetch)
        self._upload_part(number, start, end)
        if number not in self.done:  # written again while uploading: once more, now quiet
            self._upload_part(number, start, end)
        if number not in self.done:
            raise OSError(11, f"part {number} kept changing during upload")  # EAGAIN

    def abort(self) -> None:
        for f in list(self.inflight.values()):
            f.cancel()
        if self.upload_id is not None:
            self.transfer.abort_quietly(self.bucket, self.key, self.upload_id)
            self.upload_id = None
