"""POSIX semantics over the store and the cache, as plain methods: testable without FUSE."""

from .attrs import Attr, Defaults
from .errors import FsError, to_errno
from .namespace import S3FileSystem

__all__ = ["Attr", "Defaults", "FsError", "S3FileSystem", "to_errno"]
