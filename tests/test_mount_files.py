"""File semantics through a real FUSE mount on SeaweedFS (docs/SEMANTICS.md claims 6-11, 17)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time

import pytest

from conftest import BUCKET, make_file, wait_resident_at_most
from mountutil import Mount

MiB = 1024 * 1024


def test_prefix_mount(mount, store, prefix, workdir):
    with open(mount.path("hello.txt"), "w") as f:
        f.write("hi\n")
    assert store.exists(prefix + "hello.txt")[0]
    store.client.put(BUCKET, prefix + "from-s3.txt", b"remote")
    time.sleep(1.1)
    assert sorted(os.listdir(mount.mnt)) == ["from-s3.txt", "hello.txt"]
    assert open(mount.path("from-s3.txt")).read() == "remote"


def test_open_flags(mount):
    p = mount.path("f")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.write(fd, b"hello")
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    fd = os.open(p, os.O_RDWR)
    assert os.read(fd, 5) == b"hello"
    os.pwrite(fd, b"J", 0)
    os.close(fd)
    assert open(p, "rb").read() == b"Jello"
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b" world")
    os.close(fd)
    assert open(p, "rb").read() == b"Jello world"
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"new")
    os.close(fd)
    assert open(p, "rb").read() == b"new"
    fd = os.open(p, os.O_RDONLY)
    with pytest.raises(OSError) as e:
        os.write(fd, b"x")
    assert e.value.errno == errno.EBADF
    os.close(fd)
    assert os.stat(p).st_mode & 0o777 == 0o640


def test_write_at_offsets_and_holes(mount, store, prefix, workdir):
    p = mount.path("holes")
    with open(p, "wb") as f:
        f.write(b"A" * 10)
        f.seek(3 * 1024 * 1024 + 5)
        f.write(b"B" * 7)
    data = open(p, "rb").read()
    assert len(data) == 3 * 1024 * 1024 + 12
    assert data[:10] == b"A" * 10 and data[10:-7] == b"\0" * (len(data) - 17)
    back = os.path.join(workdir, "holes")
    assert store.read(prefix + "holes", back)[0]
    assert open(back, "rb").read() == data


def test_close_uploads_before_returning(mount, store, prefix, workdir):
    src = os.path.join(workdir, "src")
    data = make_file(src, 40 * 1024 * 1024 + 3, seed=11)  # multipart
    with open(src, "rb") as fin, open(mount.path("big"), "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
    # No sleep: the object must be complete in S3 the moment close() returned.
    back = os.path.join(workdir, "back")
    ok, _ = store.read(prefix + "big", back)
    assert ok and open(back, "rb").read() == data
    info = store.client.head(BUCKET, prefix + "big")
    assert info.is_multipart and info.size == len(data)


def test_reads_fetch_ranges_and_reuse(seaweed, proxy, store, prefix, workdir):
    src = os.path.join(workdir, "obj")
    data = make_file(src, 32 * 1024 * 1024, seed=12)
    assert store.write(src, prefix + "obj")
    with Mount(proxy.endpoint, BUCKET, prefix.rstrip("/"), workdir=os.path.join(workdir, "m")) as m:
        proxy.reset()
        with open(m.path("obj"), "rb") as f:
            f.seek(20 * 1024 * 1024 + 100)
            assert f.read(4096) == data[20 * 1024 * 1024 + 100: 20 * 1024 * 1024 + 4196]
        fetched = _range_bytes(proxy)
        print("fetched", fetched, proxy.ranges)
        assert 0 < fetched <= 4 * 1024 * 1024  # a few 1 MiB blocks of a 32 MiB object
        proxy.seen.clear()
        os.system("echo 3 > /proc/sys/vm/drop_caches 2>/dev/null")  # make the kernel ask again
        with open(m.path("obj"), "rb") as f:
            f.seek(20 * 1024 * 1024 + 100)
            assert f.read(4096) == data[20 * 1024 * 1024 + 100: 20 * 1024 * 1024 + 4196]
        gets = [t for meth, t in proxy.seen if meth == "GET" and "list-type" not in t]
        assert gets == []  # same ETag: served from the cache file


def _range_bytes(proxy) -> int:
    total = 0
    for meth, target, rng in proxy.ranges:
        if meth == "GET" and "list-type" not in target:
            a, b = rng.split("=")[1].split("-")
            total += int(b) - int(a) + 1
    return total


def test_truncate(mount, store, prefix, workdir):
    p = mount.path("t")
    with open(p, "wb") as f:
        f.write(b"0123456789")
    os.truncate(p, 4)  # closed file: uploaded before returning
    assert store.client.get_bytes(BUCKET, prefix + "t")[0] == b"0123"
    os.truncate(p, 8)
    assert store.client.get_bytes(BUCKET, prefix + "t")[0] == b"0123\0\0\0\0"
    with open(p, "r+b") as f:
        f.truncate(2)
        f.seek(0, 2)
        f.write(b"XY")
    assert open(p, "rb").read() == b"01XY"
    assert store.client.get_bytes(BUCKET, prefix + "t")[0] == b"01XY"


def test_unlink_open_file_keeps_reading(mount, store, prefix, workdir):
    src = os.path.join(workdir, "u")
    data = make_file(src, 5 * 1024 * 1024, seed=13)
    assert store.write(src, prefix + "u")
    time.sleep(1.1)
    with open(mount.path("u"), "rb") as f:
        assert f.read(100) == data[:100]
        os.unlink(mount.path("u"))
        assert not os.path.exists(mount.path("u"))
        assert store.exists(prefix + "u") == (False, {})
        f.seek(4 * 1024 * 1024)
        assert f.read() == data[4 * 1024 * 1024:]
    assert store.exists(prefix + "u") == (False, {})  # nothing re-uploaded at close


def test_concurrent_handles_share_data(mount):
    p = mount.path("shared")
    with open(p, "wb") as w:
        w.write(b"x" * 10)
        w.flush()
        with open(p, "rb") as r:
            assert r.read() == b"x" * 10
    errors = []

    def writer(i):
        try:
            with open(p, "r+b") as f:
                for j in range(20):
                    f.seek(i * 100 + j * 5)
                    f.write(str(i).encode() * 5)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = open(p, "rb").read()
    for i in range(4):
        assert data[i * 100: i * 100 + 100] == str(i).encode() * 100


def test_failed_upload_returns_eio_and_keeps_data(seaweed, proxy, store, prefix, workdir):
    config = {"max_attempts": 2, "retry_base_delay": 0.01, "max_retry_time": 2.0}
    with Mount(proxy.endpoint, BUCKET, prefix.rstrip("/"), config=config,
               workdir=os.path.join(workdir, "m")) as m:
        p = m.path("precious")
        proxy.rule = lambda meth, t, h: ("status", 503, "SlowDown") if meth == "PUT" else None
        f = open(p, "wb")
        f.write(b"do not lose me")
        with pytest.raises(OSError) as e:
            f.close()
        assert e.value.errno == errno.EIO
        assert store.exists(prefix + "precious") == (False, {})
        assert open(p, "rb").read() == b"do not lose me"  # still there, locally
        assert "data kept in cache file" in m.log_text()
        proxy.rule = None
        fd = os.open(p, os.O_RDWR)
        os.fsync(fd)  # the retry
        os.close(fd)
        assert store.client.get_bytes(BUCKET, prefix + "precious")[0] == b"do not lose me"


def test_statfs(mount):
    st = os.statvfs(mount.mnt)
    assert st.f_bsize == 4096 and st.f_namemax == 255 and st.f_bavail > 1 << 30


def test_external_change_visible_after_ttl(mount, store, prefix):
    p = mount.path("ext")
    with open(p, "w") as f:
        f.write("one")
    assert open(p).read() == "one"
    store.client.put(BUCKET, prefix + "ext", b"two, longer")
    time.sleep(1.2)
    assert open(p).read() == "two, longer"
    store.client.delete(BUCKET, prefix + "ext")
    time.sleep(1.2)
    assert not os.path.exists(p)


def test_append_to_uncached_object_keeps_its_bytes(mount, store, prefix):
    """Regression (found by test_stateful): an append into the last, uncached block of an
    object must fetch that block's bytes first."""
    store.client.put(BUCKET, prefix + "log", b"line1\n")
    time.sleep(1.1)
    with open(mount.path("log"), "ab") as f:
        f.write(b"line2\n")
    assert open(mount.path("log"), "rb").read() == b"line1\nline2\n"
    assert store.client.get_bytes(BUCKET, prefix + "log")[0] == b"line1\nline2\n"
    store.client.put(BUCKET, prefix + "gap", b"x")
    time.sleep(1.1)
    with open(mount.path("gap"), "r+b") as f:
        f.seek(10)
        f.write(b"y")
    assert store.client.get_bytes(BUCKET, prefix + "gap")[0] == b"x" + b"\0" * 9 + b"y"


def test_concurrent_open_close_of_one_file_never_ebadf(mount):
    """Opens racing the last close of the same path get a live handle (SEMANTICS 6): a handle
    registered on a file whose last close had just given its cache file back read EBADF."""
    p = mount.path("shared")
    payload = os.urandom(300_000)
    with open(p, "wb") as f:
        f.write(payload)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(150):
                with open(p, "rb") as f:
                    assert f.read() == payload
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def rewriter() -> None:  # same bytes, so a reader may land on either version
        try:
            for _ in range(30):
                with open(p, "r+b") as f:
                    f.write(payload[:10])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(8)] + [threading.Thread(target=rewriter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Threads", "VmRSS"):
                out[k] = int(v.split()[0])
    return out


def test_many_callbacks_keep_threads_and_memory_bounded(mount):
    """Every libfuse worker keeps one Python thread state for good (fuse_ops.py): 8 readers
    making 40,000 FUSE calls neither add threads past libfuse's 10 workers nor grow memory."""
    data = os.urandom(4 * 1024 * 1024)
    with open(mount.path("calls"), "wb") as f:
        f.write(data)
    fd = os.open(mount.path("calls"), os.O_RDONLY)
    os.pread(fd, 4096, 0)
    before = _proc_status(mount.proc.pid)
    errors = []

    def reader(seed):
        import random
        rng = random.Random(seed)
        for _ in range(5000):
            off = rng.randrange(0, len(data) - 4096)
            if os.pread(fd, 100, off) != data[off:off + 100]:
                errors.append(off)
            os.stat(mount.path("calls"))
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(fd)
    after = _proc_status(mount.proc.pid)
    assert not errors
    assert after["Threads"] <= before["Threads"] + 10
    assert after["VmRSS"] - before["VmRSS"] < 32 * 1024  # KiB


def _cache_file_resident(m: Mount, size: int, limit: int) -> int:
    """The cache file's resident bytes, once at most `limit` (the writeback thread drops a
    range only when the disk has it), or after a minute."""
    out = subprocess.run(["find", m.cache, "-type", "f", "-size", f"{size // 1024}k"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 1, out
    return wait_resident_at_most(out[0], limit)


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_streamed_cache_file_pages_are_recycled(mount, store, prefix):
    """SEMANTICS claim 9: uploaded parts of a sequentially written file, and what a sequential
    reader has passed, leave the cache file's page cache (the data stays in the file)."""
    size = 96 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    with open(mount.path("big"), "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    assert _cache_file_resident(mount, size, 72 * MiB) <= 72 * MiB
    mount.restart()  # an empty cache: every byte is fetched again
    with open(mount.path("big"), "rb") as f:
        n = 0
        while chunk := f.read(1024 * 1024):
            assert chunk == block
            n += len(chunk)
    assert n == size
    assert _cache_file_resident(mount, size, 72 * MiB) <= 72 * MiB
    os.system("echo 3 > /proc/sys/vm/drop_caches 2>/dev/null")  # read back from the file itself
    with open(mount.path("big"), "rb") as f:
        f.seek(5 * 1024 * 1024)
        assert f.read(1024 * 1024) == block
