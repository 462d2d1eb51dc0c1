"""Changes to names and attributes: unlink, mkdir, rmdir, rename, symlink, chmod/chown/utimens
and user.* extended attributes. Every change reaches S3 before the call returns, except on a file
open with unsaved data, whose new attributes travel with its next upload.
"""

from __future__ import annotations

import errno
import logging
import stat

from ..store import NotFoundError, ObjectInfo, PreconditionFailedError
from .attrs import (GID, META, MODE, MTIME, UID, USER_META_LIMIT, Attr, XattrError, attr_from_meta,
                    decode_xattr_value, encode_xattr_value, format_time, header_for_xattr,
                    new_object_meta, set_posix, user_meta_size, xattr_names)
from .errors import FsError
from .files import FileOps, OpenFile

log = logging.getLogger("s3mount.fs")

XATTR_CREATE, XATTR_REPLACE = 1, 2
DIR_CONTENT_TYPE = "application/x-directory"


def _kept_headers(info: ObjectInfo) -> dict[str, str]:
    """Content-Type and metadata, for recreating or multipart-copying an object."""
    return {**{k: v for k, v in info.headers.items() if k == "content-type"}, **info.raw_metadata}


class S3FileSystem(FileOps):
    """POSIX semantics over a bucket (or a prefix of it), as plain methods raising FsError."""

    # -- removing ------------------------------------------------------------------------------
    def unlink(self, path: str) -> None:
        self.check_writable()
        attr = self.lookup(path)
        if attr.is_dir:
            raise FsError(errno.EISDIR)
        key = self.key_of(path)
        with self.lock:
            of = self.files.get(path)
        if of is not None:  # open handles keep reading: bring in what is not cached yet
            of.entry.fill(self._fetcher(of), self.fetch_pool)
        self.client.delete(self.bucket, key)
        with self.lock:
            if of is not None and self.files.get(path) is of:
                del self.files[path]
            if of is not None:
                of.unlinked = True  # nothing uploads it again
        self.cache.forget(self.bucket, key)
        self.invalidate(path, tree=False)
        self.meta.listing_update(path, None)
        self.meta.put(path, None)

    def _dir_children(self, path: str, limit: int = 2) -> list[str]:
        prefix = self.dir_key(path)
        page = self.client.list_page(self.bucket, prefix, "/", max_keys=limit)
        names = [o.key for o in page.objects if o.key != prefix] + page.prefixes
        names += self.local_children(path, set())
        return names

    def rmdir(self, path: str) -> None:
        self.check_writable()
        if path == "/":
            raise FsError(errno.EBUSY)
        if not self.lookup(path).is_dir:
            raise FsError(errno.ENOTDIR)
        if self._dir_children(path):
            raise FsError(errno.ENOTEMPTY)
        self.client.delete(self.bucket, self.dir_key(path))
        self.invalidate(path)
        self.meta.listing_update(path, None)
        self.meta.put(path, None)

    # -- creating ------------------------------------------------------------------------------
    def _exists(self, path: str) -> Attr | None:
        try:
            return self.lookup(path)
        except FsError as e:
            if e.errno == errno.ENOENT:
                return None
            raise

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None:
        self.check_writable()
        key = self.dir_key(path)
        if self._exists(path) is not None:
            raise FsError(errno.EEXIST)
        meta = new_object_meta("dir", stat.S_IFDIR | stat.S_IMODE(mode), uid, gid, self.now(),
                               self.defaults)
        etag = self.client.put(self.bucket, key, b"", {"content-type": DIR_CONTENT_TYPE, **meta})
        self.invalidate(path)
        self._put_made(path, "dir", 0, etag, meta, {"content-type": DIR_CONTENT_TYPE})
        self.meta.put_listing(path, [])  # new and empty: lookups inside need no request

    def _put_made(self, path: str, kind: str, size: int, etag: str, meta: dict[str, str],
                  headers: dict[str, str]) -> None:
        """Cache what a HEAD of the object just PUT would answer, and add it to the parent's
        cached listing: libfuse stats a new directory or link for the kernel's reply, which
        cost a HEAD as a file, a HEAD of the marker and a one-key listing per mkdir before,
        and the parent's listing went with it."""
        attr = attr_from_meta(kind, size, self.now(), etag or None, meta, self.defaults)
        attr.headers = headers
        self.meta.put(path, attr)
        self.meta.listing_update(path, attr)

    def symlink(self, target: str, path: str, uid: int, gid: int) -> None:
        self.check_writable()
        key = self.key_of(path)
        if self._exists(path) is not None:
            raise FsError(errno.EEXIST)
        meta = new_object_meta("link", stat.S_IFLNK | 0o777, uid, gid, self.now(), self.defaults)
        body = target.encode("utf-8", "surrogateescape")
        etag = self.client.put(self.bucket, key, body, meta)
        self.invalidate(path)
        self._put_made(path, "file", len(body), etag, meta, {})

    def readlink(self, path: str) -> str:
        attr = self.lookup_full(path)
        if attr.kind != "link":
            raise FsError(errno.EINVAL)
        data, _ = self.client.get_bytes(self.bucket, self.key_of(path))
        return data.decode("utf-8", "surrogateescape")

    # -- rename ----------------------------------------------------------------------------------
    def rename(self, old: str, new: str) -> None:
        self.check_writable()
        if old == new:
            return
        if new.startswith(old.rstrip("/") + "/"):
            raise FsError(errno.EINVAL)  # a directory into itself
        src = self.lookup_full(old)
        dst = self._exists(new)
        if src.is_dir:
            if dst is not None and not dst.is_dir:
                raise FsError(errno.ENOTDIR)
            if dst is not None and self._dir_children(new):
                raise FsError(errno.ENOTEMPTY)
            self._rename_dir(old, new)
        else:
            if dst is not None and dst.is_dir:
                raise FsError(errno.EISDIR)
            self._rename_file(old, new, src)
        self.invalidate(old, new)
        self.meta.drop_listing(self.parent_of(old))
        self.meta.drop_listing(self.parent_of(new))
        self.meta.put(old, None)

    def _rename_file(self, old: str, new: str, src: Attr) -> None:
        old_key, new_key = self.key_of(old), self.key_of(new)
        with self.lock:
            of = self.files.get(old)
        if of is not None:
            self.upload(of)  # a rename publishes what was written so far
            src = of.current_attr()
        if src.etag is None:  # created here, empty, never uploaded: nothing remote to move
            pass
        else:
            new_etag = self.store.transfer.copy(self.bucket, old_key, self.bucket, new_key,
                                                src.size, self._copy_headers(src),
                                                replace_metadata=False, if_match=src.etag)
            self.client.delete(self.bucket, old_key)
            if of is not None and new_etag:
                of.entry.etag = of.attr.etag = new_etag  # later block fetches come from the copy
        self.cache.forget(self.bucket, old_key)
        self._rekey(old, new)

    def _copy_headers(self, attr: Attr) -> dict[str, str]:
        """Headers for a multipart copy, which cannot take them from the source implicitly."""
        return {**attr.headers, **attr.metadata}

    def _rename_dir(self, old: str, new: str) -> None:
        old_prefix, new_prefix = self.dir_key(old), self.dir_key(new)
        with self.lock:
            dirty = [of for p, of in self.files.items() if p.startswith(old.rstrip("/") + "/")]
        for of in dirty:
            self.upload(of)
        objects = [o for page in self.client.list_all(self.bucket, old_prefix, None)
                   for o in page.objects]

        def move(obj) -> None:
            target = new_prefix + obj.key[len(old_prefix):]
            if obj.key.endswith("/") and obj.size == 0:
                # Directory markers: some servers cannot copy them; recreate with their metadata.
                try:
                    info = self.client.head(self.bucket, obj.key)
                    headers = _kept_headers(info)
                except NotFoundError:
                    headers = {"content-type": DIR_CONTENT_TYPE}
                self.client.put(self.bucket, target, b"", headers)
            elif obj.size <= self.store.transfer.max_single_copy:
                self.client.copy(self.bucket, obj.key, self.bucket, target, None,
                                 replace_metadata=False, if_match=obj.etag)
            else:
                self._copy_large(obj.key, target, obj.size)
        list(self.pool.map(move, objects))
        if not objects:  # an empty directory the server keeps without a marker object
            self.client.put(self.bucket, new_prefix, b"", {"content-type": DIR_CONTENT_TYPE})
        list(self.pool.map(lambda o: self.client.delete(self.bucket, o.key), objects))
        self.client.delete(self.bucket, old_prefix)  # servers that keep folders drop it now
        with self.lock:
            moved = [p for p in self.files if p == old or p.startswith(old.rstrip("/") + "/")]
        for p in moved:
            self._rekey(p, new + p[len(old):])

    def _copy_large(self, src_key: str, dst_key: str, size: int) -> None:
        info = self.client.head(self.bucket, src_key)
        headers = _kept_headers(info)
        self.store.transfer.copy(self.bucket, src_key, self.bucket, dst_key, size, headers,
                                 replace_metadata=True, if_match=info.etag)

    def _rekey(self, old: str, new: str) -> None:
        with self.lock:
            of = self.files.pop(old, None)
            if of is None:
                return
            replaced = self.files.pop(new, None)
            if replaced is not None:
                replaced.unlinked = True
            of.path, of.key = new, self.key_of(new)
            of.entry.key = of.key
            self.files[new] = of

    # -- attributes ------------------------------------------------------------------------------
    def _update_meta(self, path: str, change) -> None:
        """Apply `change(metadata) -> metadata` to the object's x-amz-meta-* and store it."""
        self.check_writable()
        with self.lock:
            of: OpenFile | None = self.files.get(path)
        if of is not None and (of.pending or of.attr.etag is None):
            new = change(dict(of.attr.metadata))
            self._check_size(new)
            of.attr.metadata = new
            self._apply_posix(of.attr, new)
            of.journal_extra()
            self.cache.journal(of.entry)
            return
        attr = self.lookup_full(path)
        if path == "/":
            raise FsError(errno.EPERM)
        key = self.dir_key(path) if attr.is_dir else self.key_of(path)
        if not attr.is_dir and attr.etag:
            info = self._replace_file_meta(key, attr, change)
            if of is not None:
                of.attr.metadata = dict(info.raw_metadata)
                self._apply_posix(of.attr, of.attr.metadata)
                of.entry.etag = of.attr.etag = info.etag
            self.invalidate(path)
            return
        try:
            info = self.client.head(self.bucket, key)
        except NotFoundError:
            if not attr.is_dir:
                raise
            info = None  # an implicit directory: give it a marker to hold the metadata
        new = change(dict(info.raw_metadata if info else {}))
        self._check_size(new)
        if info is None or (attr.is_dir and info.size == 0):
            headers = {"content-type": DIR_CONTENT_TYPE, **new}
            self.client.put(self.bucket, key, b"", headers,
                            if_match=info.etag if info else None)
            if attr.is_dir and new and not self.client.head(self.bucket, key).metadata:
                raise FsError(errno.ENOTSUP, "this server keeps no metadata on directory markers")
        else:
            info = self.store.replace_metadata(self.bucket, key, new, info=info)
        if of is not None:
            of.attr.metadata = new
            self._apply_posix(of.attr, new)
            if info is not None and info.etag:
                of.entry.etag = of.attr.etag = info.etag
        self.invalidate(path)

    def _replace_file_meta(self, key: str, attr: Attr, change) -> ObjectInfo:
        """One CopyObject, conditional on the ETag we know; if the object changed since, read
        it again and apply the change to what is there now."""
        info = ObjectInfo(key=key, size=attr.size, etag=attr.etag, mtime=attr.mtime,
                          headers=dict(attr.headers), raw_metadata=dict(attr.metadata))
        for attempt in (1, 2):
            new = change(dict(info.raw_metadata))
            self._check_size(new)
            try:
                return self.store.replace_metadata(self.bucket, key, new, info=info)
            except PreconditionFailedError:
                if attempt == 2:
                    raise
                info = self.client.head(self.bucket, key)
        raise AssertionError("unreachable")

    def _apply_posix(self, attr: Attr, meta: dict[str, str]) -> None:
        fresh = self.attr_from_info_meta(attr, meta)
        attr.mode, attr.uid, attr.gid = fresh.mode, fresh.uid, fresh.gid
        attr.mtime, attr.mtime_ns = fresh.mtime, fresh.mtime_ns

    def attr_from_info_meta(self, attr: Attr, meta: dict[str, str]) -> Attr:
        return attr_from_meta(attr.kind, attr.size, attr.mtime, attr.etag, meta, self.defaults)

    @staticmethod
    def _check_size(meta: dict[str, str]) -> None:
        if user_meta_size(meta) > USER_META_LIMIT:
            raise FsError(errno.E2BIG, f"user metadata over S3's {USER_META_LIMIT} bytes")

    def _posix_change(self, path: str, **values) -> None:
        attr = self.lookup_full(path)

        def change(meta: dict[str, str]) -> dict[str, str]:
            if self.defaults.store_all:
                meta.setdefault(MODE, str(attr.mode))
                meta.setdefault(UID, str(attr.uid))
                meta.setdefault(GID, str(attr.gid))
                meta.setdefault(MTIME, format_time(attr.st_mtime_ns))
            mode = (stat.S_IFMT(attr.mode) | stat.S_IMODE(values["mode"])
                    if "mode" in values else None)
            uid, gid = values.get("uid", -1), values.get("gid", -1)
            set_posix(meta, attr.kind, self.defaults, mode=mode,
                      uid=None if uid == -1 else uid, gid=None if gid == -1 else gid)
            if "mtime" in values:
                meta[MTIME] = format_time(values["mtime"])
            elif attr.kind != "dir":
                # The copy gives the object a new Last-Modified: keep the mtime it shows now.
                meta.setdefault(MTIME, format_time(attr.st_mtime_ns))
            return meta
        if "mtime" in values:
            with self.lock:
                of = self.files.get(path)
            if of is not None:
                of.mtime_explicit = True
        self._update_meta(path, change)

    def chmod(self, path: str, mode: int) -> None:
        self._posix_change(path, mode=mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._posix_change(path, uid=uid, gid=gid)

    def utimens(self, path: str, mtime_ns: int | None) -> None:
        self._posix_change(path, mtime=self.now() if mtime_ns is None else int(mtime_ns))

    # -- extended attributes ---------------------------------------------------------------------
    def getxattr(self, path: str, name: str) -> bytes:
        header = self._xattr_header(name)
        value = self.lookup_full(path).metadata.get(header)
        if value is None:
            raise FsError(errno.ENODATA)
        return decode_xattr_value(value)

    def listxattr(self, path: str) -> list[str]:
        return xattr_names(self.lookup_full(path).metadata)

    def setxattr(self, path: str, name: str, value: bytes, flags: int) -> None:
        header = self._xattr_header(name)
        encoded = encode_xattr_value(value)

        def change(meta: dict[str, str]) -> dict[str, str]:
            if flags & XATTR_CREATE and header in meta:
                raise FsError(errno.EEXIST)
            if flags & XATTR_REPLACE and header not in meta:
                raise FsError(errno.ENODATA)
            meta[header] = encoded
            return meta
        self._update_meta(path, change)

    def removexattr(self, path: str, name: str) -> None:
        header = self._xattr_header(name)

        def change(meta: dict[str, str]) -> dict[str, str]:
            if header not in meta:
                raise FsError(errno.ENODATA)
            del meta[header]
            return meta
        self._update_meta(path, change)

    @staticmethod
    def _xattr_header(name: str) -> str:
        try:
            return header_for_xattr(name)
        except XattrError as e:
            raise FsError(getattr(errno, e.errno_name), str(e)) from None


__all__ = ["S3FileSystem", "META"]
