"""The S3 XML documents we read and write: errors, listings, multipart and copy results."""

from __future__ import annotations

import calendar
import functools
import html
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import unquote_plus
from xml.sax.saxutils import escape


def _strip_ns(root: ET.Element) -> ET.Element:
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


# S3 answers carry one default namespace on the root element. Dropping that declaration before
# parsing spares a walk over every element to rename it (a third of the CPU of parsing a
# 1,000-key listing); a document that declares namespaces anywhere else takes the walk.
_ROOT_XMLNS = re.compile(rb'\A(\s*(?:<\?xml[^>]*\?>\s*)?<[A-Za-z_][\w.-]*)\s+xmlns="[^"]*"')


def parse(body: bytes) -> ET.Element:
    m = _ROOT_XMLNS.match(body)
    if m is not None and body.find(b"xmlns", m.end()) < 0:
        return ET.fromstring(m.group(1) + body[m.end():])
    return _strip_ns(ET.fromstring(body))


def _text(el: ET.Element | None, name: str, default: str | None = None) -> str | None:
    if el is None:
        return default
    child = el.find(name)
    return default if child is None or child.text is None else child.text


def parse_error(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(code, message, request_id) from an error body; all None when it is not S3 error XML."""
    if not body:
        return None, None, None
    try:
        root = parse(body)
    except ET.ParseError:
        return None, None, None
    return _text(root, "Code"), _text(root, "Message"), _text(root, "RequestId")


def parse_http_date_iso(text: str) -> float:
    """'2024-01-02T03:04:05.000Z' -> epoch seconds."""
    # Sliced, with the day's epoch cached: time.strptime was 39% of listing 10,000 objects
    # (cProfile), and the objects of one listing mostly share a few days.
    if len(text) >= 20 and text[-1] == "Z" and text[10] == "T" and text[13] == text[16] == ":":
        try:
            h, m, sec = int(text[11:13]), int(text[14:16]), int(text[17:19])
            frac = text[20:-1] if text[19] == "." else ""
            if h < 24 and m < 60 and sec < 61 and (frac.isdigit() or (not frac and len(text) == 20)):
                secs = _day_epoch(text[:10]) + h * 3600 + m * 60 + sec
                return float(secs) + (float("0." + frac) if frac else 0.0)
        except ValueError:
            pass
    base = text.split(".")[0].rstrip("Z")
    secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    if "." in text:
        frac = text.split(".", 1)[1].rstrip("Z")
        if frac.isdigit():
            secs += float("0." + frac)
    return float(secs)


@functools.lru_cache(maxsize=256)
def _day_epoch(day: str) -> int:
    """'2024-01-02' -> epoch seconds of its midnight UTC; ValueError if it is no date."""
    return calendar.timegm(time.strptime(day, "%Y-%m-%d"))


@dataclass
class ListedObject:
    key: str
    size: int
    mtime: float
    etag: str
    storage_class: str | None = None


@dataclass
class ListPage:
    objects: list[ListedObject] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    next_token: str | None = None


_TRUNCATED = re.compile(rb"<IsTruncated>\s*true\s*</IsTruncated>")
_NEXT_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")


def peek_next_token(body: bytes) -> str | None:
    """A ListObjectsV2 page's continuation token, read without parsing the page (None on the
    last page, or when it is not written in the plain form this looks for)."""
    if not _TRUNCATED.search(body):
        return None
    m = _NEXT_TOKEN.search(body)
    return html.unescape(m.group(1).decode("utf-8")) if m and m.group(1) else None


# Objects listed together were mostly written in the same few seconds: one parse per distinct
# LastModified (10,000 objects: 25 ms of a listing's ~150 ms of CPU before, cProfile).
_listed_mtime = functools.lru_cache(maxsize=4096)(parse_http_date_iso)


def parse_list_v2(body: bytes) -> ListPage:
    root = parse(body)
    url_encoded = _text(root, "EncodingType") == "url"

    def key_of(s: str | None) -> str:
        s = s or ""
        return unquote_plus(s) if url_encoded and ("%" in s or "+" in s) else s

    page = ListPage()
    for c in root.iterfind("Contents"):
        text = c.findtext  # "" for an empty element, None for a missing one
        page.objects.append(ListedObject(
            key=key_of(text("Key")),
            size=int(text("Size") or 0),
            mtime=_listed_mtime(text("LastModified") or "1970-01-01T00:00:00Z"),
            etag=(text("ETag") or "").strip('"'),
            storage_class=text("StorageClass") or None))
    for p in root.findall("CommonPrefixes"):
        page.prefixes.append(key_of(_text(p, "Prefix")))
    if _text(root, "IsTruncated", "false").lower() == "true":
        page.next_token = _text(root, "NextContinuationToken")
    return page


def parse_initiate_multipart(body: bytes) -> str:
    upload_id = _text(parse(body), "UploadId")
    if not upload_id:
        raise ValueError("InitiateMultipartUploadResult without an UploadId")
    return upload_id


def parse_copy_part_result(body: bytes) -> tuple[str, str | None]:
    """ETag and ChecksumCRC32 of a CopyPartResult (S3 computes the CRC32 when the upload has
    that algorithm)."""
    root = parse(body)
    return _etag(root), _text(root, "ChecksumCRC32")


def parse_etag_result(body: bytes) -> str:
    """ETag of a CopyObjectResult, CopyPartResult or CompleteMultipartUploadResult."""
    return _etag(parse(body))


def _etag(root: ET.Element) -> str:
    return (_text(root, "ETag", "") or "").strip('"')


def is_error_document(body: bytes) -> bool:
    """S3 may answer 200 to Complete/Copy and still fail: the body is then an <Error>."""
    head = body.lstrip()[:200]
    if b"<Error>" not in head and b"<Error " not in head:
        return False
    try:
        return parse(body).tag == "Error"
    except ET.ParseError:
        return False


def complete_multipart_body(parts: list[tuple[int, str, str | None]]) -> bytes:
    """(part_number, etag, crc32) per part. Part checksums go in only when every part has one:
    S3 wants all of them for an upload created with a checksum algorithm, and a server that
    ignored the algorithm never sees the element."""
    with_crc = all(crc for _, _, crc in parts)
    items = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>\"{escape(e)}\"</ETag>"
                    + (f"<ChecksumCRC32>{escape(crc)}</ChecksumCRC32>" if with_crc else "")
                    + "</Part>" for n, e, crc in sorted(parts))
    return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()


def delete_objects_body(keys: list[str]) -> bytes:
    items = "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in keys)
    return f"<Delete><Quiet>true</Quiet>{items}</Delete>".encode()


def parse_delete_errors(body: bytes) -> list[tuple[str, str]]:
    root = parse(body)
    return [(_text(e, "Key", ""), _text(e, "Code", "")) for e in root.findall("Error")]


def parse_tagging(body: bytes) -> dict[str, str]:
    root = parse(body)
    return {_text(t, "Key", ""): _text(t, "Value", "") for t in root.iter("Tag")}


def parse_uploads(body: bytes) -> list[tuple[str, str]]:
    root = parse(body)
    return [(_text(u, "Key", ""), _text(u, "UploadId", "")) for u in root.findall("Upload")]
