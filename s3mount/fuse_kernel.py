"""What the daemon tells the kernel's FUSE side beyond replies: the ctypes shapes of libfuse's
buffers (replies spliced from cache files use them too), and the page cache store of objects
fetched whole for a dense random reader (KernelPageCache).

No S3 and no cache logic: the fs layer decides what to store and vouches for the bytes.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from typing import Callable

import mfusepy

log = logging.getLogger("s3mount.fuse")


class Buf(ctypes.Structure):  # struct fuse_buf (fuse_common.h)
    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p),
                ("fd", ctypes.c_int), ("pos", ctypes.c_int64)]


class BufVec(ctypes.Structure):  # struct fuse_bufvec with its one inline fuse_buf
    _fields_ = [("count", ctypes.c_size_t), ("idx", ctypes.c_size_t), ("off", ctypes.c_size_t),
                ("buf", Buf)]


FD_SEEK_RETRY = (1 << 1) | (1 << 2) | (1 << 3)  # FUSE_BUF_IS_FD | FD_SEEK | FD_RETRY
_libc = ctypes.CDLL(None)
libc_malloc = _libc.malloc
libc_malloc.restype = ctypes.c_void_p
libc_malloc.argtypes = [ctypes.c_size_t]


class KernelPageCache:
    """Puts a cache file's bytes into the kernel's page cache of the mounted file
    (FUSE_NOTIFY_STORE), so that later reads of them never reach the daemon.

    For objects the fs has fetched whole behind a dense random reader: a 4 KiB read that
    reaches the daemon costs 45-60 us here (context switches between the reader, the kernel and
    a libfuse thread on 2 vCPUs; bench/README.md), one the page cache serves in about 1 us.
    libfuse 3 only. The fs decides what to store and vouches for the bytes (`owns`, `valid`)."""

    CHUNK = (1 << 20) - (16 << 10)  # with its header it fits a 1 MiB pipe: spliced, not copied

    def __init__(self, mountpoint: str, max_bytes: int):
        self.mountpoint = os.path.abspath(mountpoint)
        self.max_bytes = max_bytes  # larger objects are left to the kernel's own caching
        self._session = None
        self._store = self._inval = None
        if mfusepy.fuse_version_major >= 3:
            lib = mfusepy._libfuse
            self._store = getattr(lib, "fuse_lowlevel_notify_store", None)
            self._inval = getattr(lib, "fuse_lowlevel_notify_inval_inode", None)
        if self._store is not None and self._inval is not None:
            self._store.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64,
                                    ctypes.POINTER(BufVec), ctypes.c_int]
            self._store.restype = ctypes.c_int
            self._inval.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64,
                                    ctypes.c_int64]
            self._inval.restype = ctypes.c_int
        else:
            self._store = None
        self.stored_bytes = 0
        self._lock = threading.Lock()        # one open through the mount at a time
        self._chunk_lock = threading.Lock()  # held around each call into the session
        self._opener = -1                    # native thread id of the store opening a file
        self._own_opens: dict[str, int] = {}

    def attach(self) -> None:
        """Called in FUSE init, where libfuse's context names the session."""
        if self._store is None:
            return
        get_session = mfusepy._libfuse.fuse_get_session
        get_session.argtypes, get_session.restype = [ctypes.c_void_p], ctypes.c_void_p
        self._session = get_session(mfusepy._libfuse.fuse_get_context().contents.fuse)

    def detach(self) -> None:
        """Called in FUSE destroy: no call into the session may follow (libfuse frees it)."""
        with self._chunk_lock:
            self._session = None

    def quiesce(self, timeout: float = 1.0) -> None:
        """Return once no chunk is being stored (the next one checks validity first). Bounded:
        a chunk can wait on page locks of reads that libfuse workers serve, and the caller is
        one of them; a chunk takes about a millisecond."""
        if self._chunk_lock.acquire(timeout=timeout):
            self._chunk_lock.release()

    @property
    def opening(self) -> bool:
        """A store is opening its file through the mount right now."""
        return self._opener != -1

    def opened(self, path: str, fh: int, pid: int) -> None:
        """An open made while `opening`: the store's own is told apart by its thread id
        (FUSE passes the caller's thread id as the pid)."""
        if pid == self._opener:
            self._own_opens[path] = fh

    def node_of(self, path: str, owns: Callable[[int], bool]) -> int | None:
        """The node id FUSE knows `path` by, found by opening it through the mount (fstat
        gives it as st_ino), with proof from the fs that this open is of the file to store:
        the handle (fh) our open callback gave it. None if it cannot be had."""
        if self._session is None:
            return None
        with self._lock:  # one opener at a time: its thread id tells its open apart
            self._opener = threading.get_native_id()
            try:
                fd = os.open(self.mountpoint + path, os.O_RDONLY)
            except OSError as e:
                log.debug("page cache store of %s: open failed: %s", path, e)
                return None
            finally:
                self._opener = -1
            try:
                fh = self._own_opens.pop(path, None)
                nodeid = os.fstat(fd).st_ino
                return nodeid if fh is not None and owns(fh) else None
            finally:
                os.close(fd)  # the inode stays: the reader that made us store it holds it open

    def store(self, nodeid: int, fd: int, offset: int, length: int,
              valid: Callable[[int, int], bool]) -> int:
        """Store bytes [offset, offset+length) of `fd` (the cache file; offset a page
        boundary) as that range of node `nodeid`'s page cache; returns the bytes stored.
        `valid(offset, length)` is asked before and after each chunk: a chunk that turns
        invalid meanwhile (a write, a close) is invalidated in the kernel again, so no stale
        page outlives the change."""
        done = 0
        vec = BufVec()
        while done < length:
            n = min(self.CHUNK, length - done)
            pos = offset + done
            with self._chunk_lock:
                if self._session is None or not valid(pos, n):
                    break
                vec.count, vec.idx, vec.off = 1, 0, 0  # libfuse advances them as it copies
                vec.buf.size, vec.buf.flags, vec.buf.mem = n, FD_SEEK_RETRY, None
                vec.buf.fd, vec.buf.pos = fd, pos
                err = self._store(self._session, nodeid, pos, ctypes.byref(vec), 0)
                if not err and not valid(pos, n):
                    err = self._inval(self._session, nodeid, pos, n) or -errno.ESTALE
            if err:
                log.debug("page cache store of node %d stopped at %d: %s", nodeid, pos,
                          os.strerror(-err))
                break
            done += n
        self.stored_bytes += done  # statistics only: stores of different files may race here
        return done
