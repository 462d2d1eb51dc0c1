"""An open file: the handles of one path share an OpenFile, and so one cache entry and the
metadata its next upload carries."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from ..cache import CacheEntry
from .attrs import Attr
from .upload import UploadSession


class OpenFile:
    def __init__(self, path: str, key: str, entry: CacheEntry, attr: Attr, headers: dict[str, str]):
        self.path, self.key = path, key
        self.entry = entry
        # Own copy: the metadata to upload with, changed by writes, chmod, setxattr...
        self.attr = dataclasses.replace(attr, metadata=dict(attr.metadata))
        self.headers = headers      # content headers of the object (Content-Type, ...)
        self.refs = 0
        self.unlinked = False
        self.upload_lock = threading.Lock()
        self.session: UploadSession | None = None
        self.uploading = False
        self.closed = False  # its cache entry was given back: never used again
        self.kernel_store_blocked = False  # opened for writing: never stored in the page cache
        self.kernel_store: KernelStore | None = None  # its store into the page cache, if any
        self.journal_extra()

    def journal_extra(self) -> None:
        """What a recovery after a crash needs to upload this file as we would have."""
        self.entry.extra = {"path": self.path, "headers": dict(self.headers),
                            "metadata": dict(self.attr.metadata), "kind": self.attr.kind,
                            "mode": self.attr.mode, "uid": self.attr.uid, "gid": self.attr.gid}
        self.mtime_explicit = False  # set by utimens; else the upload time stands for mtime

    @property
    def pending(self) -> bool:
        return self.entry.is_dirty or self.session is not None

    def current_attr(self) -> Attr:
        a = self.attr
        # self.headers: the content headers uploads carry (set at create, where a.headers is empty)
        return Attr(kind=a.kind, mode=a.mode, size=self.entry.size, mtime=a.mtime, uid=a.uid,
                    gid=a.gid, etag=self.entry.etag, metadata=dict(a.metadata),
                    headers={**a.headers, **self.headers}, mtime_ns=a.mtime_ns)


@dataclass
class Handle:
    file: OpenFile
    flags: int
    keep_cache: bool = False  # the kernel's page cache for this file is still valid


class KernelStore:
    """How far a filled object has been stored in the kernel's page cache (fs/files.py)."""

    def __init__(self):  # used by the one kernel-store thread only
        self.cursor = 0               # bytes [0, cursor) are stored
        self.fd = -1                  # our dup of the cache file while storing
        self.nodeid: int | None = None
        self.stamp: tuple[int, int] = (0, 0)  # the entry's (writes, size) when it began
        self.over = False             # finished, refused or stopped: nothing more to store

