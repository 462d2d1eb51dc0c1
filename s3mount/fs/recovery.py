"""Crash recovery: writes a crashed run left dirty in the cache are uploaded by the next mount
if each object is still the version they were made against, and kept and reported otherwise."""

from __future__ import annotations

import logging

from ..store import NotFoundError, RemoteStoreError
from .attrs import Attr
from .errors import FsError
from .files import FileOps, OpenFile

log = logging.getLogger("s3mount.fs")


class _Keep(Exception):
    """A recovered entry that must not be uploaded automatically."""


def recover(fs: FileOps) -> tuple[list[str], list[str]]:
    """Upload the writes a crashed run left in the cache, if each object is still the
    version they were made against; keep and report the others. Returns (done, kept)."""
    done, kept = [], []
    for entry in list(fs.cache.recovered):
        extra = entry.extra
        path = extra.get("path") or ""
        where = f"s3://{entry.bucket}/{entry.key}"
        try:
            if entry.bucket != fs.bucket or not path or fs.key_of(path) != entry.key:
                raise _Keep("it belongs to another bucket or prefix")
            try:
                remote = fs.client.head(fs.bucket, entry.key).etag
            except NotFoundError:
                remote = None
            if remote != entry.etag:
                raise _Keep(f"the object changed in S3 meanwhile (ETag {remote} != {entry.etag})")
            lost = [b for b in entry.unfetchable if b not in entry.present]
            if lost:
                raise _Keep(f"{len(lost)} block(s) had been sent as parts and evicted")
            attr = Attr(kind=extra.get("kind", "file"), mode=extra.get("mode", 0o100644),
                        size=entry.size, uid=extra.get("uid", 0), gid=extra.get("gid", 0),
                        etag=entry.etag, metadata=dict(extra.get("metadata", {})))
            of = OpenFile(path, entry.key, entry, attr, dict(extra.get("headers", {})))
            of.refs = 0
            fs.upload(of)
            fs.cache.recovered.remove(entry)
            entry.refs = 1
            fs.cache.release(entry)  # clean now: kept for reuse like any closed file
            log.warning("recovered %s (%d bytes) written before an unclean shutdown: uploaded",
                        where, entry.size)
            done.append(path)
        except (_Keep, FsError, RemoteStoreError, OSError) as e:
            log.error("unsent writes to %s from before an unclean shutdown are kept in %s: %s",
                      where, entry.path, e)
            kept.append(entry.path)
    return done, kept
