"""S3Client: the S3 operations s3mount needs, each one request through the shared transport.

Head, ranged GET (into a buffer or a file), PUT, ListObjectsV2, CopyObject, DeleteObject, the
multipart calls and tagging. Uploads carry a checksum the server verifies (CRC32, or Content-MD5
for servers that do not confirm CRC32: checksums.UploadChecksum); downloads check their length.
Headers become ObjectInfo in objects.py.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from typing import Iterator, Mapping, NamedTuple

from . import xml
from .checksums import UploadChecksum, content_md5
from .errors import IntegrityError, S3Error, ServerError
from .objects import ObjectInfo, encode_headers, info_from_headers
from .transport import Transport, quote_key

log = logging.getLogger("s3mount.store")

class PartTag(NamedTuple):
    """What CompleteMultipartUpload needs of one part."""
    etag: str
    crc32: str | None = None



def _etag_result(body: bytes, parse=xml.parse_etag_result):
    """ETag of a Copy/Complete result (or what `parse` reads of it); S3 may answer 200 and
    still fail (an <Error> body), which it says to retry."""
    if xml.is_error_document(body):
        code, message, rid = xml.parse_error(body)
        raise ServerError(message or "request failed", code=code, request_id=rid, status=200)
    return parse(body)


def _in_background(fn, *args) -> Future:
    fut: Future = Future()

    def run() -> None:
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - raised where the result is taken
            fut.set_exception(e)
    threading.Thread(target=run, daemon=True, name="list-ahead").start()
    return fut


def copy_source(bucket: str, key: str) -> str:
    return f"/{bucket}/{quote_key(key)}"


class S3Client:
    def __init__(self, transport: Transport, checksum: str = "auto"):
        self.t = transport
        self.checksum = UploadChecksum(checksum)

    # -- reading -------------------------------------------------------------------------------
    def head(self, bucket: str, key: str, *, if_match: str | None = None) -> ObjectInfo:
        headers = {"if-match": f'"{if_match}"'} if if_match else None
        resp = self.t.request("HEAD", bucket, key, operation="HeadObject", headers=headers)
        return info_from_headers(key, resp.headers)

    def get_bytes(self, bucket: str, key: str, start: int | None = None, end: int | None = None,
                  *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        """GET the whole object, or bytes [start, end) of it; checks the length it got."""
        headers = {}
        if start is not None:
            headers["range"] = f"bytes={start}-{'' if end is None else end - 1}"
        if if_match:
            headers["if-match"] = f'"{if_match}"'

        def attempt():
            resp = self.t.send("GET", bucket, key, operation="GetObject", headers=headers,
                               expect=(200, 206))
            data = resp.content
            self.t.stats.add_down(len(data))
            want = int(resp.headers.get("content-length", len(data)))
            if len(data) != want:
                raise IntegrityError(f"short body: got {len(data)} of {want} bytes")
            return data, info_from_headers(key, resp.headers)
        return self.t.call("GetObject", bucket, key, attempt)

    def get_into_file(self, bucket: str, key: str, fd: int, start: int, length: int,
                      *, if_match: str | None = None, chunk: int = 256 * 1024) -> None:
        """Write object bytes [start, start+length) at the same offset of `fd`; retried whole.
        256 KiB pieces: larger pwrites into fresh page cache measured up to 3x slower
        (bench/TRANSFER.md)."""
        headers = {"range": f"bytes={start}-{start + length - 1}"}
        if if_match:
            headers["if-match"] = f'"{if_match}"'

        def attempt():
            resp = self.t.send("GET", bucket, key, operation="GetObject", headers=headers,
                               expect=(200, 206), stream=True)
            try:
                got = 0
                buf = bytearray(min(chunk, length) or 1)
                view = memoryview(buf)
                while got < length:
                    n = resp.readinto(view[:min(len(buf), length - got)])
                    if not n:
                        break
                    os.pwrite(fd, view[:n], start + got)
                    got += n
                self.t.stats.add_down(got)
                if got != length:
                    raise IntegrityError(f"short body: got {got} of {length} bytes")
            finally:
                resp.close()
        self.t.call("GetObject", bucket, key, attempt)

    def list_page(self, bucket: str, prefix: str = "", delimiter: str | None = "/",
                  token: str | None = None, max_keys: int = 1000,
                  start_after: str | None = None) -> xml.ListPage:
        return xml.parse_list_v2(self._list_body(bucket, prefix, delimiter, token, max_keys,
                                                 start_after))

    def _list_body(self, bucket: str, prefix: str, delimiter: str | None, token: str | None,
                   max_keys: int = 1000, start_after: str | None = None) -> bytes:
        params = {"list-type": "2", "max-keys": str(max_keys), "encoding-type": "url"}
        if prefix:
            params["prefix"] = prefix
        if delimiter:
            params["delimiter"] = delimiter
        if token:
            params["continuation-token"] = token
        if start_after:
            params["start-after"] = start_after
        return self.t.request("GET", bucket, None, operation="ListObjectsV2",
                              params=params).content

    def list_all(self, bucket: str, prefix: str = "", delimiter: str | None = "/",
                 max_keys: int = 1000) -> Iterator[xml.ListPage]:
        """Every page, in order. The next page is asked for as soon as this one's continuation
        token is read, so the server works on it while this one is parsed and used (SeaweedFS
        takes 30-50 ms per 1000 keys; parsing them here takes about 10)."""
        body = self._list_body(bucket, prefix, delimiter, None, max_keys)
        while True:
            token = xml.peek_next_token(body)
            ahead = _in_background(self._list_body, bucket, prefix, delimiter, token,
                                   max_keys) if token else None
            page = xml.parse_list_v2(body)
            yield page
            if not page.next_token:
                return
            if ahead is not None and token == page.next_token:
                body = ahead.result()
            else:  # the token could not be read ahead: ask in turn
                body = self._list_body(bucket, prefix, delimiter, page.next_token, max_keys)

    def head_bucket(self, bucket: str) -> None:
        self.t.request("HEAD", bucket, None, operation="HeadBucket")

    def create_bucket(self, bucket: str) -> None:
        body = b""
        region = self.t.conn.region
        if region and region != "us-east-1":
            body = (f"<CreateBucketConfiguration><LocationConstraint>{region}"
                    "</LocationConstraint></CreateBucketConfiguration>").encode()
        self.t.request("PUT", bucket, None, operation="CreateBucket", body=body)

    def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        """(key, upload_id) of the uploads in progress (first page)."""
        params = {"uploads": None}
        if prefix:
            params["prefix"] = prefix
        resp = self.t.request("GET", bucket, None, operation="ListMultipartUploads", params=params)
        return xml.parse_uploads(resp.content)

    def get_tagging(self, bucket: str, key: str) -> dict[str, str] | None:
        """The object's tags, or None where the server does not support tagging."""
        try:
            resp = self.t.request("GET", bucket, key, operation="GetObjectTagging",
                                  params={"tagging": None})
        except S3Error as e:
            if e.status in (400, 404, 405, 501) and e.code not in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise
        return xml.parse_tagging(resp.content)

    # -- writing -------------------------------------------------------------------------------
    def put(self, bucket: str, key: str, body: bytes | memoryview,
            headers: Mapping[str, str] | None = None, *, if_match: str | None = None,
            if_none_match: str | None = None) -> str:
        hdrs = encode_headers(headers)
        if if_match:
            hdrs["if-match"] = f'"{if_match}"'
        if if_none_match:
            hdrs["if-none-match"] = if_none_match
        sent = self.checksum.headers(body, hdrs)
        resp = self.t.request("PUT", bucket, key, operation="PutObject", headers=hdrs, body=body)
        self.checksum.confirm(sent, resp.headers, body, bucket=bucket, key=key)
        return resp.headers.get("etag", "").strip('"')

    def delete(self, bucket: str, key: str) -> None:
        self.t.request("DELETE", bucket, key, operation="DeleteObject", expect=(200, 204))

    def copy(self, src_bucket: str, src_key: str, bucket: str, key: str,
             headers: Mapping[str, str] | None = None, *, replace_metadata: bool,
             if_match: str | None = None) -> str:
        hdrs = encode_headers(headers)
        hdrs["x-amz-copy-source"] = copy_source(src_bucket, src_key)
        hdrs["x-amz-metadata-directive"] = "REPLACE" if replace_metadata else "COPY"
        if if_match:
            hdrs["x-amz-copy-source-if-match"] = f'"{if_match}"'
        return self._copy_like("CopyObject", bucket, key, hdrs, None)

    def _copy_like(self, operation: str, bucket: str, key: str, hdrs: dict[str, str],
                   params: dict | None) -> str:
        def attempt():
            resp = self.t.send("PUT", bucket, key, operation=operation, headers=hdrs, params=params)
            return _etag_result(resp.content)
        return self.t.call(operation, bucket, key, attempt)

    # -- multipart -----------------------------------------------------------------------------
    def create_multipart(self, bucket: str, key: str, headers: Mapping[str, str] | None = None) -> str:
        hdrs = encode_headers(headers)
        if self.checksum.use_crc32:  # S3 takes part checksums only for an upload declared so
            hdrs["x-amz-checksum-algorithm"] = "CRC32"
        resp = self.t.request("POST", bucket, key, operation="CreateMultipartUpload",
                              headers=hdrs, params={"uploads": None})
        return xml.parse_initiate_multipart(resp.content)

    def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int,
                    body: bytes | memoryview) -> PartTag:
        hdrs: dict[str, str] = {}
        sent = self.checksum.headers(body, hdrs)
        resp = self.t.request("PUT", bucket, key, operation="UploadPart", headers=hdrs, body=body,
                              params={"partNumber": str(part_number), "uploadId": upload_id})
        etag = resp.headers.get("etag", "").strip('"')
        if not etag:
            raise IntegrityError("UploadPart answer has no ETag", bucket=bucket, key=key)
        return PartTag(etag, self.checksum.confirm(sent, resp.headers, body, bucket=bucket,
                                                   key=key))

    def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int,
                         src_bucket: str, src_key: str, start: int, end: int,
                         *, if_match: str | None = None) -> PartTag:
        """Copy source bytes [start, end) into a part."""
        hdrs = {"x-amz-copy-source": copy_source(src_bucket, src_key),
                "x-amz-copy-source-range": f"bytes={start}-{end - 1}"}
        if if_match:
            hdrs["x-amz-copy-source-if-match"] = f'"{if_match}"'
        params = {"partNumber": str(part_number), "uploadId": upload_id}

        def attempt() -> PartTag:
            resp = self.t.send("PUT", bucket, key, operation="UploadPartCopy", headers=hdrs,
                               params=params)
            return PartTag(*_etag_result(resp.content, xml.parse_copy_part_result))
        return self.t.call("UploadPartCopy", bucket, key, attempt)

    def complete_multipart(self, bucket: str, key: str, upload_id: str,
                           parts: list[tuple[int, PartTag]]) -> str:
        body = xml.complete_multipart_body([(n, t.etag, t.crc32) for n, t in parts])
        hdrs: dict[str, str] = {"content-type": "application/xml",
                                "Content-MD5": content_md5(body)}

        def attempt():
            resp = self.t.send("POST", bucket, key, operation="CompleteMultipartUpload",
                               headers=hdrs, body=body, params={"uploadId": upload_id})
            return _etag_result(resp.content)
        return self.t.call("CompleteMultipartUpload", bucket, key, attempt)

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        self.t.request("DELETE", bucket, key, operation="AbortMultipartUpload",
                       params={"uploadId": upload_id}, expect=(200, 204))
