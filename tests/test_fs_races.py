"""Races inside the filesystem layer, driven in-process (no FUSE) over the real SeaweedFS, with
a tiny GIL switch interval so that threads interleave between almost every bytecode."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from conftest import BUCKET
from s3mount.cache.datacache import DataCache
from s3mount.fs import S3FileSystem
from s3mount.fs.attrs import Defaults


@pytest.fixture
def fs(store, prefix, workdir):
    cache = DataCache(os.path.join(workdir, "cache"), capacity=256 * 1024 * 1024)
    f = S3FileSystem(store, cache, BUCKET, prefix, defaults=Defaults(uid=0, gid=0),
                     metadata_ttl=5)
    yield f
    for pool in (f.pool, f.fetch_pool, f.upload_pool):
        pool.shutdown(wait=True)
    cache.close()


@pytest.fixture
def fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_open_racing_last_release_gets_a_live_handle(fs, fast_switching):
    """An open that finds a path's OpenFile just as its last handle closes must not get a
    handle on the given-back cache entry (it read EBADF from a closed fd)."""
    class SlowLookups(dict):  # widens the window between finding an OpenFile and using it
        def get(self, *args):
            found = super().get(*args)
            time.sleep(0.0002)
            return found

    fs.files = SlowLookups()
    payload = os.urandom(100_000)
    fh = fs.create("/f", 0o644, os.O_WRONLY, 0, 0)
    fs.write(fh, payload, 0)
    fs.release(fh)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(200):
                h = fs.open("/f", os.O_RDONLY)
                try:
                    assert fs.read(h, len(payload), 0) == payload
                finally:
                    fs.release(h)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert not fs.files and not fs.handles


def test_discard_during_readahead_keeps_fd_until_the_fetch_ends(workdir):
    """A discarded entry's fd stays open while a fetch writes to it (a closed fd's number can be
    reused by another cache file), is closed when the fetch ends, and its blocks are dropped."""
    cache = DataCache(os.path.join(workdir, "c"), capacity=64 * 1024 * 1024)
    entry = cache.open("b", "k", "etag1", 1024 * 1024)
    started, go = threading.Event(), threading.Event()

    def fetch(offset: int, length: int) -> None:
        started.set()
        go.wait(10)
        os.pwrite(entry.fd, b"x" * length, offset)

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        with entry.lock:
            runs = entry._claim(0, 3)
        fut = pool.submit(entry._run_fetch, fetch, *runs[0])
        assert started.wait(10)
        entry.refs -= 1
        cache.discard(entry)
        fd = entry.fd
        assert fd >= 0 and os.fstat(fd)  # still open: the fetch is writing to it
        go.set()
        fut.result(10)
    assert entry.fd == -1 and not entry.present
    assert cache.used == 0
