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
from .prefetch import HeadPrefetcher

log = logging.getLogger("s3mount.fs")

KEPT_HEADERS = frozenset(CONTENT_HEADERS) | frozenset(SSE_HEADERS) | {"x-amz-storage-class"}
NAME_MAX = 255
KEY_MAX = 1024
PREFETCH_LIMIT = 4096  # HEADs started in the background per listing
PREFETCH_STREAMS = 4        # ...of which this many at a time
SAMPLE = 4             # files HEADed per listing to see whether they carry POSIX metadata
SAMPLE_ALL = 32        # ...and in a directory of at most this many files, all of them
# Lookups of names in one directory that each cost a request before that directory is listed
# (one page: a listing of up to 1000 names costs about as much as 15 HEADs) in the background,
# and before lookups wait for that listing instead of HEADing.
LIST_AHEAD_MISSES = 2
# A listing made for lookups where files' metadata was asked for twice within this many seconds
# HEADs every listed file in the background: a getfattr or open of each in turn is under way.
META_WANTED_WINDOW = 10.0
LIST_AFTER_MISSES = 4


def _headed(cached) -> bool:
    """A cached answer from a HEAD (not a listing, not "unknown", not "absent")."""
    return cached is not None and cached is not MISSING and cached.has_meta


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
        self.prefetcher = HeadPrefetcher(self._prefetch_one, min(workers, PREFETCH_STREAMS),
                                         lambda: max(self.meta.ttl, 1.0), 4 * PREFETCH_LIMIT)
        # Tasks wait only on pools after theirs (list -> meta -> side), so none can deadlock.
        self.list_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="s3fs-list")
        self.side_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3fs-side")
        self._pending_lock = threading.Lock()     # guards the counters below
        self._misses: dict[str, int] = {}           # dir -> lookups that needed a request
        self._dir_lists: dict[str, Future] = {}     # dir -> listing made for lookups, in flight
        self._meta_prefetched: dict[str, int] = {}  # dir -> listing generation HEADed ahead
        self._meta_wanted: dict[str, tuple[int, float]] = {}  # dir -> (calls needing metadata, last)

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
        attr = self._stat_prefetched(path, None if cached is MISSING else cached.kind)
        self.meta.put(path, attr)
        if attr is None:
            raise FsError(errno.ENOENT)
        return attr

    def _stat_prefetched(self, path: str, kind: str | None) -> Attr | None:
        """The background HEAD of `path` if one was started lately, else a HEAD now."""
        fut = self.prefetcher.take(path)
        if fut is not None:
            try:
                return fut.result()
            except Exception:  # noqa: BLE001 - logged by _stat_quiet; try once more here
                pass
        with self.prefetcher.own_head(path):
            return self._stat_remote(path, kind)

    def lookup_full(self, path: str) -> Attr:
        """lookup() with the object's metadata and content headers, HEADing if a listing
        supplied only the stat fields."""
        attr = self.lookup(path)
        if path == "/":
            return attr
        self._want_meta(self.parent_of(path))
        if attr.has_meta:
            return attr
        siblings = self._count_meta_miss(path)
        attr = self._stat_prefetched(path, attr.kind)
        # Only now: started first, the background HEADs would take the GIL and the server from
        # this one, which a caller is waiting for (8 ms instead of 1, bench trace).
        self.prefetcher.start(siblings)
        self.meta.put(path, attr)
        if attr is None:
            raise FsError(errno.ENOENT)
        return attr

    def _stat_remote(self, path: str, kind: str | None = None) -> Attr | None:
        """HEAD `path` as a file, else as a directory (`kind` "dir": a listing said it is one).
        A directory's marker is HEADed while its one-key listing runs: a directory costs two
        round trips (HEAD file, HEAD marker), not three (HEAD, LIST, HEAD marker), and a name
        that is nothing or an implied directory still costs two."""
        key = self.key_of(path)
        if kind != "dir":
            try:
                return self.attr_from_info("file", self.client.head(self.bucket, key))
            except NotFoundError:
                pass
        listing = self.side_pool.submit(self.client.list_page, self.bucket, key + "/", "/", max_keys=1)
        found = self._head_marker(key)
        if found is not None:
            listing.cancel()
            return found
        page = listing.result()
        if page.objects and page.objects[0].key == key + "/":
            # a marker made since the HEAD above: it may hold the directory's mode and xattrs
            if (found := self._head_marker(key)) is not None:
                return found
        if page.objects or page.prefixes:
            return Attr(kind="dir", mode=0o040000 | self.defaults.dir_mode,
                        uid=self.defaults.uid, gid=self.defaults.gid,
                        mtime=page.objects[0].mtime if page.objects else 0.0)
        return None

    def _head_marker(self, key: str) -> Attr | None:
        try:
            return self.attr_from_info("dir", self.client.head(self.bucket, key + "/"))
        except NotFoundError:
            return None

    def _stat_quiet(self, path: str, kind: str) -> Attr | None:
        try:
            return self._stat_remote(path, kind)
        except Exception as e:  # a background prefetch: the foreground lookup will retry
            log.debug("prefetch of %s failed: %s", path, e)
            raise

    def _list_for_lookups(self, parent: str) -> bool:
        """Count a lookup in `parent` that needs a request. At the LIST_AHEAD_MISSES-th, list
        `parent` (one page) in the background, so that its other names need none; lookups go
        on with their own HEADs while it runs, from the LIST_AFTER_MISSES-th on they wait for
        it, unless files' metadata is wanted there (_meta_is_wanted): each lookup then HEADs
        its file anyway, and waiting would only idle. True when a fresh listing of `parent` is
        cached now."""
        with self._pending_lock:
            misses = self._misses.get(parent, 0) + 1
            if len(self._misses) > 10_000:
                self._misses.clear()
            self._misses[parent] = misses
            fut = self._dir_lists.get(parent)
            if fut is None and misses >= LIST_AHEAD_MISSES:
                fut = self._dir_lists[parent] = self.list_pool.submit(self._list_ahead, parent)
        if fut is None or misses < LIST_AFTER_MISSES or self._meta_is_wanted(parent):
            return False
        fut.result()
        return self.meta.has_listing(parent)

    def _list_ahead(self, parent: str) -> None:
        misses = 0  # listed: count afresh once the listing expires
        try:
            page = self.client.list_page(self.bucket, self.dir_key(parent), "/", max_keys=1000)
            if page.next_token is None:  # the whole directory: it answers every lookup
                self.meta.put_listing(parent, self._list_remote(parent, [page]))
            else:  # too big to list for a few names: keep HEADing, ask again much later
                misses = -LIST_AFTER_MISSES * 64
        except Exception as e:  # noqa: BLE001 - the lookups go on with their own HEADs
            log.debug("listing %s for lookups failed: %s", parent, e)
        finally:
            with self._pending_lock:
                self._dir_lists.pop(parent, None)
                self._misses[parent] = misses

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
        paths = [f"{base}/{n}" for n, _ in entries]
        # Files HEADed lately (the lookups before a listing made for them) answer the sample's
        # question already when one carries POSIX metadata: no sample then.
        known = [c for (_, a), c in zip(entries, self.meta.get_many(paths))
                 if a.kind == "file" and _headed(c)] if pages is not None else []
        sampled: dict[str, Attr | None] = {}
        every_head = pages is not None and self._meta_is_wanted(path)
        if not every_head and not any(has_posix_meta(a.metadata) for a in known):
            sampled = self._sample(base, sorted(files), "file",
                                   SAMPLE if len(files) > SAMPLE_ALL else SAMPLE_ALL)
            sampled.update(self._sample(base, sorted(n for n in dirs if n not in files), "dir",
                                        SAMPLE // 2))
        # Objects with mode/owner/times (or whose metadata is wanted): each entry's stat waits
        # for its own HEAD, started now. Plain objects: the listing is the whole stat answer.
        posix = every_head or any(a is not None and has_posix_meta(a.metadata)
                                  for a in (*sampled.values(), *known))
        for _, attr in entries:
            attr.complete = not posix
        full = self.meta.put_listed([(p, a, sampled.get(n)) for p, (n, a) in zip(paths, entries)])
        # Asked again now: the sample took a round trip, in which the caller may have read a
        # file's metadata a second time. Decided before it only, a getxattr loop whose own HEADs
        # covered its first files would not see the rest HEADed ahead (a flaky test's race).
        if posix or (pages is not None and self._meta_is_wanted(path)):
            self.prefetcher.start([(p, a.kind) for p, (_, a), f in zip(paths, entries, full)
                                   if not f][:PREFETCH_LIMIT])
        return entries

    def _sample(self, base: str, names: list[str], kind: str,
                count: int = SAMPLE) -> dict[str, Attr | None]:
        if not names:
            return {}
        step = max(1, len(names) // count)
        picks = names[::step][:count]
        known = {n: a for n in picks if (a := self._known_full(f"{base}/{n}")) is not None}
        heads = [n for n in picks if n not in known]
        results = self.pool.map(lambda n: self._stat_quiet(f"{base}/{n}", kind), heads)
        return {**known, **dict(zip(heads, results))}

    def _known_full(self, path: str) -> Attr | None:
        """The cached attributes of `path` if a HEAD (not a listing) made them."""
        cached = self.meta.get(path)
        return cached if _headed(cached) else None

    def _prefetch_one(self, path: str, kind: str) -> Attr | None:
        # A lookup that ran before the listing landed may have HEADed it meanwhile.
        return self._known_full(path) or self._stat_quiet(path, kind)

    def _want_meta(self, parent: str) -> None:
        """Count a call that needed a file's metadata in `parent` (getxattr, open)."""
        now = time.monotonic()
        with self._pending_lock:
            count, last = self._meta_wanted.get(parent, (0, 0.0))
            if len(self._meta_wanted) > 10_000:
                self._meta_wanted.clear()
            self._meta_wanted[parent] = (count + 1 if now - last <= META_WANTED_WINDOW else 1, now)

    def _meta_is_wanted(self, parent: str) -> bool:
        count, last = self._meta_wanted.get(parent, (0, 0.0))
        return count >= 2 and time.monotonic() - last <= META_WANTED_WINDOW

    def _count_meta_miss(self, path: str) -> list[tuple[str, str]]:
        """A HEAD for the metadata (xattrs, content headers) of a listed file. Once metadata
        is wanted in this directory (_meta_is_wanted), the other listed files to HEAD in the
        background, once per listing: a getfattr or open of each file in turn then finds its
        answer ready."""
        parent = self.parent_of(path)
        generation = self.meta.listing_generation(parent)
        if generation is None:
            return []
        with self._pending_lock:
            if self._meta_prefetched.get(parent) == generation or not self._meta_is_wanted(parent):
                return []
            if len(self._meta_prefetched) > 10_000:
                self._meta_prefetched.clear()
            self._meta_prefetched[parent] = generation
        entries = self.meta.listing(parent) or []
        base = parent.rstrip("/")
        return [(q, "file") for n, a in entries[:PREFETCH_LIMIT]
                if a.kind == "file" and not a.has_meta and (q := f"{base}/{n}") != path
                and self._known_full(q) is None]

    def invalidate(self, *paths: str, tree: bool = True) -> None:
        """Drop what is cached of `paths` (and below them, unless tree=False: files)."""
        for p in paths:
            self.meta.invalidate(p, tree)
            self.prefetcher.drop(p, tree)

    def now(self) -> float:
        return self.clock()

    def statfs(self) -> dict:
        blocks = 1 << 40  # 4 PiB in 4 KiB blocks: S3 has no meaningful capacity
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": blocks,
                "f_bavail": blocks, "f_files": 1 << 32, "f_ffree": 1 << 32,
                "f_favail": 1 << 32, "f_namemax": NAME_MAX}

    def parent_of(self, path: str) -> str:
        return os.path.dirname(path.rstrip("/")) or "/"
