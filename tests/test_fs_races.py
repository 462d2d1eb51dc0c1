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


def test_lookups_after_a_getxattr_do_not_wait_for_the_listing(fs, store, prefix):
    """docs/SEMANTICS.md claim 4: where metadata was just read, the directory's listing starts
    at the second lookup that misses, in the background, and no lookup waits for it; each file
    is HEADed once, whether by its own lookup or ahead of it."""
    names = [f"f{i:02d}" for i in range(20)]
    for n in names:
        store.client.put(BUCKET, f"{prefix}d/{n}", b"x", {"x-amz-meta-tag": n})
    fs.lookup("/d")
    listing_may_answer = threading.Event()
    heads: list[str] = []
    real_list, real_head = fs.client.list_page, fs.client.head

    def slow_list(*args, **kwargs):
        listing_may_answer.wait(30)
        return real_list(*args, **kwargs)

    def counting_head(bucket, key, *args, **kwargs):
        heads.append(key)
        return real_head(bucket, key, *args, **kwargs)

    fs.client.list_page, fs.client.head = slow_list, counting_head
    try:
        t0 = time.monotonic()
        for n in names[:6]:  # the listing is held back: these answer with their own HEADs
            assert fs.getxattr(f"/d/{n}", "user.tag") == n.encode()
        assert time.monotonic() - t0 < 10
        assert fs._dir_lists, "the listing was not started"
        listing_may_answer.set()
        deadline = time.monotonic() + 10
        while not fs.meta.has_listing("/d") and time.monotonic() < deadline:
            time.sleep(0.01)
        for n in names[6:]:
            assert fs.getxattr(f"/d/{n}", "user.tag") == n.encode()
    finally:
        listing_may_answer.set()
        fs.client.list_page, fs.client.head = real_list, real_head
    assert sorted(heads) == sorted(f"{prefix}d/{n}" for n in names), heads
