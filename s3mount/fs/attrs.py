"""POSIX attributes <-> S3 user metadata, in the encoding s3fs-fuse and rclone use.

Written: x-amz-meta-mode (decimal, with the file-type bits), -uid, -gid (decimal), -mtime (seconds,
with '.' and 9 digits when there is a fraction). Read: the same, plus octal modes as rclone's
--metadata writes them, s3fs's legacy x-amz-meta-permissions, RFC 3339 times; missing values
fall back to the mount's defaults and the object's Last-Modified.

Extended attributes: user.NAME <-> x-amz-meta-NAME. Values are bytes; they are stored as plain
text when they are printable ASCII without edge spaces, else as an RFC 2047 encoded word
(=?UTF-8?B?...?= for UTF-8 text, =?x-binary?B?...?= for other bytes) that decodes exactly.
"""

from __future__ import annotations

import base64
import datetime
import re
import stat
from dataclasses import dataclass, field

META = "x-amz-meta-"
MODE, UID, GID, MTIME = META + "mode", META + "uid", META + "gid", META + "mtime"
# Keys that hold POSIX attributes: never shown as user.* extended attributes.
POSIX_KEYS = frozenset({MODE, UID, GID, MTIME, META + "atime", META + "ctime",
                        META + "permissions", META + "owner", META + "group"})
USER_META_LIMIT = 2048  # S3: user metadata, keys and values, at most 2 KB
_VALID_TYPES = {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFSOCK,
                stat.S_IFCHR, stat.S_IFBLK}
_TOKEN = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_WORD = re.compile(r"^=\?([^?]+)\?([bBqQ])\?([^?]*)\?=$")


@dataclass
class Attr:
    kind: str                 # "file", "dir" or "link"
    mode: int                 # full st_mode, type bits included
    size: int = 0
    mtime: float = 0.0
    uid: int = 0
    gid: int = 0
    etag: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    complete: bool = True     # stat fields known (False: from a listing, HEAD needed)
    has_meta: bool = True     # metadata and content headers known (False: from a listing)
    headers: dict[str, str] = field(default_factory=dict)  # Content-Type and friends
    mtime_ns: int | None = None  # exact, when x-amz-meta-mtime gives it

    @property
    def st_mtime_ns(self) -> int:
        return self.mtime_ns if self.mtime_ns is not None else round(self.mtime * 1e6) * 1000

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


def _parse_int(text: str) -> int | None:
    try:
        return int(text.strip(), 0)   # like C strtol base 0, as s3fs reads it
    except ValueError:
        try:
            return int(text.strip(), 8) if text.strip().startswith("0") else None
        except ValueError:
            return None


def parse_mode(meta: dict[str, str]) -> int | None:
    raw = meta.get(MODE)
    if raw is not None:
        value = _parse_int(raw)
        if value is not None:
            if value > 0o177777 or (value & 0o170000 and stat.S_IFMT(value) not in _VALID_TYPES):
                try:  # rclone --metadata writes octal without a leading 0 ("100644")
                    value = int(raw.strip(), 8)
                except ValueError:
                    return None
            return value
    raw = meta.get(META + "permissions")  # s3sync/old s3fs
    if raw is not None:
        return _parse_int(raw)
    return None


def parse_time_ns(raw: str | None) -> int | None:
    """'1700000000', '1700000000.5' (fraction padded to 9 digits, as rclone reads s3fs's
    values) or RFC 3339 -> integer nanoseconds."""
    if not raw:
        return None
    raw = raw.strip()
    try:
        if "." in raw and raw.replace(".", "", 1).isdigit():
            sec, frac = raw.split(".", 1)
            return int(sec) * 10**9 + int((frac + "000000000")[:9])
        if raw.lstrip("-").isdigit():
            return int(raw) * 10**9
        dt = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000
    except (ValueError, OverflowError):
        return None


def parse_time(raw: str | None) -> float | None:
    ns = parse_time_ns(raw)
    return None if ns is None else ns / 1e9


def format_time(t: float | int) -> str:
    """Seconds (a float) or nanoseconds (an int) -> s3fs's 'sec' or 'sec.nnnnnnnnn'."""
    ns = t if isinstance(t, int) else int(round(t * 1e9))
    sec, frac = divmod(ns, 10**9)
    return str(sec) if frac == 0 else f"{sec}.{frac:09d}"


def attr_from_meta(kind: str, size: int, last_modified: float, etag: str | None,
                   meta: dict[str, str], defaults: "Defaults") -> Attr:
    mode = parse_mode(meta)
    if kind == "file" and mode is not None and stat.S_ISLNK(mode):
        kind = "link"
    type_bits = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "link": stat.S_IFLNK}[kind]
    perm = (stat.S_IMODE(mode) if mode is not None
            else defaults.dir_mode if kind == "dir" else 0o777 if kind == "link" else defaults.file_mode)
    uid = _parse_int(meta.get(UID, "")) if UID in meta else None
    gid = _parse_int(meta.get(GID, "")) if GID in meta else None
    if defaults.force_owner:
        uid = gid = None
    mtime_ns = parse_time_ns(meta.get(MTIME))
    return Attr(kind=kind, mode=type_bits | perm, size=size,
                mtime=mtime_ns / 1e9 if mtime_ns is not None else last_modified,
                uid=defaults.uid if uid is None else uid, gid=defaults.gid if gid is None else gid,
                etag=etag, metadata=dict(meta), mtime_ns=mtime_ns)


def has_posix_meta(meta: dict[str, str]) -> bool:
    return any(k in meta for k in (MODE, UID, GID, MTIME, META + "permissions"))


def default_mode(kind: str, defaults: "Defaults") -> int | None:
    """The st_mode an object of `kind` shows without x-amz-meta-mode (None for links: their
    mode is what marks them as links)."""
    if kind == "dir":
        return stat.S_IFDIR | defaults.dir_mode
    if kind == "file":
        return stat.S_IFREG | defaults.file_mode
    return None


def set_posix(meta: dict[str, str], kind: str, defaults: "Defaults", *, mode: int | None = None,
              uid: int | None = None, gid: int | None = None) -> dict[str, str]:
    """Set mode/uid/gid in `meta`. A value equal to the mount's default is left out (and
    removed), so that a listing alone answers stat for such objects; with
    Defaults.store_all (-o posix_meta=all), every value is written, as s3fs does."""
    for header, value, default in ((MODE, mode, default_mode(kind, defaults)),
                                   (UID, uid, defaults.uid), (GID, gid, defaults.gid)):
        if value is None:
            continue
        if value == default and not defaults.store_all:
            meta.pop(header, None)
        else:
            meta[header] = str(value)
    return meta


def new_object_meta(kind: str, mode: int, uid: int, gid: int, mtime: float,
                    defaults: "Defaults") -> dict[str, str]:
    """POSIX metadata of an object this mount creates: the values that differ from the
    mount's defaults; no mtime (the object's Last-Modified is its mtime) unless store_all."""
    meta = set_posix({}, kind, defaults, mode=mode, uid=uid, gid=gid)
    if defaults.store_all:
        meta[MTIME] = format_time(mtime)
    return meta


@dataclass
class Defaults:
    uid: int
    gid: int
    file_mode: int = 0o644
    dir_mode: int = 0o755
    force_owner: bool = False  # -o uid=/gid= given: show that owner whatever the metadata says
    store_all: bool = False    # -o posix_meta=all: write mode, uid, gid and mtime on every object


# -- extended attributes ----------------------------------------------------------------------
class XattrError(Exception):
    def __init__(self, errno_name: str, message: str):
        super().__init__(message)
        self.errno_name = errno_name


def header_for_xattr(name: str) -> str:
    """'user.state' -> 'x-amz-meta-state'; ENOTSUP outside user.*, EINVAL for unusable names."""
    if not name.startswith("user."):
        raise XattrError("ENOTSUP", f"only user.* extended attributes are stored: {name!r}")
    short = name[len("user."):].lower()
    if not short or not _TOKEN.match(short):
        raise XattrError("EINVAL", f"{name!r} cannot be an S3 metadata name")
    header = META + short
    if header in POSIX_KEYS:
        raise XattrError("EPERM", f"{name!r} is reserved for the file's mode/owner/times")
    return header


def xattr_names(meta: dict[str, str]) -> list[str]:
    return sorted("user." + k[len(META):] for k in meta if k.startswith(META) and k not in POSIX_KEYS)


def encode_xattr_value(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "=?x-binary?B?" + base64.b64encode(value).decode() + "?="
    if text and text.isascii() and text.isprintable() and text == text.strip() \
            and not text.startswith("=?"):
        return text
    # (empty values too: some servers drop an empty metadata value on PUT)
    return "=?UTF-8?B?" + base64.b64encode(value).decode() + "?="


def decode_xattr_value(stored: str) -> bytes:
    """The exact bytes of a value as stored (ObjectInfo.raw_metadata)."""
    m = _WORD.match(stored)
    if m and m.group(2) in "bB":
        try:
            return base64.b64decode(m.group(3), validate=True)
        except ValueError:
            pass
    return stored.encode("utf-8", "surrogateescape")


def user_meta_size(meta: dict[str, str]) -> int:
    from ..store.objects import encode_meta_value
    return sum(len(k[len(META):].encode()) + len(encode_meta_value(v).encode("utf-8"))
               for k, v in meta.items() if k.startswith(META))
