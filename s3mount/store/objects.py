"""What S3 says about an object, as headers: ObjectInfo from a HEAD/GET answer, and the
x-amz-meta-* values in both directions (RFC 2047 words for non-ASCII text, as S3 returns them).
"""

from __future__ import annotations

import base64
import calendar
import email.header
import email.utils
import re
from dataclasses import dataclass, field
from typing import Mapping

META_PREFIX = "x-amz-meta-"
# Headers describing content that a metadata replacement must carry forward.
CONTENT_HEADERS = ("content-type", "content-encoding", "content-disposition", "cache-control",
                   "content-language", "expires")
SSE_HEADERS = ("x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
               "x-amz-server-side-encryption-bucket-key-enabled")


_WORD = re.compile(r"^=\?([A-Za-z0-9_.-]+)\?([BbQq])\?([^?]*)\?=$")


def encode_meta_value(value: str) -> str:
    """HTTP headers carry ASCII: other text goes as one RFC 2047 word (=?UTF-8?B?...?=), the form
    S3 itself returns. Edge spaces are encoded too: servers trim them from header values."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8", "surrogateescape")).decode() + "?="


def repair_header_value(raw: str) -> str:
    """Raw UTF-8 from servers that store it arrives decoded as latin-1; undo that."""
    if raw.isascii():
        return raw
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def decode_meta_value(raw: str) -> str:
    raw = repair_header_value(raw)
    m = _WORD.match(raw)
    if m and m.group(2) in "Bb" and m.group(1).lower() in ("utf-8", "utf8", "us-ascii"):
        try:
            return base64.b64decode(m.group(3), validate=True).decode("utf-8")
        except ValueError:
            return raw
    if raw.startswith("=?") and raw.endswith("?="):
        try:
            return str(email.header.make_header(email.header.decode_header(raw)))
        except (ValueError, LookupError, UnicodeDecodeError):
            return raw
    return raw


@dataclass
class ObjectInfo:
    key: str
    size: int
    etag: str
    mtime: float
    metadata: dict[str, str] = field(default_factory=dict)      # values decoded to text
    headers: dict[str, str] = field(default_factory=dict)
    raw_metadata: dict[str, str] = field(default_factory=dict)  # values as stored (RFC 2047 kept)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @property
    def is_multipart(self) -> bool:
        return "-" in self.etag


_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def http_date(value: str) -> float:
    """Seconds since the epoch of an HTTP date. S3 sends the fixed format ("Thu, 03 Dec 2026
    07:05:12 GMT"), read here in a few µs; anything else goes to email.utils (~30 µs), and a
    date nothing can read is 0."""
    parts = value.split()
    if len(parts) == 6 and parts[5] == "GMT" and parts[2] in _MONTHS:
        hms = parts[4].split(":")
        if len(hms) == 3 and parts[1].isdigit() and parts[3].isdigit() \
                and all(x.isdigit() for x in hms):
            return float(calendar.timegm((int(parts[3]), _MONTHS[parts[2]], int(parts[1]),
                                          int(hms[0]), int(hms[1]), int(hms[2]))))
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return 0.0


def info_from_headers(key: str, headers: Mapping[str, str]) -> ObjectInfo:
    lower = {k.lower(): v for k, v in headers.items()}
    raw = {k: repair_header_value(v) for k, v in lower.items() if k.startswith(META_PREFIX)}
    meta = {k: decode_meta_value(v) for k, v in raw.items()}
    mtime = 0.0
    if "last-modified" in lower:
        mtime = http_date(lower["last-modified"])
    size = int(lower.get("content-length", "0"))
    if "content-range" in lower and "/" in lower["content-range"]:
        total = lower["content-range"].rsplit("/", 1)[1]
        if total.isdigit():
            size = int(total)
    return ObjectInfo(key=key, size=size, etag=lower.get("etag", "").strip('"'), mtime=mtime,
                      metadata=meta, headers=lower, raw_metadata=raw)


def encode_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    out = {}
    for k, v in (headers or {}).items():
        k = k.lower()
        v = str(v)
        out[k] = encode_meta_value(v) if k.startswith(META_PREFIX) else v
    return out
