"""Open files: handles over shared cache entries; their reads, writes and close (the upload
itself is writeback.py).

All handles of one path share one OpenFile and so one cache file. Data is written to the cache
file; flush (every close) and fsync upload the whole object before they return. A failed upload
returns EIO and leaves the data dirty in the cache, to be tried again by the next flush.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import mimetypes
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from ..store import NotFoundError
from ..store.errors import InvalidRangeError
from .attrs import MTIME, Attr, format_time, new_object_meta
from .errors import FsError
from .openfile import Handle, KernelStore, OpenFile
from .writeback import Writeback

log = logging.getLogger("s3mount.fs")

SMALL_OBJECT = 64 * 1024  # fetched whole at open when a listing is all we know of it


class FileOps(Writeback):
    def __init__(self, *args, kernel_cache=None, **kwargs):
        """`kernel_cache`: where objects fetched whole for a dense random reader are handed to
        the kernel's page cache (fuse_kernel.KernelPageCache: max_bytes, node_of, store,
        quiesce); None keeps them in the cache file only."""
        super().__init__(*args, **kwargs)
        self.kernel_cache = kernel_cache
        self.files: dict[str, OpenFile] = {}
        self.handles: dict[int, Handle] = {}
        self._kernel_etags: dict[str, str | None] = {}  # path -> ETag the page cache holds
        workers = self.store.connection.max_concurrency
        self.fetch_pool = ThreadPoolExecutor(max_workers=max(8, workers), thread_name_prefix="fetch")
        self.upload_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        # Page cache stores run here, one at a time, so that no fill thread pauses for one.
        self.kernel_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel-store")
        self._fh = itertools.count(1)

    # -- hooks for the namespace side -----------------------------------------------------------
    def local_attr(self, path: str) -> Attr | None:
        with self.lock:
            of = self.files.get(path)
        return of.current_attr() if of is not None else None

    def local_children(self, path: str, seen: set[str]) -> list[str]:
        base = path.rstrip("/") + "/"
        with self.lock:
            names = [p[len(base):] for p in self.files if p.startswith(base)]
        return [n for n in names if "/" not in n and n not in seen]

    def _fetcher(self, of: OpenFile):
        entry = of.entry

        def fetch(offset: int, length: int) -> None:
            self.client.get_into_file(self.bucket, entry.key, entry.fd, offset, length,
                                      if_match=entry.etag)
        return fetch

    def _handle(self, fh: int) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            raise FsError(errno.EBADF)
        return h

    def _register(self, of: OpenFile, flags: int) -> int | None:
        """A new handle on `of`; None if its last handle closed meanwhile (the caller must
        look the path up again: that OpenFile's cache entry is given back). Under self.lock, so
        that the check and the reference are one step against release()."""
        if of.closed:
            return None
        of.refs += 1
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            of.kernel_store_blocked = True  # a writer (or its mmap) owns the page cache now
        fh = next(self._fh)
        etag = of.entry.etag
        keep = etag is not None and self._kernel_etags.get(of.path) == etag
        if len(self._kernel_etags) > 100_000:
            self._kernel_etags.clear()
        self._kernel_etags[of.path] = etag
        self.handles[fh] = Handle(of, flags, keep)
        return fh

    def keep_kernel_cache(self, fh: int) -> bool:
        h = self.handles.get(fh)
        return bool(h and h.keep_cache)

    # -- open / create -----------------------------------------------------------------------------
    def _open_attr(self, path: str) -> tuple[Attr, bytes | None]:
        """The attributes to open `path` with, metadata included. A small file known only from
        a listing is fetched whole instead of HEADed: the GET brings its metadata too, so
        opening and reading it costs one request (with the bytes, None otherwise)."""
        attr = self.lookup(path)
        if attr.has_meta or attr.kind != "file" or not 0 < attr.size <= SMALL_OBJECT:
            return self.lookup_full(path), None
        try:
            data, info = self.client.get_bytes(self.bucket, self.key_of(path), 0, SMALL_OBJECT)
        except NotFoundError:
            self.invalidate(path, tree=False)
            self.meta.put(path, None)
            raise FsError(errno.ENOENT) from None
        except InvalidRangeError:  # emptied since the listing: no byte 0 to ask for
            self.invalidate(path, tree=False)
            return self.lookup_full(path), None
        attr = self.attr_from_info("file", info)
        self.meta.put(path, attr)
        # Grown beyond SMALL_OBJECT since the listing: these bytes are not all of it.
        return attr, data if len(data) == info.size else None

    def _preload(self, of: OpenFile, data: bytes) -> None:
        """Put the bytes the open's GET brought into the cache entry. Only a shortcut: if it
        fails (a full cache, say), reads fetch the blocks as usual."""
        entry = of.entry

        def fetch(offset: int, length: int) -> None:
            os.pwrite(entry.fd, memoryview(data)[offset:offset + length], offset)
        try:
            entry.ensure(0, len(data), fetch)
        except Exception as e:  # noqa: BLE001 - the handle is registered: never fail the open now
            log.debug("preloading %s failed, reads will fetch: %s", of.path, e)

    def open(self, path: str, flags: int) -> int:
        writing = flags & (os.O_WRONLY | os.O_RDWR) or flags & os.O_TRUNC
        if writing:
            self.check_writable()
        while True:
            with self.lock:
                of = self.files.get(path)
                fh = self._register(of, flags) if of is not None else None
            if fh is not None:
                break
            attr, data = self._open_attr(path)
            if attr.is_dir:
                raise FsError(errno.EISDIR)
            key = self.key_of(path)
            with self.lock:
                of = self.files.get(path)
                if of is None:
                    entry = self.cache.open(self.bucket, key, attr.etag, attr.size)
                    of = OpenFile(path, key, entry, attr, dict(attr.headers))
                    self.files[path] = of
                fh = self._register(of, flags)
            if fh is not None:
                if data is not None and of.entry.etag == attr.etag:
                    self._preload(of, data)
                break
        if writing and self.kernel_cache is not None:
            # A chunk being stored now was checked before this open: wait until it is in,
            # so that it cannot land on what this writer puts in the page cache (an mmap).
            self.kernel_cache.quiesce()
        if flags & os.O_TRUNC and of.entry.size:
            try:
                of.entry.truncate(0)
            except BaseException:
                self.release(fh)
                raise
            self._touch(of)
        return fh

    def create(self, path: str, mode: int, flags: int, uid: int, gid: int) -> int:
        self.check_writable()
        key = self.key_of(path)
        with self.lock:
            if path in self.files and not self.files[path].unlinked:
                if flags & os.O_EXCL:
                    raise FsError(errno.EEXIST)
                return self.open(path, flags | os.O_TRUNC)
        try:
            existing = self.lookup(path)
        except FsError as e:
            if e.errno != errno.ENOENT:
                raise
            existing = None
        if existing is not None:
            if flags & os.O_EXCL:
                raise FsError(errno.EEXIST)
            if existing.is_dir:
                raise FsError(errno.EISDIR)
            return self.open(path, flags | os.O_TRUNC)
        now = self.now()
        perm = stat.S_IMODE(mode)
        attr = Attr(kind="file", mode=stat.S_IFREG | perm, size=0, mtime=now, uid=uid, gid=gid,
                    metadata=new_object_meta("file", stat.S_IFREG | perm, uid, gid, now,
                                             self.defaults))
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        of = OpenFile(path, key, self.cache.create(self.bucket, key), attr, {"content-type": ctype})
        with self.lock:
            self.files[path] = of
            fh = self._register(of, flags)
        self.invalidate(path, tree=False)
        return fh

    # -- data ----------------------------------------------------------------------------------------
    def read(self, fh: int, size: int, offset: int) -> bytes:
        of = self._handle(fh).file
        return of.entry.read(offset, size, self._fetcher(of), self.fetch_pool)

    def read_fd(self, fh: int, size: int, offset: int) -> tuple[int, int]:
        """Make up to `size` bytes at `offset` valid in the cache file and return (its fd, how
        many bytes there are to read), for a reply that the FUSE layer splices from the file."""
        of = self._handle(fh).file
        on_fill = None if self.kernel_cache is None else functools.partial(self._to_kernel, of)
        return of.entry.read_span(offset, size, self._fetcher(of), self.fetch_pool, on_fill)

    def _to_kernel(self, of: OpenFile, ended: bool) -> None:
        """Part of the object is in the cache file behind a dense random reader, from its start
        on (the fill goes in order): put that part in the kernel's page cache too, so the
        reader's later reads of it never reach the daemon. Called by the fill's threads after
        each run and once when it is over; the store itself runs in kernel_pool. Stops for good
        when the file is opened for writing or written, or its last handle closes
        (docs/SEMANTICS.md)."""
        with self.lock:
            st = of.kernel_store = of.kernel_store or KernelStore()
        self.kernel_pool.submit(self._store_step, of, st, ended)

    def _store_step(self, of: OpenFile, st: KernelStore, ended: bool) -> None:
        """In the one kernel-store thread: store what is new since the last step."""
        try:
            if not st.over:
                self._store_prefix(of, st)
        except Exception as e:  # noqa: BLE001 - a cache of a cache: the fill must go on
            log.debug("page cache store of %s stopped: %s", of.path, e)
            st.over = True
        finally:
            if ended or st.over:
                st.over = True
                if st.fd >= 0:
                    os.close(st.fd)
                    st.fd = -1

    def _store_prefix(self, of: OpenFile, st: KernelStore) -> None:
        entry = of.entry

        def valid(offset: int, length: int) -> bool:
            with self.lock:
                if of.closed or of.entry is not entry or of.kernel_store_blocked:
                    return False
            blocks = range(offset // entry.bs, (offset + length - 1) // entry.bs + 1)
            with entry.lock:
                return ((entry.writes, entry.size) == st.stamp and not entry.is_dirty
                        and not entry.discarded and all(b in entry.present for b in blocks))
        if st.fd < 0:  # the first part: is this file one to store at all?
            with self.lock:
                blocked, path = of.kernel_store_blocked, of.path
            with entry.lock:
                st.stamp = (entry.writes, entry.size)
                if blocked or entry.size > self.kernel_cache.max_bytes or entry.is_dirty \
                        or entry.discarded or entry.fd < 0:
                    st.over = True
                    return
                st.fd = os.dup(entry.fd)  # entry.fd may close while the store reads it
            st.nodeid = self.kernel_cache.node_of(path, lambda fh: self._owns(fh, of, entry))
            if st.nodeid is None:
                st.over = True
                return
        with entry.lock:
            end = min(entry.present_prefix(st.cursor), st.stamp[1])
        if end > st.cursor:
            n = self.kernel_cache.store(st.nodeid, st.fd, st.cursor, end - st.cursor, valid)
            st.cursor += n
            if st.cursor < end:
                st.over = True

    def _owns(self, fh: int, of: OpenFile, entry) -> bool:
        with self.lock:
            h = self.handles.get(fh)
            return h is not None and h.file is of and of.entry is entry

    def write(self, fh: int, data: bytes | memoryview, offset: int) -> int:
        """`data` may be a view of the caller's buffer: it is written to the cache file and not
        kept."""
        h = self._handle(fh)
        of = h.file
        if h.flags & os.O_APPEND:
            offset = of.entry.size
        n = of.entry.write(offset, data, self._fetcher(of))
        self._touch(of)
        self._stream(of, offset + n)
        return n

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        self.check_writable()
        if length < 0:
            raise FsError(errno.EINVAL)
        if fh is not None and fh in self.handles:
            of = self.handles[fh].file
            of.entry.truncate(length)
            self._touch(of)
            return
        fh = self.open(path, os.O_WRONLY)
        try:
            of = self.handles[fh].file
            of.entry.truncate(length)
            self._touch(of)
            self.flush(fh)
        finally:
            self.release(fh)

    def _touch(self, of: OpenFile) -> None:
        now = self.now()
        of.attr.mtime, of.attr.mtime_ns = now, None
        if self.defaults.store_all:
            of.attr.metadata[MTIME] = format_time(now)
        else:  # the upload's Last-Modified is the new mtime
            of.attr.metadata.pop(MTIME, None)
        of.mtime_explicit = False

    # -- close -----------------------------------------------------------------------------------------
    def flush(self, fh: int) -> None:
        self.upload(self._handle(fh).file)

    def fsync(self, fh: int) -> None:
        self.upload(self._handle(fh).file)

    def release(self, fh: int) -> None:
        with self.lock:
            h = self.handles.pop(fh, None)
            if h is None:
                return
            of = h.file
            of.refs -= 1
            last = of.refs == 0
        if not last:
            return
        if of.pending and not of.unlinked:
            try:
                self.upload(of)
            except FsError:
                return  # stays in self.files with its dirty data; the next open/flush retries
        with self.lock:
            # Two releases can get here for one OpenFile (another open and close of the path
            # happened during this one's upload): only the first gives the entry back.
            if of.refs == 0 and not of.closed:
                of.closed = True
                if self.files.get(of.path) is of:
                    del self.files[of.path]
                if of.unlinked:
                    if of.session is not None:
                        of.session.abort()
                    self.cache.discard(of.entry)
                else:
                    self.cache.release(of.entry)

    def flush_all(self) -> list[str]:
        """Upload every dirty file (at unmount); returns the paths that could not be uploaded."""
        with self.lock:
            files = list(self.files.values())
        failed = []
        for of in files:
            try:
                self.upload(of)
            except FsError:
                failed.append(of.path)
        return failed
