"""Give a byte range of a cache file back to the file system (fallocate PUNCH_HOLE)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the disk blocks of [offset, offset+length); reads there return zeros."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        if err in (95, 38):  # EOPNOTSUPP, ENOSYS: a file system without holes; zero it instead
            os.pwrite(fd, b"\0" * length, offset)
            return
        raise OSError(err, os.strerror(err))
