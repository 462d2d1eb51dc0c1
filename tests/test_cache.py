"""The block cache (issue: large files): ranged fetches, the hard cap, reuse across remounts.
Counts bytes and requests, never time."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time

import pytest

from conftest import BUCKET, make_file, resident_bytes
from mountutil import Mount
from s3mount.fs.upload import MAX_PARTS, layout, part_at, part_bounds

MiB = 1 << 20


def put_made_file(store, workdir: str, key: str, size: int, seed: int) -> bytes:
    """Put `size` pseudo-random bytes (make_file) at `key` with RemoteStore.write; returns them."""
    src = os.path.join(workdir, "src-" + key.replace("/", "_"))
    make_file(src, size, seed=seed)
    assert store.write(src, key)
    with open(src, "rb") as f:
        data = f.read()
    os.unlink(src)
    return data


def fetched_bytes(proxy) -> int:
    total = 0
    for meth, target, rng in proxy.ranges:
        if meth == "GET" and "list-type" not in target and rng:
            a, b = rng.split("=")[1].split("-")
            total += int(b) - int(a) + 1
    return total


def test_part_layout_fits_5_tib():
    base = 8 * MiB
    parts = layout(5 * (1 << 40), base)
    assert len(parts) <= MAX_PARTS
    assert parts[0] == (1, 0, base) and parts[-1][2] == 5 * (1 << 40)
    assert all(parts[i][2] == parts[i + 1][1] for i in range(len(parts) - 1))
    for n in (1, 999, 1000, 1001, 2500, 9999):
        start, end = part_bounds(n, base)
        assert part_at(start, base) == n and part_at(end - 1, base) == n


def test_4k_from_middle_of_1gib_fetches_few_blocks(proxy, store, prefix, workdir):
    src = os.path.join(workdir, "gib")
    make_file(src, 1024 * MiB, seed=21)
    assert store.write(src, prefix + "gib")
    with open(src, "rb") as f:
        f.seek(512 * MiB + 12345)
        want = f.read(4096)
    os.unlink(src)
    with Mount(proxy.endpoint, BUCKET, prefix.rstrip("/"), workdir=os.path.join(workdir, "m")) as m:
        proxy.reset()
        with open(m.path("gib"), "rb") as f:
            f.seek(512 * MiB + 12345)
            assert f.read(4096) == want
        # A few 1 MiB blocks of 1024: the kernel's own readahead (1 MiB windows) asks for the
        # block read and up to two after it; s3mount adds nothing for a non-sequential read.
        assert 0 < fetched_bytes(proxy) <= 4 * MiB
    store.delete(prefix + "gib")


def _allocated(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def test_write_larger_than_cap_stays_under_cap(seaweed, store, prefix, workdir):
    cap = 64 * MiB
    with Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), options=["--cache-size", "64M"],
               workdir=os.path.join(workdir, "m")) as m:
        peak = [0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], _allocated(os.path.join(m.cache, "data")))
                stop.wait(0.005)
        t = threading.Thread(target=watch)
        t.start()
        h = hashlib.sha256()
        block = os.urandom(MiB)
        try:
            with open(m.path("big"), "wb") as f:
                for i in range(200):
                    chunk = i.to_bytes(4, "little") + block[4:]
                    h.update(chunk)
                    f.write(chunk)
        finally:
            stop.set()
            t.join()
        assert peak[0] <= cap, f"cache used {peak[0]} bytes on disk, cap {cap}"
        info = store.client.head(BUCKET, prefix + "big")
        assert info.size == 200 * MiB and info.is_multipart
        back = os.path.join(workdir, "back")
        assert store.read(prefix + "big", back)[0]
        with open(back, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == h.hexdigest()


def test_clean_blocks_survive_remount_and_are_dropped_when_changed(proxy, store, prefix, workdir):
    src = os.path.join(workdir, "obj")
    data = make_file(src, 6 * MiB, seed=22)
    assert store.write(src, prefix + "obj")
    m = Mount(proxy.endpoint, BUCKET, prefix.rstrip("/"), workdir=os.path.join(workdir, "m"))
    try:
        m.start()
        assert open(m.path("obj"), "rb").read() == data
        m.restart(keep_cache=True)
        proxy.reset()
        assert open(m.path("obj"), "rb").read() == data
        assert fetched_bytes(proxy) == 0  # served from the blocks the last mount left
        data2 = make_file(src, 6 * MiB, seed=23)
        assert store.write(src, prefix + "obj")  # changed behind the mount's back
        m.restart(keep_cache=True)
        proxy.reset()
        assert open(m.path("obj"), "rb").read() == data2
        assert fetched_bytes(proxy) == 6 * MiB  # the old blocks were not used
    finally:
        m.cleanup()


def test_small_clean_objects_keep_no_index(seaweed, store, prefix, workdir):
    store.client.put(BUCKET, prefix + "small", b"s" * 4096)
    store.client.put(BUCKET, prefix + "large", b"L" * (2 * MiB))
    m = Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), workdir=os.path.join(workdir, "m"))
    try:
        m.start()
        assert open(m.path("small"), "rb").read() == b"s" * 4096
        assert open(m.path("large"), "rb").read() == b"L" * (2 * MiB)
        m.stop()  # flushes the queued indexes
        data = os.path.join(m.cache, "data")
        indexes = [n for n in os.listdir(data) if n.endswith(".json")]
        sizes = sorted(os.stat(os.path.join(data, n[:-5])).st_size for n in indexes)
        assert sizes == [2 * MiB]  # the large object's index only
    finally:
        m.cleanup()


def test_small_change_in_large_object_reuploads_only_that_part(proxy, store, prefix, workdir):
    src = os.path.join(workdir, "large")
    data = bytearray(make_file(src, 40 * MiB, seed=24))
    assert store.write(src, prefix + "large")
    with Mount(proxy.endpoint, BUCKET, prefix.rstrip("/"), workdir=os.path.join(workdir, "m")) as m:
        proxy.reset()
        with open(m.path("large"), "r+b") as f:
            f.seek(20 * MiB + 7)
            f.write(b"CHANGED")
        data[20 * MiB + 7: 20 * MiB + 14] = b"CHANGED"
        parts = [h for meth, t, h in proxy.requests if meth == "PUT" and "partNumber" in t]
        copied = [h for h in parts if "x-amz-copy-source" in h]
        assert len(parts) == 5 and len(copied) == 4  # 40 MiB = five 8 MiB parts
        assert fetched_bytes(proxy) <= 8 * MiB  # only the edited part was read back
    back = os.path.join(workdir, "back")
    assert store.read(prefix + "large", back)[0]
    assert open(back, "rb").read() == bytes(data)


def test_dense_random_reader_gets_the_whole_object_in_large_runs(proxy, store, prefix, workdir):
    """A reader that fetches many scattered blocks (fio randread, a database scan) makes the
    mount fetch the rest of the object in parallel 8 MiB runs: the object is fetched about once,
    in far fewer GETs than one per block, and every byte read is right."""
    size = 64 * MiB
    data = put_made_file(store, workdir, prefix + "dense", size, seed=33)
    rng = __import__("random").Random(5)
    offsets = [rng.randrange(0, size - 4096) for _ in range(400)]
    with Mount(proxy.endpoint, BUCKET, prefix.rstrip("/"), workdir=os.path.join(workdir, "m")) as m:
        proxy.reset()
        fd = os.open(m.path("dense"), os.O_RDONLY)
        try:
            for off in offsets:
                assert os.pread(fd, 4096, off) == data[off:off + 4096]
        finally:
            os.close(fd)
        gets = [r for r in proxy.ranges if r[0] == "GET" and "list-type" not in r[1] and r[2]]
        # 400 scattered reads touch most of the 256 blocks; without the fill that is ~one GET
        # per block touched. With it: the first misses, then 8 runs of 8 MiB.
        assert fetched_bytes(proxy) <= size + 8 * MiB
        assert len(gets) < 100
    store.delete(prefix + "dense")


def dense_object_and_mount(seaweed, store, prefix: str, workdir: str, size: int, seed: int):
    """Object `prefix`dense of `size` made-up bytes, and a (not yet started) mount of `prefix`."""
    data = put_made_file(store, workdir, prefix + "dense", size, seed=seed)
    return data, Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"),
                       workdir=os.path.join(workdir, "m"))


def read_at_random_until(fd: int, data: bytes, rng, done, timeout: float = 60) -> None:
    """4 KiB reads of `fd` at random offsets, each checked against `data`, until done()."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        off = rng.randrange(0, len(data) - 4096)
        assert os.pread(fd, 4096, off) == data[off:off + 4096]


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_filled_object_is_stored_in_the_kernel_page_cache(seaweed, store, prefix, workdir):
    """docs/SEMANTICS.md claim 9 (filled objects): once a dense random reader's fill is
    complete, the object is in the kernel's page cache of the mounted file, so later reads never
    reach the daemon; the bytes are right, and a write through the mount is read back, not the
    stored bytes."""
    from s3mount.stats import fetch
    size = 24 * MiB + 12345  # a tail that is not a whole page or chunk
    data, mount = dense_object_and_mount(seaweed, store, prefix, workdir, size, seed=8)
    rng = __import__("random").Random(9)
    with mount as m:
        path = m.path("dense")
        fd = os.open(path, os.O_RDONLY)
        try:
            read_at_random_until(fd, data, rng, lambda: fetch(m.mnt)["kernel_cache_bytes"] >= size)
            assert fetch(m.mnt)["kernel_cache_bytes"] == size
            assert resident_bytes(path) >= size - 4096
            hits = fetch(m.mnt)["block_hits"] + fetch(m.mnt)["block_misses"]
            for _ in range(500):
                off = rng.randrange(0, size - 4096)
                assert os.pread(fd, 4096, off) == data[off:off + 4096]
            assert os.pread(fd, 20000, size - 12345) == data[size - 12345:]
            assert fetch(m.mnt)["block_hits"] + fetch(m.mnt)["block_misses"] == hits
            with open(path, "r+b") as w:  # a write goes through and is what is read
                w.seek(5 * MiB + 7)
                w.write(b"written after the store")
            assert os.pread(fd, 23, 5 * MiB + 7) == b"written after the store"
        finally:
            os.close(fd)
        with open(path, "rb") as f:
            f.seek(5 * MiB)
            assert f.read(40) == data[5 * MiB:5 * MiB + 7] + b"written after the store" \
                + data[5 * MiB + 30:5 * MiB + 40]
    store.delete(prefix + "dense")


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_a_file_open_for_writing_is_not_stored_in_the_kernel_page_cache(seaweed, store, prefix,
                                                                        workdir):
    """docs/SEMANTICS.md claim 9 (filled objects): while a handle is open for writing (whose
    mmap could be writing into the page cache), a completed fill stores nothing there."""
    from s3mount.stats import fetch
    size = 16 * MiB
    data, mount = dense_object_and_mount(seaweed, store, prefix, workdir, size, seed=4)
    rng = __import__("random").Random(2)
    with mount as m:
        path = m.path("dense")
        writer = os.open(path, os.O_RDWR)
        fd = os.open(path, os.O_RDONLY)
        try:
            read_at_random_until(fd, data, rng, lambda: fetch(m.mnt)["cache_bytes"] >= size)
            assert fetch(m.mnt)["cache_bytes"] >= size  # the fill is complete
            time.sleep(1)
            assert fetch(m.mnt)["kernel_cache_bytes"] == 0
            assert resident_bytes(path) < size // 2
        finally:
            os.close(fd)
            os.close(writer)
    store.delete(prefix + "dense")


def test_kernel_page_cache_is_kept_across_opens_while_the_etag_is_unchanged(mount, store,
                                                                             prefix):
    """docs/SEMANTICS.md claim 9 (kernel cache): a file read once is read again from the
    kernel's page cache after a close and reopen (no read reaches the daemon); once the object
    changed in S3, the next open after the metadata TTL reads the new bytes."""
    from s3mount.stats import fetch
    old, new = os.urandom(3 * MiB), os.urandom(3 * MiB)
    store.client.put(BUCKET, prefix + "kept", old)
    path = mount.path("kept")
    with open(path, "rb") as f:
        assert f.read() == old
    reads = fetch(mount.mnt)["block_hits"] + fetch(mount.mnt)["block_misses"]
    with open(path, "rb") as f:
        assert f.read() == old
    assert fetch(mount.mnt)["block_hits"] + fetch(mount.mnt)["block_misses"] == reads
    store.client.put(BUCKET, prefix + "kept", new)
    time.sleep(1.5)  # the mount's metadata TTL is 1 s
    with open(path, "rb") as f:
        assert f.read() == new


def test_kernel_store_takes_back_a_chunk_that_changed_meanwhile():
    """A chunk whose bytes changed while the kernel stored it (a write or close in between) is
    invalidated again at once, and the store stops there; the checks run before and after."""
    from s3mount.fuse_kernel import KernelPageCache
    kc = KernelPageCache("/nonexistent", max_bytes=1 << 30)
    calls = []
    kc._session = 1
    kc._store = lambda se, node, off, vec, flags: calls.append(("store", node, off,
                                                                vec._obj.buf.size)) or 0
    kc._inval = lambda se, node, off, n: calls.append(("inval", node, off, n)) or 0
    checks = []

    def valid(off, n):
        checks.append(off)
        return len(checks) < 4  # chunk 0 checked twice; chunk 1 turns invalid after its store
    c = kc.CHUNK
    assert kc.store(42, 0, 8192, 3 * c, valid=valid) == c
    assert calls == [("store", 42, 8192, c), ("store", 42, 8192 + c, c),
                     ("inval", 42, 8192 + c, c)]
    assert kc.stored_bytes == c
    kc.detach()
    assert kc.store(42, 0, 0, c, valid=lambda o, n: True) == 0
    assert kc.node_of("/f", owns=lambda fh: True) is None  # no session: no open either


def test_fill_thresholds():
    """The fill starts after 16 fetching random reads (or 1/128 of the blocks, if more), and
    never for an object over a quarter of the cache."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor
    from s3mount.cache.datacache import DataCache

    src = os.urandom(32 * MiB)
    cache = DataCache(tempfile.mkdtemp(), capacity=1024 * MiB)
    pool = ThreadPoolExecutor(8)
    calls = []

    def run(size):
        entry = cache.open("b", f"k{size}", "etag", size)

        def fetch(off, n):
            calls.append(n)
            os.pwrite(entry.fd, src[off % len(src):][:n].ljust(n, b"\0"), off)
        return entry, fetch

    entry, fetch = run(32 * MiB)
    for i in range(15):  # 15 scattered misses: no fill
        entry.read(i * 2 * MiB + 7, 10, fetch, pool)
    pool.submit(lambda: None).result()
    assert entry.fill_next == -1 and len(entry.present) == 15
    entry.read(31 * MiB, 10, fetch, pool)   # the 16th
    assert entry.fill_next >= 0
    pool.shutdown(wait=True)
    assert len(entry.present) == 32 * MiB // cache.block_size
    assert max(calls) > 8 * cache.block_size  # runs between the blocks already present

    pool = ThreadPoolExecutor(8)
    big, fetch = run(300 * MiB)  # > 1024 MiB / 4 (less the index reserve)
    for i in range(40):
        big.read(i * 7 * MiB + 3, 10, fetch, pool)
    pool.shutdown(wait=True)
    assert big.fill_next == -1 and len(big.present) == 40


def test_large_random_reads_fetch_in_parallel_and_fill_late():
    """A random read of 1 MiB that misses is fetched as OWN_STREAMS ranged GETs of one block
    each, all at once; such large reads start the whole-object fill only once they have
    fetched a third of the object (small ones: after 16, test_fill_thresholds)."""
    import tempfile
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from s3mount.cache.datacache import DataCache
    from s3mount.cache.entry import OWN_STREAMS

    size = 64 * MiB
    src = os.urandom(size)
    cache = DataCache(tempfile.mkdtemp(), capacity=1024 * MiB)
    pool = ThreadPoolExecutor(8)
    entry = cache.open("b", "large", "etag", size)
    calls = []
    together = threading.Barrier(OWN_STREAMS, timeout=10)  # broken unless all come at once
    first = [True]

    def fetch(off, n):
        calls.append((off, n))
        if first[0]:
            together.wait()
        os.pwrite(entry.fd, src[off:off + n], off)

    assert entry.read(5 * MiB, MiB, fetch, pool) == src[5 * MiB:6 * MiB]
    first[0] = False
    assert sorted(calls) == [(5 * MiB + i * cache.block_size, cache.block_size)
                             for i in range(OWN_STREAMS)]
    nblocks = size // cache.block_size
    reads, fetched = 1, OWN_STREAMS
    # 1 MiB slots 17 MiB apart (mod 64): never near the last read, so never sequential
    while 3 * fetched < nblocks:  # under a third fetched: no fill
        assert entry.fill_next == -1, reads
        off = (5 + 17 * reads) % 64 * MiB
        assert entry.read(off, MiB, fetch, pool) == src[off:off + MiB]
        reads, fetched = reads + 1, fetched + MiB // cache.block_size
    assert reads > 16 and entry.fill_next >= 0  # the read that made it a third started it
    pool.shutdown(wait=True)
    assert len(entry.present) == nblocks
    cache.close()


def test_new_cache_files_come_from_spares_and_indexes_survive_close():
    """Opens rename an empty file made ahead into place; close() writes the queued clean
    indexes and removes the spares; a new cache on the directory adopts the clean entry."""
    import tempfile
    import time
    from s3mount.cache.datacache import DataCache

    root = tempfile.mkdtemp()
    cache = DataCache(root, capacity=64 * MiB)
    first = cache.open("b", "k0", "e0", 10)
    cache.release(first)
    data_dir = os.path.join(root, "data")
    deadline = time.monotonic() + 10
    while len([n for n in os.listdir(data_dir) if n.startswith("spare.")]) < 16:
        assert time.monotonic() < deadline, "no spare files made"
        time.sleep(0.05)
    spares = {os.stat(os.path.join(data_dir, n)).st_ino
              for n in os.listdir(data_dir) if n.startswith("spare.")}
    size = 256 * 1024  # objects under INDEX_MIN_SIZE keep no index (test_small_clean_objects_keep_no_index)
    entry = cache.open("b", "k1", "e1", size)
    assert os.fstat(entry.fd).st_ino in spares and os.fstat(entry.fd).st_mode & 0o777 == 0o600

    def fetch(off, n):
        os.pwrite(entry.fd, b"x" * n, off)
    assert entry.read(0, 4096, fetch) == b"x" * 4096
    cache.release(entry)
    cache.close()
    assert not [n for n in os.listdir(data_dir) if n.startswith("spare.")]
    again = DataCache(root, capacity=64 * MiB)
    reused = again.open("b", "k1", "e1", size)
    assert reused.present and again.hits == 1
    again.close()


def test_index_of_a_sequential_writer_stays_small_and_old_indexes_still_load():
    """A file written in order is journaled as one run of blocks, however long it grows (the
    journal is rewritten at each write that dirties a new block); indexes in the older format
    (a list of every block number) are adopted as before; a journal with damaged block lists
    recovers every block of the file rather than none."""
    import json
    import tempfile
    from s3mount.cache.datacache import DataCache

    from s3mount.cache.entry import JOURNAL_AHEAD

    root = tempfile.mkdtemp()
    cache = DataCache(root, capacity=256 * MiB)
    entry = cache.create("b", "big")
    chunk = b"w" * MiB
    sizes, journals = [], set()
    blocks = 64 * MiB // cache.block_size
    for i in range(64):
        entry.write(i * MiB, chunk, lambda off, n: None)
        with open(entry.path + ".json") as f:
            text = f.read()
        sizes.append(len(text))
        journals.add(text)
        index = json.loads(text)  # what a crash right now would find: every acknowledged block
        assert index["dirty"] and index["present"][0][0] == 0 and len(index["present"]) == 1
        assert index["present"][0][1] >= (i + 1) * MiB // cache.block_size - 1
    assert max(sizes) - min(sizes) < 40, sizes  # not growing with the file
    assert len(journals) <= blocks // JOURNAL_AHEAD + 2, len(journals)  # not one per write
    cache.close()

    again = DataCache(root, capacity=256 * MiB)  # recovered whole, and no block past its end
    [rec] = again.recovered
    assert rec.present == rec.dirty == set(range(blocks))
    again.close()

    def one_written_file(key: str, nblocks: int) -> tuple[str, str, int]:
        """(cache root, the file's path, block size) of a closed cache holding one new file."""
        root = tempfile.mkdtemp()
        c = DataCache(root, capacity=64 * MiB)
        e = c.create("b", key)
        e.write(0, b"c" * (nblocks * c.block_size), lambda off, n: None)
        c.close()
        return root, e.path, c.block_size

    root, path, bs = one_written_file("old", 4)
    with open(path + ".json", "w") as f:  # as an older version wrote it, clean
        json.dump({"bucket": "b", "key": "old", "etag": "e1", "size": 4 * bs,
                   "block_size": bs, "present": [0, 1, 3]}, f)
    adopted = DataCache(root, capacity=64 * MiB)
    assert adopted.open("b", "old", "e1", 4 * bs).present == {0, 1, 3}
    adopted.close()

    root, path, bs = one_written_file("torn", 3)
    meta = json.load(open(path + ".json"))
    meta["dirty_blocks"] = [[5, 2]]
    json.dump(meta, open(path + ".json", "w"))
    recovered = DataCache(root, capacity=64 * MiB)
    [rec] = recovered.recovered
    assert rec.dirty == rec.present == {0, 1, 2}
    recovered.close()
