"""HeadPrefetcher (s3mount/fs/prefetch.py): background HEADs in the given order, a few at a time,
each answer handed to one lookup. The HEAD is a stand-in in the first tests; the last drives
the fs layer in-process over SeaweedFS, and the behaviour through a mount is in
test_mount_listing.py."""

from __future__ import annotations

import os
import threading
import time

import pytest

from conftest import BUCKET
from s3mount.cache.datacache import DataCache
from s3mount.fs import S3FileSystem
from s3mount.fs.attrs import Defaults
from s3mount.fs.core import LIST_AFTER_MISSES
from s3mount.fs.prefetch import HeadPrefetcher


def test_heads_run_in_order_a_few_at_a_time_and_each_answer_is_taken_once():
    running, peak, order = 0, 0, []
    lock = threading.Lock()

    def head(path, kind):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            order.append(path)
        time.sleep(0.01)
        with lock:
            running -= 1
        if path == "/d/bad":
            raise OSError("boom")
        return (path, kind)

    p = HeadPrefetcher(head, streams=3, fresh_for=lambda: 5.0)
    paths = [f"/d/f{i:02d}" for i in range(12)]
    p.start([(q, "file") for q in paths] + [("/d/bad", "file")])
    p.start([(paths[0], "file")])  # already started: not again
    assert [p.take(q).result(timeout=5) for q in paths] == [(q, "file") for q in paths]
    with pytest.raises(OSError):
        p.take("/d/bad").result(timeout=5)
    assert p.take(paths[0]) is None  # taken: a later lookup HEADs for itself
    assert peak == 3 and set(order[:3]) == set(paths[:3]) and len(order) == 13


def test_dropped_and_stale_answers_are_not_handed_out():
    now = [5.0]
    p = HeadPrefetcher(lambda path, kind: path, streams=2, fresh_for=lambda: now[0])
    p.start([("/a/x", "file"), ("/a/b/y", "file"), ("/c", "dir")])
    p.drop("/a", tree=True)
    assert p.take("/a/x") is None and p.take("/a/b/y") is None
    now[0] = 0.0  # nothing is fresh any more
    time.sleep(0.01)
    assert p.take("/c") is None


def _fs_over_tagged_files(store, prefix, workdir, names):
    """An in-process fs over SeaweedFS, with d/NAME holding x-amz-meta-state sI for each name."""
    for i, n in enumerate(names):
        store.client.put(BUCKET, prefix + "d/" + n, b"x", {"x-amz-meta-state": f"s{i}"})
    cache = DataCache(os.path.join(workdir, "cache"), capacity=64 * 1024 * 1024)
    return S3FileSystem(store, cache, BUCKET, prefix, defaults=Defaults(uid=0, gid=0),
                        metadata_ttl=30), cache


def _close(fs, cache):
    for pool in (fs.pool, fs.fetch_pool, fs.upload_pool, fs.list_pool, fs.side_pool):
        pool.shutdown(wait=True)
    cache.close()


def test_lookups_whose_metadata_is_wanted_do_not_wait_for_the_listing(store, prefix, workdir):
    """From the LIST_AFTER_MISSES-th cold lookup in a directory, lookups wait for the listing
    made for them, unless files' metadata is wanted there (getxattr of each file in turn):
    each such lookup HEADs its file anyway, so it goes on with its own HEAD instead of
    idling. Here the listing is held back until every getxattr has returned."""
    names = [f"w{i}" for i in range(LIST_AFTER_MISSES + 4)]
    fs, cache = _fs_over_tagged_files(store, prefix, workdir, names)
    release, listed = threading.Event(), threading.Event()
    real_list_page = fs.client.list_page

    def held_list_page(bucket, key_prefix, delimiter, **kw):
        if kw.get("max_keys") == 1000:  # the listing for lookups, not a one-key probe
            release.wait(30)
            listed.set()
        return real_list_page(bucket, key_prefix, delimiter, **kw)

    fs.client.list_page = held_list_page
    try:
        fs.lookup("/d")
        done = []

        def run():
            for i, n in enumerate(names):
                done.append(fs.getxattr(f"/d/{n}", "user.state") == f"s{i}".encode())

        t = threading.Thread(target=run)
        t.start()
        t.join(20)
        assert not t.is_alive() and done == [True] * len(names) and not listed.is_set()
    finally:
        release.set()
        _close(fs, cache)


def test_metadata_wanted_while_the_listing_samples_still_heads_the_rest_ahead(store, prefix,
                                                                              workdir):
    """The race a mount test hit now and then: the listing made for the lookups lands when one
    file's metadata has been read (so it samples), the second getxattr comes while the sample
    runs, and the next lookups HEAD their own files before the listing is cached. The listing
    still starts the background HEADs of the rest once it is in (docs/SEMANTICS.md claim 4)."""
    names = [f"v{i:02d}" for i in range(40)]
    fs, cache = _fs_over_tagged_files(store, prefix, workdir, names)
    sampling, go_on = threading.Event(), threading.Event()
    real_sample, real_head = fs._sample, fs.client.head
    headed = []

    def held_sample(*a, **kw):
        sampling.set()
        go_on.wait(30)
        return real_sample(*a, **kw)

    def counting_head(bucket, key, **kw):
        headed.append(key)
        return real_head(bucket, key, **kw)

    fs._sample, fs.client.head = held_sample, counting_head
    try:
        fs.lookup("/d")
        assert fs.getxattr("/d/v00", "user.state") == b"s0"  # metadata wanted once
        fs.lookup("/d/v01")             # the 2nd miss: the listing starts, and samples
        assert sampling.wait(10)
        for i in (1, 2, 3):             # wanted twice now; these HEAD their own files
            assert fs.getxattr(f"/d/v{i:02d}", "user.state") == f"s{i}".encode()
        go_on.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                any(k.endswith("/d/" + n) for k in headed) for n in names):
            time.sleep(0.05)
        missing = [n for n in names if not any(k.endswith("/d/" + n) for k in headed)]
        assert not missing, missing
    finally:
        go_on.set()
        _close(fs, cache)
