"""RemoteStore: the public, file-oriented S3 API (write, read, exists, delete, copy, update_metadata).

Methods return booleans as the original `s3` package did: failures are logged (operation, bucket,
key, status, S3 error code, request id; never a secret) and reported as False. `exists` is the
exception: it must distinguish "absent" from "could not tell", so it raises RemoteStoreError.
Programming errors (no bucket, a key S3 cannot hold) raise ValueError before any request.
"""

from __future__ import annotations

import logging
from typing import Mapping

from .client import S3Client
from .objects import CONTENT_HEADERS, META_PREFIX, SSE_HEADERS, ObjectInfo, decode_meta_value
from .config import S3Connection
from .errors import InvalidKeyError, NoSuchBucketError, NotFoundError, RemoteStoreError
from .names import S3Name, resolve
from .transfer import Transfer
from .transport import Transport

log = logging.getLogger("s3mount.store")

RemoteName = str | S3Name


def metadata_of(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(META_PREFIX)}


def carried_headers(info: ObjectInfo) -> dict[str, str]:
    """Headers a metadata REPLACE must send again or S3 drops them: content headers, storage
    class and SSE settings. (Tags survive a copy by default: x-amz-tagging-directive is COPY.)"""
    out = {k: info.headers[k] for k in CONTENT_HEADERS if k in info.headers}
    sc = info.headers.get("x-amz-storage-class")
    if sc and sc != "STANDARD":
        out["x-amz-storage-class"] = sc
    for k in SSE_HEADERS:
        if k in info.headers:
            out[k] = info.headers[k]
    return out


class RemoteStore:
    def __init__(self, connection: S3Connection, *, transport: Transport | None = None):
        self.connection = connection
        self.transport = transport or Transport(connection)
        self.client = S3Client(self.transport, connection.upload_checksum)
        self.transfer = Transfer(self.client, connection)
        self._known_buckets: set[str] = set()

    def _name(self, remote_name: RemoteName) -> tuple[str, str]:
        return resolve(remote_name, self.connection.default_bucket)

    def _failed(self, what: str, bucket: str, key: str, err: Exception) -> bool:
        # S3 failures were logged once by the transport; only local ones are logged here.
        if not isinstance(err, RemoteStoreError) or err.status is None:
            log.warning("%s s3://%s/%s failed: %s", what, bucket, key, err)
        return False

    # -- public API ----------------------------------------------------------------------------
    def write(self, local_name: str, remote_name: RemoteName,
              headers: Mapping[str, str] | None = None) -> bool:
        """Upload a local file; multipart with parallel parts above the threshold."""
        bucket, key = self._name(remote_name)
        try:
            # Some servers (SeaweedFS) create a missing bucket on PUT; a typo must fail instead.
            self._check_bucket(bucket)
            self.transfer.upload_file(bucket, key, local_name, headers)
            return True
        except (RemoteStoreError, OSError) as e:
            return self._failed("write", bucket, key, e)

    def read(self, remote_name: RemoteName, local_name: str) -> tuple[bool, dict[str, str]]:
        """Download to `local_name` (atomically); returns (ok, the object's x-amz-meta-* dict)."""
        bucket, key = self._name(remote_name)
        try:
            info = self.transfer.download_file(bucket, key, local_name)
            return True, dict(info.metadata)
        except (RemoteStoreError, OSError) as e:
            return self._failed("read", bucket, key, e), {}

    def exists(self, remote_name: RemoteName) -> tuple[bool, dict[str, str]]:
        """(True, metadata) or (False, {}); raises RemoteStoreError when it cannot tell."""
        bucket, key = self._name(remote_name)
        try:
            info = self.client.head(bucket, key)
        except NotFoundError:
            self._check_bucket(bucket)
            return False, {}
        return True, dict(info.metadata)

    def delete(self, remote_name: RemoteName) -> bool:
        """Delete the object; deleting an absent key succeeds, as in S3."""
        bucket, key = self._name(remote_name)
        try:
            self.client.delete(bucket, key)
            return True
        except RemoteStoreError as e:
            return self._failed("delete", bucket, key, e)

    def copy(self, remote_source: RemoteName, remote_destination: RemoteName,
             headers: Mapping[str, str] | None = None) -> bool:
        """Server-side copy. Without x-amz-meta-* in `headers` the source's metadata is kept;
        with any, the destination's metadata is exactly those."""
        src_bucket, src_key = self._name(remote_source)
        bucket, key = self._name(remote_destination)
        try:
            info = self.client.head(src_bucket, src_key)
            given = {k.lower(): v for k, v in (headers or {}).items()}
            if not given and info.size <= self.transfer.max_single_copy:
                self.client.copy(src_bucket, src_key, bucket, key, None, replace_metadata=False,
                                 if_match=info.etag)
                return True
            merged = carried_headers(info)
            if not metadata_of(given):
                merged.update(info.raw_metadata)
            merged.update(given)
            self.transfer.copy(src_bucket, src_key, bucket, key, info.size, merged,
                               replace_metadata=True, if_match=info.etag)
            return True
        except RemoteStoreError as e:
            return self._failed("copy", bucket, key, e)

    def update_metadata(self, remote_name: RemoteName, headers: Mapping[str, str]) -> bool:
        """Replace the object's x-amz-meta-* with those in `headers`, in place, keeping content
        headers, storage class, SSE and tags unless `headers` overrides them. Conditional on the
        ETag read first, so a concurrent overwrite is never clobbered with stale metadata."""
        bucket, key = self._name(remote_name)
        try:
            self.replace_metadata(bucket, key, headers)
            return True
        except RemoteStoreError as e:
            return self._failed("update_metadata", bucket, key, e)

    # -- helpers shared with the file system ---------------------------------------------------
    def replace_metadata(self, bucket: str, key: str, headers: Mapping[str, str],
                         info: ObjectInfo | None = None) -> ObjectInfo:
        """update_metadata that raises; returns the object's new state (fresh HEAD)."""
        info = info or self.client.head(bucket, key)
        merged = carried_headers(info)
        merged.update({k.lower(): v for k, v in headers.items()})
        if key.endswith("/") and info.size == 0:
            # A directory marker: some servers cannot copy it onto itself; re-put it instead.
            etag = self.client.put(bucket, key, b"", merged, if_match=info.etag)
        else:
            etag = self.transfer.copy(bucket, key, bucket, key, info.size, merged,
                                      replace_metadata=True, if_match=info.etag)
        raw = metadata_of(merged)
        return ObjectInfo(key=key, size=info.size, etag=etag or info.etag, mtime=info.mtime,
                          metadata={k: decode_meta_value(v) for k, v in raw.items()},
                          headers={**{k: v for k, v in info.headers.items()
                                      if not k.startswith(META_PREFIX)}, **merged},
                          raw_metadata=raw)

    def _check_bucket(self, bucket: str) -> None:
        """A 404 on HEAD has no body; tell a missing object from a missing bucket, once per bucket."""
        if bucket in self._known_buckets:
            return
        try:
            self.client.head_bucket(bucket)
        except (NotFoundError, NoSuchBucketError):
            raise NoSuchBucketError(f"bucket {bucket!r} does not exist", operation="HeadBucket",
                                    bucket=bucket, status=404, code="NoSuchBucket") from None
        self._known_buckets.add(bucket)

    def close(self) -> None:
        self.transfer.close()
        self.transport.session.close()


__all__ = ["RemoteStore", "RemoteStoreError", "InvalidKeyError"]
