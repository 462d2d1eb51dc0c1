"""The checksum every upload carries: CRC32 (x-amz-checksum-crc32) or Content-MD5, chosen per
connection by UploadChecksum, and the check of the server's answer.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Mapping

from .errors import IntegrityError

log = logging.getLogger("s3mount.store")

try:  # ISA-L's CRC32 (same polynomial) takes a seventh of zlib's CPU: bench/README.md
    from isal.isal_zlib import crc32
except ImportError:  # no wheel for this platform: zlib gives the same answer, slower
    from zlib import crc32


def content_md5(body: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def content_crc32(body: bytes | memoryview) -> str:
    return base64.b64encode(crc32(body).to_bytes(4, "big")).decode()

class UploadChecksum:
    """Which checksum uploads carry, per connection (`upload_checksum`).

    CRC32 (x-amz-checksum-crc32) costs a fifth of MD5's CPU (bench/TRANSFER.md: 1 GiB upload
    113 -> 142 MiB/s here, as the server gets the CPU back); AWS specifies it and SeaweedFS
    verifies it (tests). A server that does not know the header ignores it, so it is trusted only
    once a response echoes it: "auto" (the default) starts with CRC32 and, at the first upload
    whose answer has no x-amz-checksum-crc32, checks that upload by its ETag and goes back to
    Content-MD5 for good. "md5" and "crc32" fix the choice."""

    def __init__(self, mode: str):
        self.mode = mode  # auto | crc32 | md5; "auto" becomes one of the others on first proof
        self._warned = False

    @property
    def use_crc32(self) -> bool:
        return self.mode != "md5"

    def headers(self, body: bytes | memoryview, headers: dict[str, str]) -> str | None:
        """Add the checksum header; the signer then sends UNSIGNED-PAYLOAD. Returns the CRC32
        sent, if one was."""
        if self.use_crc32:
            crc = headers["x-amz-checksum-crc32"] = content_crc32(body)
            return crc
        headers["Content-MD5"] = content_md5(body)
        return None

    def confirm(self, sent: str | None, resp_headers: Mapping[str, str], body, *,
                bucket: str, key: str) -> str | None:
        """Check the answer to an upload that carried `sent`; returns the part's CRC32 if the
        server verified it."""
        if sent is None:
            return None
        echoed = resp_headers.get("x-amz-checksum-crc32")
        if echoed == sent:
            if self.mode == "auto":
                self.mode = "crc32"
            return sent
        if echoed is not None:
            raise IntegrityError(f"server computed CRC32 {echoed}, we sent {sent}",
                                 bucket=bucket, key=key)
        if self.mode == "crc32":
            if not self._warned:
                self._warned = True
                log.warning("the server does not confirm x-amz-checksum-crc32 (upload_checksum: "
                            "crc32); set upload_checksum: md5 to have uploads verified")
            return None
        log.info("the server does not confirm CRC32 checksums: uploads carry Content-MD5")
        self.mode = "md5"
        # This upload went without a verified checksum: its ETag is its MD5 on every server
        # that ignores checksum headers (no SSE-KMS there).
        etag = resp_headers.get("etag", "").strip('"').lower()
        if len(etag) == 32 and etag != hashlib.md5(body).hexdigest():
            raise IntegrityError("upload's ETag is not the MD5 of what was sent",
                                 bucket=bucket, key=key)
        return None
