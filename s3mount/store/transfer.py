"""Whole-object transfers: parallel multipart upload, parallel ranged download, multipart copy.

A failed multipart upload or copy is always aborted, so no orphaned parts are left behind to be
billed; a failed download never touches the destination path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Mapping

from ..pagecache import PageRecycler
from .client import S3Client
from .objects import ObjectInfo
from .config import MiB, S3Connection
from .errors import IntegrityError

log = logging.getLogger("s3mount.store")

MAX_PARTS = 10_000
MAX_SINGLE_COPY = 5 * 1024 * MiB  # S3's limit for one CopyObject
COPY_PART_SIZE = 512 * MiB


def part_size_for(size: int, minimum: int) -> int:
    """The smallest MiB-aligned part size >= `minimum` that fits `size` in 10,000 parts."""
    need = -(-size // MAX_PARTS)
    need = -(-need // MiB) * MiB
    return max(minimum, need)


def plain_md5_etag(info: ObjectInfo) -> str | None:
    """The object's MD5 when its ETag is one (single-part upload, no SSE-KMS/SSE-C)."""
    etag = info.etag
    if len(etag) != 32 or any(c not in "0123456789abcdef" for c in etag.lower()):
        return None
    if info.headers.get("x-amz-server-side-encryption") == "aws:kms":
        return None
    if "x-amz-server-side-encryption-customer-algorithm" in info.headers:
        return None
    return etag.lower()


class Transfer:
    def __init__(self, client: S3Client, connection: S3Connection, *,
                 max_single_copy: int = MAX_SINGLE_COPY, copy_part_size: int = COPY_PART_SIZE):
        self.client = client
        self.conn = connection
        self.max_single_copy = max_single_copy
        self.copy_part_size = copy_part_size
        self._pool = ThreadPoolExecutor(max_workers=connection.max_concurrency,
                                        thread_name_prefix="s3-transfer")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _run_parts(self, bucket: str, key: str, upload_id: str,
                   jobs: list[Callable[[], str]]) -> list[tuple[int, str]]:
        """Run part jobs in parallel; on the first failure cancel the rest and abort the upload."""
        futures: list[Future] = [self._pool.submit(job) for job in jobs]
        try:
            return [(n, f.result()) for n, f in enumerate(futures, start=1)]
        except BaseException:
            for f in futures:
                f.cancel()
            for f in futures:
                if not f.cancelled():
                    try:
                        f.result()
                    except BaseException:  # noqa: S110 - the first error is the one we report
                        pass
            self.abort_quietly(bucket, key, upload_id)
            raise

    def abort_quietly(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart(bucket, key, upload_id)
        except Exception as e:  # the original failure matters more; the abort is logged
            log.warning("could not abort multipart upload %s of %s/%s: %s", upload_id, bucket, key, e)

    # -- upload --------------------------------------------------------------------------------
    def upload_file(self, bucket: str, key: str, path: str,
                    headers: Mapping[str, str] | None = None) -> str:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= self.conn.multipart_threshold:
                return self.client.put(bucket, key, f.read(), headers)
            return self.upload_fd(bucket, key, f.fileno(), size, headers)

    def upload_fd(self, bucket: str, key: str, fd: int, size: int,
                  headers: Mapping[str, str] | None = None) -> str:
        part = part_size_for(size, self.conn.part_size)
        upload_id = self.client.create_multipart(bucket, key, headers)

        def job(offset: int, length: int, number: int) -> Callable[[], str]:
            def run() -> str:
                data = os.pread(fd, length, offset)
                if len(data) != length:
                    raise IntegrityError(f"local file shrank while uploading part {number}")
                return self.client.upload_part(bucket, key, upload_id, number, data)
            return run

        jobs = [job(off, min(part, size - off), n)
                for n, off in enumerate(range(0, size, part), start=1)]
        parts = self._run_parts(bucket, key, upload_id, jobs)
        try:
            return self.client.complete_multipart(bucket, key, upload_id, parts)
        except BaseException:
            self.abort_quietly(bucket, key, upload_id)
            raise

    # -- download ------------------------------------------------------------------------------
    def download_file(self, bucket: str, key: str, local_path: str) -> ObjectInfo:
        """Download to a temp file beside `local_path`, verify, then rename it into place."""
        info = self.client.head(bucket, key)
        directory = os.path.dirname(os.path.abspath(local_path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(local_path) + ".",
                                   suffix=".s3mount-part")
        try:
            self.download_into(bucket, key, fd, info)
            # No fsync: the rename already guarantees no partial file is ever visible, and the
            # authoritative copy is in S3 (aws-cli and rclone do not fsync either).
            os.close(fd)
            fd = -1
            os.replace(tmp, local_path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return info

    def download_into(self, bucket: str, key: str, fd: int, info: ObjectInfo) -> None:
        size = info.size
        os.ftruncate(fd, size)
        want_md5 = plain_md5_etag(info)
        if size == 0:
            if want_md5 and want_md5 != hashlib.md5(b"").hexdigest():
                raise IntegrityError("empty body but the ETag is not the MD5 of nothing",
                                     bucket=bucket, key=key)
            return
        part = part_size_for(size, self.conn.part_size)
        ranges = [(off, min(part, size - off)) for off in range(0, size, part)]
        futures = [self._pool.submit(self.client.get_into_file, bucket, key, fd, off, length,
                                     if_match=info.etag) for off, length in ranges]
        md5 = hashlib.md5() if want_md5 else None
        # Ranges land in order here (results are taken in order): recycle their page cache.
        recycler = PageRecycler() if self.conn.drop_download_cache else None
        try:
            # Hash each range as soon as it lands, in order, while later ranges still download.
            for (off, length), f in zip(ranges, futures):
                f.result()
                if md5 is not None:
                    pos = off
                    while pos < off + length:
                        chunk = os.pread(fd, min(4 * MiB, off + length - pos), pos)
                        md5.update(chunk)
                        pos += len(chunk)
                if recycler is not None:
                    recycler.done(fd, off, length)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        if md5 is not None and md5.hexdigest() != want_md5:
            raise IntegrityError(f"downloaded data has MD5 {md5.hexdigest()}, ETag says {want_md5}",
                                 bucket=bucket, key=key)

    # -- copy ----------------------------------------------------------------------------------
    def copy(self, src_bucket: str, src_key: str, bucket: str, key: str, size: int,
             headers: Mapping[str, str] | None, *, replace_metadata: bool,
             if_match: str | None = None) -> str:
        if size <= self.max_single_copy:
            return self.client.copy(src_bucket, src_key, bucket, key, headers,
                                    replace_metadata=replace_metadata, if_match=if_match)
        # Multipart copy: metadata and content headers come from `headers`, never implicitly.
        part = part_size_for(size, self.copy_part_size)
        upload_id = self.client.create_multipart(bucket, key, headers)

        def job(offset: int, length: int, number: int) -> Callable[[], str]:
            return lambda: self.client.upload_part_copy(bucket, key, upload_id, number, src_bucket,
                                                        src_key, offset, offset + length,
                                                        if_match=if_match)
        jobs = [job(off, min(part, size - off), n)
                for n, off in enumerate(range(0, size, part), start=1)]
        parts = self._run_parts(bucket, key, upload_id, jobs)
        try:
            return self.client.complete_multipart(bucket, key, upload_id, parts)
        except BaseException:
            self.abort_quietly(bucket, key, upload_id)
            raise
