"""The one table from failures to errno. Anything not in it is EIO, and is logged."""

from __future__ import annotations

import errno
import logging

from ..store import errors as s3e

log = logging.getLogger("s3mount.fs")


class FsError(OSError):
    """A POSIX failure with its errno; what the FUSE layer returns to the caller."""

    def __init__(self, err: int, message: str = ""):
        super().__init__(err, message or errno.errorcode.get(err, str(err)))


_TABLE: list[tuple[type[BaseException], int]] = [
    (s3e.NotFoundError, errno.ENOENT),
    (s3e.NoSuchBucketError, errno.ENOENT),
    (s3e.AccessDeniedError, errno.EACCES),
    (s3e.PreconditionFailedError, errno.ESTALE),   # the object changed under us
    (s3e.ConflictError, errno.EAGAIN),
    (s3e.InvalidKeyError, errno.ENAMETOOLONG),
    (s3e.TransportError, errno.EIO),
    (s3e.ServerError, errno.EIO),
    (s3e.IntegrityError, errno.EIO),
]


def to_errno(exc: BaseException) -> int:
    if isinstance(exc, FsError) or (isinstance(exc, OSError) and exc.errno):
        return exc.errno  # local I/O errors (ENOSPC on the cache disk) pass through as they are
    for cls, err in _TABLE:
        if isinstance(exc, cls):
            return err
    if isinstance(exc, s3e.S3Error) and exc.status == 400 and exc.code == "KeyTooLongError":
        return errno.ENAMETOOLONG
    log.error("unexpected failure, returning EIO: %r", exc, exc_info=not isinstance(exc, s3e.RemoteStoreError))
    return errno.EIO
