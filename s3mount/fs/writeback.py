"""Getting an open file's changes into S3: the whole-object PUT that close and fsync wait
for, the multipart session that streams a large sequential writer's parts while it writes, and
the check that logs when another writer changed the object meanwhile.

A mixin of FileOps (files.py), whose open-file table, pools and fetcher it uses.
"""

from __future__ import annotations

import logging
import os

from ..store import NotFoundError, PreconditionFailedError, RemoteStoreError
from .attrs import MTIME
from .core import FsCore
from .errors import FsError, to_errno
from .openfile import OpenFile
from .upload import UploadSession

log = logging.getLogger("s3mount.fs")


class Writeback(FsCore):
    def _stream(self, of: OpenFile, write_end: int) -> None:
        """Past the multipart threshold, upload the parts a sequential writer has passed."""
        conn = self.store.connection
        if of.unlinked or of.entry.size <= conn.multipart_threshold:
            return
        if of.session is None:
            with of.upload_lock:
                if of.session is None:
                    of.session = self._new_session(of)
        of.session.stream(write_end)

    def _new_session(self, of: OpenFile) -> UploadSession:
        return UploadSession(self.client, self.store.transfer, self.upload_pool, self.bucket,
                             of.key, of.entry, self._upload_headers(of, session=True),
                             self.store.connection.part_size,
                             self.store.connection.max_concurrency)

    def _upload_headers(self, of: OpenFile, session: bool = False) -> dict[str, str]:
        headers = dict(of.headers)
        headers.update(of.attr.metadata)
        if session and not of.mtime_explicit:
            # Written over time: the object's Last-Modified (the completion) is the mtime.
            headers.pop(MTIME, None)
        return headers

    def upload(self, of: OpenFile) -> None:
        """Put the whole object if it has local changes; raises FsError, data stays dirty."""
        with of.upload_lock:
            entry = of.entry
            if of.unlinked:
                if of.session is not None:
                    of.session.abort()
                    of.session = None
                return
            if not of.pending:
                return
            fetch = self._fetcher(of)
            of.uploading = True
            try:
                conn = self.store.connection
                writes_before = entry.writes
                if of.session is None and entry.size <= conn.multipart_threshold:
                    entry.fill(fetch, self.fetch_pool)
                    with entry.lock:
                        writes_before = entry.writes
                        data = os.pread(entry.fd, entry.size, 0)
                    etag, uploaded = self._put_checked(of, data), len(data)
                else:
                    if of.session is None:
                        of.session = self._new_session(of)
                    self._check_overwrite(of)
                    etag, uploaded = of.session.finish(fetch)
                    if self._upload_headers(of, session=True) != of.session.headers:
                        # metadata changed while the parts were going up (chmod, setxattr...)
                        etag = self.store.replace_metadata(self.bucket, of.key,
                                                           self._upload_headers(of)).etag
                    of.session = None
                entry.key = of.key
                if entry.writes == writes_before:
                    entry.mark_clean(etag)
                else:  # written meanwhile through another handle: S3 has a snapshot only
                    entry.rebase(etag, uploaded)
                of.attr.etag = etag
                uploaded_attr = of.current_attr()
                self.meta.listing_update(of.path, uploaded_attr)
                with self.lock:
                    self._kernel_etags[of.path] = etag  # the page cache holds what we wrote
            except (RemoteStoreError, OSError) as e:
                err = to_errno(e)
                log.error("upload of %s (%d bytes) failed, data kept in cache file %s: %s",
                          of.path, entry.size, entry.path, e)
                raise FsError(err) from e
            finally:
                of.uploading = False
                self.invalidate(of.path, tree=False)
            # Known exactly (ETag, size, metadata): a stat or setxattr after close needs no HEAD.
            self.meta.put(of.path, uploaded_attr)

    def _conflict(self, of: OpenFile) -> None:
        log.warning("s3://%s/%s changed in S3 since this mount read it (another writer); last "
                    "close wins: overwriting that version", self.bucket, of.key)

    def _put_checked(self, of: OpenFile, data: bytes) -> str:
        """PUT, conditional on the version we started from, so that overwriting another
        writer's close is at least logged."""
        headers = self._upload_headers(of)
        base = of.entry.etag
        try:
            if base:
                return self.client.put(self.bucket, of.key, data, headers, if_match=base)
            return self.client.put(self.bucket, of.key, data, headers, if_none_match="*")
        except PreconditionFailedError:
            self._conflict(of)
            return self.client.put(self.bucket, of.key, data, headers)

    def _check_overwrite(self, of: OpenFile) -> None:
        try:
            remote = self.client.head(self.bucket, of.key).etag
        except NotFoundError:
            remote = None
        if remote != of.entry.etag and not (remote is None and of.entry.etag is None):
            self._conflict(of)

    def upload_progress(self) -> list[dict]:
        """Uploads under way: path, size, bytes sent so far (for `s3mount stats`)."""
        with self.lock:
            files = list(self.files.values())
        out = []
        for of in files:
            session = of.session
            if of.uploading or session is not None:
                size = of.entry.size
                sent = session.bytes_done if session is not None else 0
                out.append({"path": of.path, "size": size, "sent": min(sent, size)})
        return out
