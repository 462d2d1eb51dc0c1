"""The FUSE Operations class: translates arguments and errors between mfusepy and S3FileSystem.

No HTTP and no cache logic here. Every exception becomes an errno through fs.errors.to_errno (an
unknown one is EIO and logged), never mfusepy's default EINVAL.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import stat
import threading
from typing import Callable

import mfusepy

from .fs import S3FileSystem
from .fs.attrs import Attr
from .fs.errors import FsError, to_errno
from .fuse_kernel import FD_SEEK_RETRY, BufVec, KernelPageCache, libc_malloc

log = logging.getLogger("s3mount.fuse")


def translated(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except mfusepy.FuseOSError:
            raise
        except FsError as e:
            raise mfusepy.FuseOSError(e.errno) from None
        except Exception as e:  # noqa: BLE001 - the table decides, and logs what it does not know
            raise mfusepy.FuseOSError(to_errno(e)) from None
    return wrapper


_pinned_threads: set[int] = set()
_PIN_THREADS = mfusepy.fuse_version_major >= 3  # see _pin_thread_state


def _pin_thread_state(ident: int) -> None:
    """Keep this libfuse worker thread's Python thread state for good (called once per thread).

    ctypes enters every callback from a foreign thread with PyGILState_Ensure and leaves with
    PyGILState_Release, which creates and destroys a thread state each time; on Python 3.11 that
    is an mmap and munmap of its frame stack per FUSE request (a TLB shootdown on every core),
    measured at about 150 us of a 4 KiB cached read's 230 us. One extra Ensure, never released,
    makes the thread state outlive the callback. Only on libfuse 3, whose workers live until
    unmount (it never destroys idle threads by default); libfuse 2 ends idle workers beyond 10,
    and each would take its pinned thread state with it.
    """
    ctypes.pythonapi.PyGILState_Ensure()
    _pinned_threads.add(ident)


class S3FUSE(mfusepy.FUSE):
    """mfusepy's FUSE, plus keep_cache on open while the object's ETag is unchanged, and
    thread states kept across callbacks."""

    def _wrapper(self, func, *args, **kwargs):
        if _PIN_THREADS and (ident := threading.get_ident()) not in _pinned_threads:
            _pin_thread_state(ident)
        return super()._wrapper(func, *args, **kwargs)

    def open(self, path, fip):
        result = super().open(path, fip)
        if fip.contents.fh and self.operations.fs.keep_kernel_cache(fip.contents.fh):
            fip.contents.keep_cache = 1
        return result

    def read_buf(self, path, bufpp, size, offset, fip):
        """Answer with a span of the cache file instead of bytes: libfuse splices it into
        /dev/fuse (file -> pipe -> kernel), which skips the copy into its buffer and the
        page-by-page pinning of that buffer a write to /dev/fuse does (perf: 40% of the
        daemon's CPU in a cached sequential read, bench/README.md). Small replies, and
        libfuse 2, are copied by libfuse from the same span."""
        fd, length = self.operations.read_fd(None, size, offset, fip.contents.fh)
        addr = libc_malloc(ctypes.sizeof(BufVec))
        if not addr:
            return -errno.ENOMEM
        vec = BufVec.from_address(addr)  # libfuse frees it with free() after the reply
        vec.count, vec.idx, vec.off = 1, 0, 0
        vec.buf.size, vec.buf.flags, vec.buf.mem = length, FD_SEEK_RETRY, None
        vec.buf.fd, vec.buf.pos = fd, offset
        ctypes.cast(bufpp, ctypes.POINTER(ctypes.c_void_p))[0] = addr
        return 0

    # Data moves from libfuse's buffer into the cache file directly: mfusepy's write copies the
    # buffer into a bytes object first (1 MiB per call).
    def write(self, path, buf, size, offset, fip):
        return self.operations.write(None, _view(buf, size), offset, fip.contents.fh)


FUSE_CAP_SPLICE_WRITE = 1 << 7


def _view(buf, size: int) -> memoryview:
    """A writable view of `size` bytes at a libfuse buffer, valid during the callback only."""
    return memoryview((ctypes.c_char * size).from_address(ctypes.addressof(buf.contents))).cast("B")


class S3Operations(mfusepy.Operations):
    use_ns = True  # times in integer nanoseconds

    def __init__(self, fs: S3FileSystem, *, on_init: Callable[[], None] | None = None,
                 on_destroy: Callable[[], None] | None = None, max_read: int = 1 << 20,
                 kernel_cache: KernelPageCache | None = None):
        self.fs = fs
        self.kernel_cache = kernel_cache
        self.max_read = max_read
        self._on_init = on_init
        self._on_destroy = on_destroy

    def init_with_config(self, conn_info, config_3):
        if conn_info is not None and config_3 is not None:  # libfuse 3: ask for 1 MiB writes
            conn_info.max_write = 1 << 20
            conn_info.max_read = self.max_read  # must match the max_read mount option
            conn_info.max_readahead = 1 << 20  # the kernel's cap here; the bdi setting is not
            conn_info.max_background = 64  # requests the kernel keeps in flight (readahead)
            if conn_info.capable & FUSE_CAP_SPLICE_WRITE:  # replies spliced from cache files
                conn_info.want |= FUSE_CAP_SPLICE_WRITE
            if self.kernel_cache is not None:
                self.kernel_cache.attach()
        if self._on_init:
            self._on_init()

    def destroy(self, path):
        if self.kernel_cache is not None:
            self.kernel_cache.detach()
        if self._on_destroy:
            self._on_destroy()

    @staticmethod
    def _stat(attr: Attr) -> dict:
        mtime = attr.st_mtime_ns
        return {"st_mode": attr.mode, "st_nlink": 2 if attr.is_dir else 1, "st_size": attr.size,
                "st_uid": attr.uid, "st_gid": attr.gid, "st_mtime": mtime, "st_ctime": mtime,
                "st_atime": mtime, "st_blocks": (attr.size + 511) // 512, "st_blksize": 1 << 20}

    # -- metadata ---------------------------------------------------------------------------------
    @translated
    def getattr(self, path, fh=None):
        return self._stat(self.fs.lookup(path))

    @translated
    def readdir(self, path, fh):
        return [".", ".."] + self.fs.list_dir(path)

    @translated
    def access(self, path, amode):
        self.fs.lookup(path)
        if amode & os.W_OK and self.fs.read_only:
            raise FsError(errno.EROFS)
        return 0

    @translated
    def statfs(self, path):
        return self.fs.statfs()

    @translated
    def chmod(self, path, mode):
        self.fs.chmod(path, mode)

    @translated
    def chown(self, path, uid, gid):
        self.fs.chown(path, uid, gid)

    @translated
    def utimens(self, path, times=None):
        self.fs.utimens(path, None if times is None else times[1])

    # -- names ------------------------------------------------------------------------------------
    @translated
    def mkdir(self, path, mode):
        uid, gid, _ = mfusepy.fuse_get_context()
        self.fs.mkdir(path, mode, uid, gid)

    @translated
    def rmdir(self, path):
        self.fs.rmdir(path)

    @translated
    def unlink(self, path):
        self.fs.unlink(path)

    @translated
    def rename(self, old, new):
        self.fs.rename(old, new)

    @translated
    def symlink(self, target, source):
        # mfusepy's naming: `target` is the new link's path, `source` what it points to.
        uid, gid, _ = mfusepy.fuse_get_context()
        self.fs.symlink(source, target, uid, gid)

    @translated
    def link(self, target, source):
        raise FsError(errno.EPERM, "S3 has no hard links")

    @translated
    def readlink(self, path):
        return self.fs.readlink(path)

    @translated
    def mknod(self, path, mode, dev):
        if not stat.S_ISREG(mode):
            raise FsError(errno.EPERM, "only regular files can live in S3")
        uid, gid, _ = mfusepy.fuse_get_context()
        fh = self.fs.create(path, mode, os.O_WRONLY | os.O_EXCL, uid, gid)
        try:
            self.fs.flush(fh)
        finally:
            self.fs.release(fh)

    # -- file data ----------------------------------------------------------------------------------
    @translated
    def create(self, path, mode, flags=os.O_WRONLY):
        uid, gid, _ = mfusepy.fuse_get_context()
        return self.fs.create(path, mode, flags, uid, gid)

    @translated
    def open(self, path, flags):
        fh = self.fs.open(path, flags)
        if self.kernel_cache is not None and self.kernel_cache.opening:
            self.kernel_cache.opened(path, fh, mfusepy.fuse_get_context()[2])
        return fh

    @translated
    def read(self, path, size, offset, fh):
        # libfuse calls read_buf when both are registered; this is the plain Operations form.
        return self.fs.read(fh, size, offset)

    @translated
    def read_fd(self, path, size, offset, fh):
        return self.fs.read_fd(fh, size, offset)

    def read_buf(self, path, bufpp, size, offset, fh):
        # Served by S3FUSE.read_buf through read_fd; defined so that mfusepy registers it.
        raise mfusepy.FuseOSError(errno.ENOSYS)

    @translated
    def write(self, path, data, offset, fh):
        return self.fs.write(fh, data, offset)

    @translated
    def truncate(self, path, length, fh=None):
        self.fs.truncate(path, length, fh)

    @translated
    def flush(self, path, fh):
        self.fs.flush(fh)

    @translated
    def fsync(self, path, datasync, fh):
        self.fs.fsync(fh)

    @translated
    def release(self, path, fh):
        self.fs.release(fh)

    # -- extended attributes --------------------------------------------------------------------------
    @translated
    def getxattr(self, path, name, position=0):
        return self.fs.getxattr(path, name)

    @translated
    def listxattr(self, path):
        return self.fs.listxattr(path)

    @translated
    def setxattr(self, path, name, value, options, position=0):
        self.fs.setxattr(path, name, bytes(value), options)

    @translated
    def removexattr(self, path, name):
        self.fs.removexattr(path, name)
