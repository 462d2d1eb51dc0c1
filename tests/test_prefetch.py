"""HeadPrefetcher (s3mount/fs/prefetch.py): background HEADs in the given order, a few at a time,
each answer handed to one lookup. The HEAD is a stand-in here; the fs-level behaviour over
SeaweedFS is in test_mount_listing.py."""

from __future__ import annotations

import threading
import time

import pytest

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
