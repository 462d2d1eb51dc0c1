"""Shared state of the file system and the read side of the namespace: path <-> key, lookup
(stat) with positive and negative caching, and directory listings.

Paths are absolute ('/a/b'); the mount root maps to the bucket prefix. A name that cannot be a
path component (empty, '.', '..', over 255 bytes) is left out of listings; when a file 'a' and
keys under 'a/' both exist, the file wins, as in s3fs and rclone.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from ..cache import DataCache
from ..store import NotFoundError, ObjectInfo, RemoteStore
from ..store.objects import CONTENT_HEADERS, SSE_HEADERS
from .attrs import Attr, Defaults, attr_from_meta, has_posix_meta
from .errors import FsError
from .metacache import MISSING, MetaCache

log = logging.getLogger("s3mount.fs")

KEPT_HEADERS = frozenset(CONTENT_HEADERS) | frozenset(SSE_HEADERS) | {"x-amz-storage-class"}
NAME_MAX = 255
KEY_MAX = 1024
PREFETCH_LIMIT = 4096  # HEADs started in the background per listing
PREFETCH_STREAMS = 4        # ...of which this many at a time
SAMPLE = 4             # files HEADed per listing to see whether they carry POSIX metadata
SAMPLE_ALL = 32        # ...and in a directory of at most this many files, all of them
# Lookups of names in one directory that each cost a request before that directory is listed
# instead (one page: a listing of up to 1000 names costs about as much as 15 HEADs).
LIST_AFTER_MISSES = 4


def valid_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and \
        len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX


class FsCore:
    def __init__(self, store: RemoteStore, cache: DataCache, bucket: str, prefix: str = "", *,
                 defaults: Defaults, metadata_ttl: float = 5.0, read_only: bool = False,
                 clock: Callable[[], float] = time.time, workers: int = 16):
        self.store = store
        self.client = store.client
        self.cache = cache
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.defaults = defaults
        self.read_only = read_only
        self.clock = clock
        self.meta = MetaCache(metadata_ttl)
        self.lock = threading.RLock()     # guards the open-file and handle tables
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3fs-meta")
        # Background HEADs run a few at a time, in the order a reader will ask for them: 16 at
        # once share the server's CPU so evenly that the first answer comes as late as the last.
        self.prefetch_pool = ThreadPoolExecutor(max_workers=min(workers, PREFETCH_STREAMS),
                                                thread_name_prefix="s3fs-prefetch")
        self._pending: dict[str, tuple[float, Future]] = {}  # path -> (started, HEAD)
        self._pending_lock = threading.Lock()
        self._misses: dict[str, int] = {}           # dir -> lookups that needed a request
        self._dir_lists: dict[str, Future] = {}     # dir -> listing made for lookups, in flight
        self._meta_misses: dict[str, tuple[int, int]] = {}  # dir -> (listing generation, HEADs for metadata)

    # -- names -----------------------------------------------------------------------------------
    def key_of(self, path: str) -> str:
        """'/a/b' -> prefix + 'a/b'; ENAMETOOLONG for a component over 255 bytes or a key over 1024."""
        if path == "/":
            return self.prefix
        rel = path.lstrip("/")
        for part in rel.split("/"):
            if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
                raise FsError(errno.ENAMETOOLONG, f"name over {NAME_MAX} bytes")
        key = self.prefix + rel
        if len(key.encode("utf-8", "surrogateescape")) > KEY_MAX - 1:  # room for a 'dir/' marker
            raise FsError(errno.ENAMETOOLONG, f"S3 key over {KEY_MAX} bytes")
        return key

    def dir_key(self, path: str) -> str:
        return self.prefix if path == "/" else self.key_of(path) + "/"

    def check_writable(self) -> None:
        if self.read_only:
            raise FsError(errno.EROFS)

    # -- attributes --------------------------------------------------------------------------------
    def root_attr(self) -> Attr:
        return Attr(kind="dir", mode=0o040000 | self.defaults.dir_mode, mtime=0.0,
                    uid=self.defaults.uid, gid=self.defaults.gid)

    def attr_from_info(self, kind: str, info: ObjectInfo) -> Attr:
        # The fs works on values as stored, so xattr bytes decode exactly once (attrs.py).
        attr = attr_from_meta(kind, info.size if kind != "dir" else 0, info.mtime, info.etag,
                              info.raw_metadata, self.defaults)
        attr.headers = {k: v for k, v in info.headers.items() if k in KEPT_HEADERS}
        return attr

    def local_attr(self, path: str) -> Attr | None:
        """Hook for open files: their size and times are local until uploaded."""
        return None

    def lookup(self, path: str) -> Attr:
        """stat(path): raises FsError(ENOENT) when nothing is there."""
        if path == "/":
            return self.root_attr()
        local = self.local_attr(path)
        if local is not None:
            return local
        cached = self.meta.get(path)
        if cached is None:
            raise FsError(errno.ENOENT)
        if cached is not MISSING and cached.complete:
            return cached
        if cached is MISSING and self.meta.listed_absent(path):
            raise FsError(errno.ENOENT)  # the parent's fresh listing does not have it
        if cached is MISSING and self._list_for_lookups(self.parent_of(path)):
            cached = self.meta.get(path)
            if cached is None or (cached is MISSING and self.meta.listed_absent(path)):
                raise FsError(errno.ENOENT)
            if cached is not MISSING and cached.complete:
                return cached
        attr = self._stat_prefetched(path)
        self.meta.put(path, attr)
        if attr is None:
            raise FsError(errno.ENOENT)
        return attr

    def _stat_prefetched(self, path: str) -> Attr | None:
        """The background HEAD of `path` if one was started lately, else a HEAD now."""
        with self._pending_lock:
            started, fut = self._pending.pop(path, (0.0, None))
        if fut is not None and time.monotonic() - started <= max(self.meta.ttl, 1.0):
            try:
                return fut.result()
            except Exception:  # noqa: BLE001 - logged by _stat_quiet; try once more here
                pass
        return self._stat_remote(path)

    def lookup_full(self, path: str) -> Attr:
        """lookup() with the object's metadata and content headers, HEADing if a listing
        supplied only the stat fields."""
        attr = self.lookup(path)
        if attr.has_meta or path == "/":
            return attr
        siblings = self._count_meta_miss(path)
        attr = self._stat_prefetched(path)
        # Only now: started first, the background HEADs would take the GIL and the server from
        # this one, which a caller is waiting for (8 ms instead of 1, bench trace).
        self._prefetch(siblings)
        self.meta.put(path, attr)
        if attr is None:
            raise FsError(errno.ENOENT)
        return attr

    def _stat_remote(self, path: str) -> Attr | None:
        key = self.key_of(path)
        try:
            return self.attr_from_info("file", self.client.head(self.bucket, key))
        except NotFoundError:
            pass
        page = self.client.list_page(self.bucket, key + "/", "/", max_keys=1)
        if page.objects and page.objects[0].key == key + "/":
            try:  # a marker: it may hold the directory's mode and xattrs
                return self.attr_from_info("dir", self.client.head(self.bucket, key + "/"))
            except NotFoundError:
                pass
        if page.objects or page.prefixes:
            return Attr(kind="dir", mode=0o040000 | self.defaults.dir_mode,
                        uid=self.defaults.uid, gid=self.defaults.gid,
                        mtime=page.objects[0].mtime if page.objects else 0.0)
        return None

    def _stat_quiet(self, path: str) -> Attr | None:
        try:
            return self._stat_remote(path)
        except Exception as e:  # a background prefetch: the foreground lookup will retry
            log.debug("prefetch of %s failed: %s", path, e)
            raise

    def _list_for_lookups(self, parent: str) -> bool:
        """Count a lookup in `parent` that needs a request; from the LIST_AFTER_MISSES-th on,
        list `parent` (one page) so that its other names need none. True when a fresh listing
        of `parent` is cached now."""
        with self._pending_lock:
            misses = self._misses.get(parent, 0) + 1
            if misses < LIST_AFTER_MISSES:
                if len(self._misses) > 10_000:
                    self._misses.clear()
                self._misses[parent] = misses
                return False
            fut = self._dir_lists.get(parent)
            mine = fut is None
            if mine:
                fut = self._dir_lists[parent] = Future()
        if mine:
            misses = 0  # listed: count afresh once the listing expires
            try:
                page = self.client.list_page(self.bucket, self.dir_key(parent), "/", max_keys=1000)
                if page.next_token is None:  # the whole directory: it answers every lookup
                    self.meta.put_listing(parent, self._list_remote(parent, [page]))
                else:  # too big to list for a few names: keep HEADing, ask again much later
                    misses = -LIST_AFTER_MISSES * 64
            except Exception as e:  # noqa: BLE001 - the lookup goes on with its own HEAD
                log.debug("listing %s for lookups failed: %s", parent, e)
            finally:
                with self._pending_lock:
                    self._dir_lists.pop(parent, None)
                    self._misses[parent] = misses
                fut.set_result(None)  # whatever happened: the waiting lookups go on
        else:
            fut.result()
        return self.meta.has_listing(parent)

    # -- listings ----------------------------------------------------------------------------------
    def list_dir(self, path: str) -> list[str]:
        entries = self.meta.listing(path)
        if entries is None:
            entries = self._list_remote(path)
            self.meta.put_listing(path, entries)
        names = [n for n, _ in entries]
        names.extend(self.local_children(path, set(names)))
        return names

    def local_children(self, path: str, seen: set[str]) -> list[str]:
        """Hook: names of files created here and not uploaded yet."""
        return []

    def _list_remote(self, path: str, pages=None) -> list[tuple[str, Attr]]:
        prefix = self.dir_key(path)
        files: dict[str, Attr] = {}
        dirs: dict[str, Attr] = {}
        skipped = 0
        for page in pages if pages is not None else self.client.list_all(self.bucket, prefix, "/"):
            for obj in page.objects:
                name = obj.key[len(prefix):]
                if name == "":
                    continue  # the directory's own marker
                if not valid_name(name):
                    skipped += 1
                    continue
                files[name] = Attr(kind="file", mode=0o100000 | self.defaults.file_mode,
                                   size=obj.size, mtime=obj.mtime, uid=self.defaults.uid,
                                   gid=self.defaults.gid, etag=obj.etag, complete=False,
                                   has_meta=False)
            for p in page.prefixes:
                name = p[len(prefix):].rstrip("/")
                if not valid_name(name) or p[len(prefix):].count("/") != 1:
                    skipped += 1
                    continue
                dirs[name] = Attr(kind="dir", mode=0o040000 | self.defaults.dir_mode,
                                  uid=self.defaults.uid, gid=self.defaults.gid, complete=False,
                                  has_meta=False)
        if skipped:
            log.info("%s: %d key(s) cannot be shown as paths (empty, '.', '..' or over %d bytes)",
                     path, skipped, NAME_MAX)
        entries = list(files.items()) + [(n, a) for n, a in dirs.items() if n not in files]
        entries.sort(key=lambda e: e[0])
        base = path.rstrip("/")
        sampled = self._sample(base, sorted(files), SAMPLE if len(files) > SAMPLE_ALL else SAMPLE_ALL)
        sampled.update(self._sample(base, sorted(n for n in dirs if n not in files), SAMPLE // 2))
        if any(a is not None and has_posix_meta(a.metadata) for a in sampled.values()):
            # Objects here carry mode/owner/times: each entry's stat needs its own HEAD.
            for name, attr in entries:
                self.meta.put(f"{base}/{name}", self._fullest(f"{base}/{name}", attr, sampled))
            self._prefetch([f"{base}/{n}" for n, _ in entries[:PREFETCH_LIMIT] if n not in sampled])
        else:
            # Plain objects: the listing's size and time are the whole stat answer.
            for name, attr in entries:
                attr.complete = True
                self.meta.put(f"{base}/{name}", self._fullest(f"{base}/{name}", attr, sampled))
        return entries

    def _sample(self, base: str, names: list[str], count: int = SAMPLE) -> dict[str, Attr | None]:
        if not names:
            return {}
        step = max(1, len(names) // count)
        picks = names[::step][:count]
        known = {n: a for n in picks if (a := self._known_full(f"{base}/{n}")) is not None}
        heads = [n for n in picks if n not in known]
        results = self.pool.map(lambda n: self._stat_quiet(f"{base}/{n}"), heads)
        return {**known, **dict(zip(heads, results))}

    def _fullest(self, path: str, listed: Attr, sampled: dict[str, Attr | None]) -> Attr:
        """What to cache for a listed entry: a HEAD's answer (it has the metadata too) when one
        is at hand for the same object, else the listing's."""
        sample = sampled.get(path.rsplit("/", 1)[-1])
        if sample is not None:
            return sample  # HEADed after the listing: the newer answer
        known = self._known_full(path)
        if known is not None and known.kind == listed.kind and known.etag == listed.etag:
            return known
        return listed

    def _known_full(self, path: str) -> Attr | None:
        """The cached attributes of `path` if a HEAD (not a listing) made them."""
        cached = self.meta.get(path)
        return cached if cached is not None and cached is not MISSING and cached.has_meta else None

    def _prefetch(self, paths: list[str]) -> None:
        """Start HEADs for listed entries, so the stat calls that follow a readdir find them ready."""
        if not paths:
            return
        now = time.monotonic()
        with self._pending_lock:
            if len(self._pending) > 4 * PREFETCH_LIMIT:  # results nobody asked for: drop the stale
                horizon = now - max(self.meta.ttl, 1.0)
                for q in [q for q, (t, _) in self._pending.items() if t < horizon]:
                    del self._pending[q]
            for p in paths:
                if p not in self._pending:
                    self._pending[p] = (now, self.prefetch_pool.submit(self._stat_quiet, p))

    def _count_meta_miss(self, path: str) -> list[str]:
        """A HEAD for the metadata (xattrs, content headers) of a listed file. At the second in
        one listed directory, the other listed files to HEAD in the background: a getfattr or
        an open of each file in turn then finds its answer ready."""
        parent = self.parent_of(path)
        generation = self.meta.listing_generation(parent)
        if generation is None:
            return []
        with self._pending_lock:
            seen, count = self._meta_misses.get(parent, (0, 0))
            count = count + 1 if seen == generation else 1
            if len(self._meta_misses) > 10_000:
                self._meta_misses.clear()
            self._meta_misses[parent] = (generation, count)
        entries = (self.meta.listing(parent) if count == 2 else None) or []
        base = parent.rstrip("/")
        return [q for n, a in entries[:PREFETCH_LIMIT]
                if a.kind == "file" and not a.has_meta and (q := f"{base}/{n}") != path
                and self._known_full(q) is None]

    def invalidate(self, *paths: str, tree: bool = True) -> None:
        """Drop what is cached of `paths` (and below them, unless tree=False: files)."""
        for p in paths:
            self.meta.invalidate(p, tree)
            with self._pending_lock:
                self._pending.pop(p, None)
                if tree:
                    below = p.rstrip("/") + "/"
                    for q in [q for q in self._pending if q.startswith(below)]:
                        del self._pending[q]

    def now(self) -> float:
        return self.clock()

    def statfs(self) -> dict:
        blocks = 1 << 40  # 4 PiB in 4 KiB blocks: S3 has no meaningful capacity
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": blocks,
                "f_bavail": blocks, "f_files": 1 << 32, "f_ffree": 1 << 32,
                "f_favail": 1 << 32, "f_namemax": NAME_MAX}

    def parent_of(self, path: str) -> str:
        return os.path.dirname(path.rstrip("/")) or "/"
