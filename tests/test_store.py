"""RemoteStore against a real SeaweedFS: every method, every failure the issue names."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time

import pytest

import s3mount as s3
from conftest import (ACCESS_KEY, BUCKET, OTHER_BUCKET, SECRET_KEY, free_port, make_file,
                      resident_bytes, wait_resident_at_most)
from s3mount.store import AccessDeniedError, NoSuchBucketError, TransportError
from s3mount.store.config import MiB


def put_text(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_write_exists_read_delete(store, workdir, prefix):
    src = put_text(workdir, "a.txt", "hello\n")
    key = prefix + "a.txt"
    assert store.write(src, key, headers={"x-amz-meta-color": "blue", "Content-Type": "text/plain"})
    assert store.exists(key) == (True, {"x-amz-meta-color": "blue"})
    dst = os.path.join(workdir, "back.txt")
    assert store.read(key, dst) == (True, {"x-amz-meta-color": "blue"})
    assert open(dst).read() == "hello\n"
    assert store.client.head(BUCKET, key).content_type == "text/plain"
    assert store.delete(key)
    assert store.exists(key) == (False, {})


def test_s3name_with_other_bucket_and_no_bucket(store, workdir, prefix, seaweed):
    src = put_text(workdir, "b", "x")
    name = s3.S3Name(prefix + "b", bucket=OTHER_BUCKET)
    assert store.write(src, name)
    assert store.exists(name)[0]
    assert not store.exists(prefix + "b")[0]  # not in the default bucket
    nobucket = s3.RemoteStore(seaweed.connection(default_bucket=None))
    with pytest.raises(ValueError):
        nobucket.exists("key")
    with pytest.raises(ValueError):
        nobucket.write(src, "key")


def test_empty_object(store, workdir, prefix):
    src = put_text(workdir, "empty", "")
    assert store.write(src, prefix + "empty")
    dst = os.path.join(workdir, "empty.back")
    assert store.read(prefix + "empty", dst) == (True, {})
    assert os.path.getsize(dst) == 0


def test_missing_key(store, workdir, prefix):
    dst = put_text(workdir, "keep", "precious")
    assert store.read(prefix + "nope", dst) == (False, {})
    assert open(dst).read() == "precious"  # never clobbered
    assert [n for n in os.listdir(workdir) if n != "keep"] == []  # no temp file left
    assert store.exists(prefix + "nope") == (False, {})
    assert store.delete(prefix + "nope")  # S3 semantics: deleting nothing succeeds
    assert not store.copy(prefix + "nope", prefix + "dst")
    assert not store.update_metadata(prefix + "nope", {"x-amz-meta-a": "b"})


def test_wrong_secret(seaweed, workdir, prefix, caplog):
    bad = s3.RemoteStore(seaweed.connection(secret_access_key="not-the-secret-0123456789"))
    src = put_text(workdir, "c", "x")
    with caplog.at_level(logging.DEBUG):
        assert bad.write(src, prefix + "c") is False
        with pytest.raises(s3.RemoteStoreError) as info:
            bad.exists(prefix + "c")
        assert bad.read(prefix + "c", os.path.join(workdir, "d")) == (False, {})
        assert bad.delete(prefix + "c") is False
    assert isinstance(info.value, AccessDeniedError)
    assert info.value.status == 403
    assert "not-the-secret" not in caplog.text
    assert "s3mountTestSecret" not in caplog.text
    assert "status=403" in caplog.text


def test_missing_bucket(seaweed, workdir):
    st = s3.RemoteStore(seaweed.connection(default_bucket="no-such-bucket-here"))
    src = put_text(workdir, "e", "x")
    assert st.write(src, "k") is False
    assert st.read("k", os.path.join(workdir, "f")) == (False, {})
    with pytest.raises(NoSuchBucketError):
        st.exists("k")


def test_server_down_fails_in_bounded_time(workdir):
    port = free_port()  # nothing listens here
    conn = s3.S3Connection(access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                           endpoint=f"http://127.0.0.1:{port}", default_bucket=BUCKET,
                           max_retry_time=3.0, max_attempts=4)
    st = s3.RemoteStore(conn)
    src = put_text(workdir, "g", "x")
    t0 = time.monotonic()
    assert st.write(src, "k") is False
    with pytest.raises(TransportError):
        st.exists("k")
    assert st.read("k", os.path.join(workdir, "h")) == (False, {})
    assert time.monotonic() - t0 < 15


def test_stalled_server_times_out(proxy, seaweed, workdir, prefix):
    conn = seaweed.connection(endpoint=proxy.endpoint, read_timeout=1.0, max_attempts=2,
                              max_retry_time=5.0)
    st = s3.RemoteStore(conn)
    proxy.rule = lambda m, t, h: ("stall", 3)
    t0 = time.monotonic()
    with pytest.raises(TransportError):
        st.exists(prefix + "x")
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("fault", [("status", 500, "InternalError"), ("status", 503, "SlowDown"),
                                   ("reset",), ("truncate",), ("reset_mid_body",)])
def test_transient_faults_are_retried(proxy, seaweed, workdir, prefix, fault):
    st = s3.RemoteStore(seaweed.connection(endpoint=proxy.endpoint, retry_base_delay=0.01))
    src = os.path.join(workdir, "r")
    data = make_file(src, 300_000, seed=3)
    key = prefix + "retry"
    proxy.fail_next(fault, fault, fault)
    assert st.write(src, key)
    proxy.fail_next(fault, fault)
    dst = os.path.join(workdir, "r.back")
    ok, _ = st.read(key, dst)
    assert ok and open(dst, "rb").read() == data
    assert sum(proxy.injected.values()) >= 3
    # (a reset after a complete empty PUT answer is no fault for the client; reads see all of them)
    assert st.transport.stats.snapshot()["retries"] >= 2


def test_persistent_5xx_gives_up(proxy, seaweed, workdir, prefix):
    st = s3.RemoteStore(seaweed.connection(endpoint=proxy.endpoint, retry_base_delay=0.01,
                                           max_attempts=3))
    proxy.rule = lambda m, t, h: ("status", 503, "SlowDown")
    src = put_text(workdir, "p", "x")
    assert st.write(src, prefix + "p") is False
    assert proxy.injected["status-503"] == 3


def test_corrupted_download_is_detected_and_not_installed(proxy, seaweed, store, workdir, prefix):
    src = os.path.join(workdir, "c")
    data = make_file(src, 200_000, seed=4)
    assert store.write(src, prefix + "c")
    st = s3.RemoteStore(seaweed.connection(endpoint=proxy.endpoint, retry_base_delay=0.01))
    proxy.rule = lambda m, t, h: ("corrupt",) if m == "GET" else None
    dst = put_text(workdir, "old", "old content")
    assert st.read(prefix + "c", dst) == (False, {})
    assert open(dst).read() == "old content"
    proxy.rule = None
    assert st.read(prefix + "c", dst)[0]
    assert open(dst, "rb").read() == data


def test_multipart_roundtrip_with_parallel_parts(seaweed, workdir, prefix):
    conn = seaweed.connection(multipart_threshold=8 * MiB, part_size=5 * MiB, max_concurrency=4)
    st = s3.RemoteStore(conn)
    src = os.path.join(workdir, "big")
    make_file(src, 23 * MiB + 17, seed=5)
    key = prefix + "big"
    assert st.write(src, key, headers={"x-amz-meta-kind": "big", "content-type": "application/x-big"})
    info = st.client.head(BUCKET, key)
    assert info.is_multipart and info.etag.endswith("-5")
    assert info.size == 23 * MiB + 17
    assert info.metadata == {"x-amz-meta-kind": "big"}
    assert info.content_type == "application/x-big"
    dst = os.path.join(workdir, "big.back")
    assert st.read(key, dst) == (True, {"x-amz-meta-kind": "big"})
    assert _sha(src) == _sha(dst)
    assert st.client.list_multipart_uploads(BUCKET, prefix) == []


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_download_leaves_little_in_the_page_cache(seaweed, workdir, prefix):
    """README claim: read() hands finished ranges to writeback and drops them from the page
    cache (drop_download_cache, default true); false keeps the whole file cached."""
    src = os.path.join(workdir, "big")
    make_file(src, 96 * MiB, seed=9)
    key = prefix + "big"
    conn = seaweed.connection(multipart_threshold=8 * MiB, part_size=8 * MiB, max_concurrency=4)
    st = s3.RemoteStore(conn)
    assert st.write(src, key)
    dropped = os.path.join(workdir, "dropped")
    assert st.read(key, dropped)[0]
    # The rest leaves once the writeback thread has seen it to disk (read() does not wait).
    assert wait_resident_at_most(dropped, 72 * MiB) <= 72 * MiB
    assert _sha(src) == _sha(dropped)
    kept = os.path.join(workdir, "kept")
    assert s3.RemoteStore(seaweed.connection(part_size=8 * MiB, max_concurrency=4,
                                             drop_download_cache=False)).read(key, kept)[0]
    # Measured before the sha check of `kept`, which would read it all back into the cache.
    assert resident_bytes(kept) == 96 * MiB
    assert _sha(src) == _sha(kept)
    assert st.delete(key)


def test_page_recycler_advises_each_range_again_once_it_is_written_back(monkeypatch):
    """docs/SEMANTICS.md claim 9: a range is advised when done, and again by the writeback
    thread once sync_file_range has waited for it to reach the disk (dirty pages are not
    dropped by the first advice). The caller's fd may close at once: the thread uses a dup."""
    from s3mount import pagecache
    calls = []
    lock = threading.Lock()
    handed_over = threading.Event()

    def fadvise(fd, off, n, advice):
        with lock:
            calls.append((threading.current_thread().name, "advise", off, n))

    def sync(fd, off, n):
        os.fstat(fd)  # the thread's own descriptor, still open after the caller closed its own
        handed_over.wait(10)  # a slow disk: the other ranges arrive meanwhile and are merged
        with lock:
            calls.append((threading.current_thread().name, "sync", off, n))
    monkeypatch.setattr(pagecache, "_fadvise", fadvise)
    monkeypatch.setattr(pagecache, "_sync_file_range", sync)
    r = pagecache.PageRecycler()
    for n in range(8):
        fd = os.open("/dev/null", os.O_RDONLY)
        r.done(fd, n * 8 * MiB, 8 * MiB)
        os.close(fd)
    handed_over.set()
    assert r.wait_idle(10)
    caller = threading.current_thread().name
    assert [c[1:] for c in calls if c[0] == caller] == [("advise", n * 8 * MiB, 8 * MiB)
                                                        for n in range(8)]
    thread_calls = [c[1:] for c in calls if c[0] != caller]
    # Each synced range is advised again right after its sync; every byte once, in order.
    assert thread_calls[0::2] == [c for c in thread_calls if c[0] == "sync"]
    assert thread_calls[1::2] == [("advise",) + c[1:] for c in thread_calls[0::2]]
    synced = [c[1:] for c in thread_calls[0::2]]
    assert [off for off, _ in synced] == [sum(n for _, n in synced[:i]) for i in range(len(synced))]
    assert sum(n for _, n in synced) == 64 * MiB
    assert len(synced) <= 2  # at most the first range(s) alone, then the rest merged as one
    assert r._fd == -1  # the dup is closed when nothing is pending


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_page_recycler_drops_dirty_ranges_once_written(workdir):
    """The real kernel: 64 MiB freshly written (dirty) leave the page cache once handed over,
    however slow the disk, and the file keeps the data."""
    from s3mount import pagecache
    path = os.path.join(workdir, "dirty")
    data = os.urandom(MiB)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    r = pagecache.PageRecycler()
    for n in range(64):
        os.pwrite(fd, data, n * MiB)
        if n % 8 == 7:
            r.done(fd, (n - 7) * MiB, 8 * MiB)
    os.close(fd)
    assert r.wait_idle(60)
    assert resident_bytes(path) <= MiB
    with open(path, "rb") as f:
        assert all(f.read(MiB) == data for _ in range(64))


def test_failed_part_aborts_the_upload(proxy, seaweed, workdir, prefix):
    conn = seaweed.connection(endpoint=proxy.endpoint, multipart_threshold=8 * MiB,
                              part_size=5 * MiB, max_concurrency=2, max_attempts=2,
                              retry_base_delay=0.01)
    st = s3.RemoteStore(conn)
    src = os.path.join(workdir, "big")
    make_file(src, 16 * MiB, seed=6)
    proxy.rule = lambda m, t, h: ("status", 400, "InvalidPart") if "partNumber=3" in t else None
    assert st.write(src, prefix + "big") is False
    proxy.rule = None
    assert st.client.list_multipart_uploads(BUCKET, prefix) == []
    assert st.exists(prefix + "big") == (False, {})


@pytest.mark.slow
def test_one_gib_roundtrip(store, workdir, prefix):
    src = os.path.join(workdir, "gib")
    make_file(src, 1024 * MiB, seed=7)
    key = prefix + "gib"
    t0 = time.monotonic()
    assert store.write(src, key)
    up = time.monotonic() - t0
    info = store.client.head(BUCKET, key)
    assert info.size == 1024 * MiB and info.is_multipart
    dst = os.path.join(workdir, "gib.back")
    t0 = time.monotonic()
    assert store.read(key, dst)[0]
    down = time.monotonic() - t0
    assert _sha(src) == _sha(dst)
    print(f"1 GiB: up {1024 / up:.0f} MiB/s, down {1024 / down:.0f} MiB/s")
    assert store.delete(key)


ODD_KEYS = ["unicode-ünïcødé-日本語.txt", "with space and+plus", "percent%20sign%",
            "question?mark", "hash#tag", "semi;colon,comma=eq&amp", "tilde~star*quote'",
            "/".join(["k" * 200] * 4) + "-tail"]


@pytest.mark.parametrize("name", ODD_KEYS)
def test_odd_keys_roundtrip(store, workdir, prefix, name):
    key = (prefix + name)[:1024] if len((prefix + name).encode()) > 1024 else prefix + name
    src = put_text(workdir, "odd", name)
    assert store.write(src, key, {"x-amz-meta-k": "v"})
    assert store.exists(key) == (True, {"x-amz-meta-k": "v"})
    dst = os.path.join(workdir, "odd.back")
    assert store.read(key, dst)[0]
    assert open(dst).read() == name
    listed = [o.key for p in store.client.list_all(BUCKET, prefix, None) for o in p.objects]
    assert key in listed
    assert store.delete(key)


def test_key_of_exactly_1024_bytes_and_longer(store, workdir, prefix, proxy, seaweed):
    # SeaweedFS also caps each path segment at 255 bytes, so the long key has segments.
    key = prefix + "/".join(["x" * 200] * 5)
    key += "y" * (1024 - len(key))
    src = put_text(workdir, "k", "x")
    assert store.write(src, key)
    assert store.exists(key)[0]
    st = s3.RemoteStore(seaweed.connection(endpoint=proxy.endpoint))
    with pytest.raises(ValueError, match="1024"):
        st.write(src, key + "y")
    with pytest.raises(ValueError, match="1024"):
        st.exists("é" * 513)
    assert proxy.seen == []  # refused before any request


@pytest.mark.parametrize("key", ["a//b", "./a", "a/./b", "a/../b", "..", "a/..", "/lead", "trail/"])
def test_keys_seaweedfs_cannot_hold_roundtrip_on_moto(moto, workdir, key):
    st = s3.RemoteStore(moto.connection())
    src = put_text(workdir, "m", key)
    assert st.write(src, key, {"x-amz-meta-k": "v"})
    assert st.exists(key) == (True, {"x-amz-meta-k": "v"})
    dst = os.path.join(workdir, "m.back")
    assert st.read(key, dst)[0] and open(dst).read() == key
    listed = [o.key for p in st.client.list_all(BUCKET, "", None) for o in p.objects]
    assert key in listed
    assert st.delete(key)
    assert st.exists(key) == (False, {})


def test_update_metadata_keeps_content_headers(store, client, workdir, prefix):
    src = put_text(workdir, "u", "body")
    key = prefix + "u"
    assert store.write(src, key, {"x-amz-meta-state": "unprocessed", "content-type": "text/csv",
                                  "cache-control": "max-age=60",
                                  "content-disposition": "attachment"})
    before = client.head(BUCKET, key)
    assert store.update_metadata(key, {"x-amz-meta-state": "processed", "x-amz-meta-n": "1"})
    after = client.head(BUCKET, key)
    assert after.metadata == {"x-amz-meta-state": "processed", "x-amz-meta-n": "1"}
    assert after.content_type == "text/csv"
    assert after.headers.get("cache-control") == "max-age=60"
    assert after.headers.get("content-disposition") == "attachment"
    assert after.size == before.size
    dst = os.path.join(workdir, "u.back")
    assert store.read(key, dst) == (True, after.metadata)
    assert open(dst).read() == "body"
    # headers may override a content header
    assert store.update_metadata(key, {"x-amz-meta-state": "x", "content-type": "text/plain"})
    assert client.head(BUCKET, key).content_type == "text/plain"


def test_update_metadata_is_conditional_on_etag(store, client, workdir, prefix):
    key = prefix + "cond"
    assert store.write(put_text(workdir, "v1", "version one"), key, {"x-amz-meta-v": "1"})
    stale = client.head(BUCKET, key)
    assert store.write(put_text(workdir, "v2", "version two!"), key, {"x-amz-meta-v": "2"})
    with pytest.raises(s3.RemoteStoreError) as info:
        store.replace_metadata(BUCKET, key, {"x-amz-meta-v": "stale"}, info=stale)
    assert info.value.status == 412
    now = client.head(BUCKET, key)
    assert now.metadata == {"x-amz-meta-v": "2"}
    dst = os.path.join(workdir, "cond.back")
    store.read(key, dst)
    assert open(dst).read() == "version two!"


def test_update_metadata_of_empty_object(store, client, workdir, prefix):
    key = prefix + "zero"
    client.put(BUCKET, key, b"", {"x-amz-meta-a": "1", "content-type": "application/x-empty"})
    assert store.update_metadata(key, {"x-amz-meta-a": "2"})
    info = client.head(BUCKET, key)
    assert info.metadata == {"x-amz-meta-a": "2"}
    assert info.content_type == "application/x-empty"


def test_update_metadata_of_dir_marker_on_moto(moto):
    """SeaweedFS keeps no metadata on 'dir/' keys at all (docs/SEAWEEDFS.md); moto does, like AWS."""
    st = s3.RemoteStore(moto.connection())
    st.client.put(BUCKET, "dir/", b"", {"x-amz-meta-a": "1", "content-type": "application/x-directory"})
    assert st.update_metadata("dir/", {"x-amz-meta-a": "2"})
    info = st.client.head(BUCKET, "dir/")
    assert info.metadata == {"x-amz-meta-a": "2"}
    assert info.content_type == "application/x-directory"


def test_metadata_non_ascii_values_roundtrip(store, workdir, prefix):
    key = prefix + "meta"
    meta = {"x-amz-meta-name": "Zoë — 日本", "x-amz-meta-plain": "ascii"}
    assert store.write(put_text(workdir, "m", "x"), key, meta)
    assert store.exists(key) == (True, meta)


def test_copy_keeps_or_replaces_metadata(store, client, workdir, prefix):
    src_key = prefix + "src"
    assert store.write(put_text(workdir, "s", "payload"), src_key,
                       {"x-amz-meta-a": "1", "content-type": "text/x-src"})
    assert store.copy(src_key, prefix + "keep")
    keep = client.head(BUCKET, prefix + "keep")
    assert keep.metadata == {"x-amz-meta-a": "1"} and keep.content_type == "text/x-src"
    assert store.copy(src_key, prefix + "repl", headers={"x-amz-meta-b": "2"})
    repl = client.head(BUCKET, prefix + "repl")
    assert repl.metadata == {"x-amz-meta-b": "2"} and repl.content_type == "text/x-src"
    assert store.copy(src_key, s3.S3Name(prefix + "other", bucket=OTHER_BUCKET))
    assert store.exists(s3.S3Name(prefix + "other", bucket=OTHER_BUCKET)) == (True, {"x-amz-meta-a": "1"})
    dst = os.path.join(workdir, "copy.back")
    assert store.read(prefix + "repl", dst)[0] and open(dst).read() == "payload"


def test_multipart_copy_path(seaweed, workdir, prefix):
    """Objects over the single-copy limit (5 GB on S3) copy by UploadPartCopy; the limit is
    lowered here so a small object takes that path."""
    st = s3.RemoteStore(seaweed.connection())
    st.transfer.max_single_copy = 6 * MiB
    st.transfer.copy_part_size = 5 * MiB
    src = os.path.join(workdir, "mc")
    make_file(src, 12 * MiB + 5, seed=8)
    assert st.write(src, prefix + "mc", {"x-amz-meta-a": "1", "content-type": "text/x-mc"})
    assert st.copy(prefix + "mc", prefix + "mc2")
    info = st.client.head(BUCKET, prefix + "mc2")
    assert info.is_multipart and info.size == 12 * MiB + 5
    assert info.metadata == {"x-amz-meta-a": "1"} and info.content_type == "text/x-mc"
    dst = os.path.join(workdir, "mc.back")
    assert st.read(prefix + "mc2", dst)[0]
    assert _sha(src) == _sha(dst)
    assert st.update_metadata(prefix + "mc2", {"x-amz-meta-a": "2"})
    assert st.exists(prefix + "mc2") == (True, {"x-amz-meta-a": "2"})


def test_listing_paginates_with_delimiter(client, prefix):
    for i in range(7):
        client.put(BUCKET, f"{prefix}f{i}", b"x" * i)
    client.put(BUCKET, f"{prefix}sub/a", b"")
    client.put(BUCKET, f"{prefix}sub2/deep/b", b"")
    pages = []
    token = None
    while True:
        page = client.list_page(BUCKET, prefix, "/", token, max_keys=3)
        pages.append(page)
        token = page.next_token
        if not token:
            break
    assert len(pages) >= 3
    keys = [o.key for p in pages for o in p.objects]
    dirs = [d for p in pages for d in p.prefixes]
    assert keys == [f"{prefix}f{i}" for i in range(7)]
    assert dirs == [f"{prefix}sub/", f"{prefix}sub2/"]
    assert [o.size for p in pages for o in p.objects] == list(range(7))


def test_conditional_put_and_ranged_get(client, prefix):
    key = prefix + "cp"
    etag = client.put(BUCKET, key, b"0123456789")
    data, info = client.get_bytes(BUCKET, key, 2, 5)
    assert data == b"234" and info.size == 10
    with pytest.raises(s3.RemoteStoreError) as e:
        client.get_bytes(BUCKET, key, 0, 2, if_match="0" * 32)
    assert e.value.status == 412
    assert client.get_bytes(BUCKET, key, 0, 2, if_match=etag)[0] == b"01"


def test_credentials_from_environment_chain(seaweed, workdir, prefix, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.path.join(workdir, "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.path.join(workdir, "none"))
    conn = s3.S3Connection(default_bucket=BUCKET)
    assert conn.credential_source == "env"
    st = s3.RemoteStore(conn)
    assert st.write(put_text(workdir, "env", "x"), prefix + "env")
    assert st.exists(prefix + "env")[0]


def test_credentials_from_profile(seaweed, workdir, prefix, monkeypatch):
    creds = os.path.join(workdir, "credentials")
    with open(creds, "w") as f:
        f.write(f"[other]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.path.join(workdir, "none"))
    monkeypatch.setenv("AWS_PROFILE", "other")
    conn = s3.S3Connection(endpoint=seaweed.endpoint, default_bucket=BUCKET)
    assert conn.credential_source == "shared-credentials-file"
    assert s3.RemoteStore(conn).write(put_text(workdir, "prof", "x"), prefix + "prof")


def _sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_requests_survive_a_closed_connection_pool(store, prefix):
    """Requests go to the session's urllib3 pools directly; when the pool manager closes one
    (it keeps 4 hosts; virtual-hosted addressing has a host per bucket), the next request
    takes a fresh pool instead of failing."""
    client = store.client
    client.put(BUCKET, prefix + "pool", b"abc")
    assert client.t._pools
    for p in client.t._pools.values():  # what eviction does (urllib3 < 2.8 also closes)
        p.close()
    client.t._adapter.poolmanager.clear()
    assert client.get_bytes(BUCKET, prefix + "pool")[0] == b"abc"
    assert all(p.pool is not None for p in client.t._pools.values())
    store.delete(prefix + "pool")


def test_list_all_reads_ahead_and_keeps_order(client, prefix):
    from s3mount.store import xml
    names = [f"{prefix}k{i:02d}" for i in range(20)] + [f"{prefix}z&<{i}" for i in range(3)]
    for n in names:
        client.put(BUCKET, n, b"")
    pages = list(client.list_all(BUCKET, prefix, None, max_keys=3))
    assert [o.key for p in pages for o in p.objects] == sorted(names)
    assert len(pages) == 8 and all(p.next_token for p in pages[:-1]) and not pages[-1].next_token
    body = client._list_body(BUCKET, prefix, None, None, 3)
    assert xml.peek_next_token(body) == xml.parse_list_v2(body).next_token  # this server's form
    assert xml.peek_next_token(b"<IsTruncated>false</IsTruncated>") is None
    assert xml.peek_next_token(b"<IsTruncated>true</IsTruncated><NextContinuationToken>a&amp;b"
                               b"</NextContinuationToken>") == "a&b"


def _checksum_headers(proxy, method="PUT"):
    return [(t, {k: v for k, v in h.items() if k in ("content-md5", "x-amz-checksum-crc32",
                                                    "x-amz-checksum-algorithm")})
            for m, t, h in proxy.requests if m == method]


def test_uploads_carry_crc32_that_the_server_checks(proxy, seaweed, workdir, prefix):
    """README: uploads carry x-amz-checksum-crc32 (upload_checksum: auto); a body damaged on
    the way is refused by the server (BadDigest) and sent again."""
    conn = seaweed.connection(endpoint=proxy.endpoint, multipart_threshold=8 * MiB,
                              part_size=5 * MiB, max_concurrency=2, retry_base_delay=0.01)
    st = s3.RemoteStore(conn)
    src = os.path.join(workdir, "big")
    make_file(src, 12 * MiB, seed=21)
    damaged = []

    def rule(m, t, h):
        if m == "PUT" and ("partNumber=2" in t or t.endswith("small")) and len(damaged) < 2 \
                and not any(d == t for d in damaged):
            damaged.append(t)
            return ("corrupt_request",)
        return None
    proxy.rule = rule
    assert st.write(src, prefix + "big")
    small = put_text(workdir, "small", "hello crc")
    assert st.write(small, prefix + "small")
    proxy.rule = None
    assert proxy.injected["corrupt_request"] == 2
    sent = _checksum_headers(proxy)
    assert sent and all("x-amz-checksum-crc32" in h and "content-md5" not in h for _, h in sent)
    posts = [h for t, h in _checksum_headers(proxy, "POST") if t.endswith("uploads")]
    assert posts == [{"x-amz-checksum-algorithm": "CRC32"}]
    assert st.client.checksum.mode == "crc32"  # auto, confirmed by the server's echo
    back = os.path.join(workdir, "back")
    assert st.read(prefix + "big", back)[0] and _sha(back) == _sha(src)
    assert st.read(prefix + "small", back)[0] and open(back).read() == "hello crc"
    head = st.client.t.request("HEAD", BUCKET, prefix + "big", operation="HeadObject",
                               headers={"x-amz-checksum-mode": "ENABLED"})
    assert head.headers["x-amz-checksum-crc32"].endswith("-3")  # composite of 3 parts


def test_server_that_ignores_crc32_gets_content_md5(proxy, seaweed, workdir, prefix):
    """upload_checksum: auto falls back to Content-MD5 for good when an answer does not echo
    the CRC32 (a server that ignores checksum headers); the first upload is checked by ETag."""
    proxy.rule = lambda m, t, h: ("no_checksum_echo",)
    conn = seaweed.connection(endpoint=proxy.endpoint, multipart_threshold=8 * MiB,
                              part_size=5 * MiB, max_concurrency=1)
    st = s3.RemoteStore(conn)
    small = put_text(workdir, "small", "first")
    assert st.write(small, prefix + "a")
    assert st.client.checksum.mode == "md5"
    src = os.path.join(workdir, "big")
    make_file(src, 12 * MiB, seed=22)
    assert st.write(src, prefix + "big")
    sent = _checksum_headers(proxy)
    assert "x-amz-checksum-crc32" in sent[0][1]
    assert all(list(h) == ["content-md5"] for _, h in sent[1:])
    back = os.path.join(workdir, "back")
    assert st.read(prefix + "big", back)[0] and _sha(back) == _sha(src)


def test_upload_checksum_md5_sends_content_md5_only(proxy, seaweed, workdir, prefix):
    conn = seaweed.connection(endpoint=proxy.endpoint, multipart_threshold=8 * MiB,
                              part_size=5 * MiB, upload_checksum="md5")
    st = s3.RemoteStore(conn)
    src = os.path.join(workdir, "big")
    make_file(src, 11 * MiB, seed=23)
    assert st.write(src, prefix + "big")
    assert all(list(h) == ["content-md5"] for _, h in _checksum_headers(proxy))
    assert [h for t, h in _checksum_headers(proxy, "POST") if t.endswith("uploads")] == [{}]
    with pytest.raises(s3.ConfigError, match="upload_checksum"):
        seaweed.connection(upload_checksum="sha1")


@pytest.mark.parametrize("value", [
    "Thu, 03 Dec 2026 07:05:12 GMT", "Mon, 01 Jan 1990 00:00:00 GMT", "Sat, 29 Feb 2020 23:59:59 GMT",
    "Thu, 3 Dec 2026 07:05:12 +0000", "Thursday, 03-Dec-26 07:05:12 GMT",
])
def test_http_date_reads_what_email_utils_reads(value):
    """Last-Modified in S3's fixed format takes the fast path; other forms go to email.utils,
    and both give the same seconds."""
    import email.utils

    from s3mount.store.objects import http_date
    assert http_date(value) == email.utils.parsedate_to_datetime(value).timestamp()


def test_http_date_that_nothing_reads_is_zero():
    from s3mount.store.objects import http_date
    assert http_date("yesterday") == 0.0
    assert http_date("Thu, 03 Dec 2026 07:05:xx GMT") == 0.0


def test_listing_times_parse_as_strptime_did():
    """LastModified is sliced (with the day's epoch cached) instead of strptime'd; the answers
    are the same, fractions included, and what is not a date still raises."""
    import calendar
    import time as _time
    from s3mount.store.xml import parse_http_date_iso

    def by_strptime(text):
        secs = calendar.timegm(_time.strptime(text.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S"))
        frac = text.split(".", 1)[1].rstrip("Z") if "." in text else ""
        return float(secs) + (float("0." + frac) if frac.isdigit() else 0.0)

    for text in ("2024-01-02T03:04:05.000Z", "2024-01-02T03:04:05Z", "1970-01-01T00:00:00Z",
                 "2026-12-03T14:50:01.1234567Z", "2024-02-29T23:59:59.999Z", "2024-01-02T03:04:05.Z"):
        assert parse_http_date_iso(text) == by_strptime(text), text
    for bad in ("2024-13-02T03:04:05Z", "2024-01-02T25:04:05Z", "yesterday"):
        with pytest.raises(ValueError):
            parse_http_date_iso(bad)


def test_upload_checksum_is_zlibs_crc32_for_any_body():
    """The CRC32 sent with uploads (ISA-L's when installed) is the one S3 computes: zlib's."""
    import base64
    import zlib
    from s3mount.store.checksums import content_crc32
    data = os.urandom(3 * MiB + 17)
    for body in (b"", b"a", data, memoryview(data)[5:2 * MiB + 3], bytearray(data[:4097])):
        want = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
        assert content_crc32(body) == want


def test_listing_xml_parses_alike_with_and_without_its_namespace():
    """parse() drops the root's default namespace before parsing (store/xml.py); documents
    with other namespace declarations, or none, parse as before."""
    from s3mount.store import xml
    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    inner = ("<Name>b</Name><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
             "<NextContinuationToken>t&amp;1</NextContinuationToken>"
             "<Contents><Key>a%2Fb+c</Key><LastModified>2026-12-03T10:00:00.000Z</LastModified>"
             "<ETag>&quot;e1&quot;</ETag><Size>5</Size><StorageClass>STANDARD</StorageClass>"
             "</Contents><Contents><Key>d</Key><Size></Size><ETag/></Contents>"
             "<CommonPrefixes><Prefix>p%2F</Prefix></CommonPrefixes>")
    docs = [f"<ListBucketResult {ns}>{inner}</ListBucketResult>",
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult {ns}>{inner}</ListBucketResult>',
            f"<ListBucketResult>{inner}</ListBucketResult>",
            f'<ListBucketResult {ns}><Owner xmlns="urn:x"/>{inner}</ListBucketResult>',
            f'<x:ListBucketResult xmlns:x="urn:s3">{inner}</x:ListBucketResult>']
    for doc in docs:
        page = xml.parse_list_v2(doc.encode())
        assert [(o.key, o.size, o.etag, o.storage_class) for o in page.objects] == \
            [("a/b c", 5, "e1", "STANDARD"), ("d", 0, "", None)], doc
        assert page.objects[0].mtime == 1796292000.0 and page.objects[1].mtime == 0.0
        assert page.prefixes == ["p/"] and page.next_token == "t&1", doc
