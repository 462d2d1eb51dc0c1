"""Names through a real mount (docs/SEMANTICS.md claims 1-5, 12-16)."""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest

import s3mount as s3
from conftest import BUCKET
from mountutil import Mount


def test_mkdir_writes_marker(mount, store, prefix):
    os.mkdir(mount.path("d"), 0o755)
    info = store.client.head(BUCKET, prefix + "d/")
    assert info.size == 0
    assert stat.S_ISDIR(os.stat(mount.path("d")).st_mode)
    with pytest.raises(FileExistsError):
        os.mkdir(mount.path("d"))


def test_new_directory_and_link_need_no_request_to_stat(mount, store, prefix):
    """SEMANTICS 2 and 13: libfuse stats what mkdir and symlink made for the kernel's reply;
    that stat, and the caller's own, come from the PUT's answer: no HEAD, no listing."""
    from test_mount_listing import _delta, _requests
    os.listdir(mount.mnt)  # the parent's listing answers the lookups of the new names
    before = _requests(mount)
    os.mkdir(mount.path("fresh"), 0o750)
    st = os.stat(mount.path("fresh"))
    os.symlink("somewhere", mount.path("ln"))
    lst = os.lstat(mount.path("ln"))
    got = _delta(before, _requests(mount))
    assert got == {"PutObject": 2}, got
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    assert stat.S_ISLNK(lst.st_mode) and lst.st_size == len("somewhere")
    assert os.readlink(mount.path("ln")) == "somewhere"
    assert store.client.head(BUCKET, prefix + "fresh/").size == 0


def test_implicit_directories(mount, store, prefix):
    store.client.put(BUCKET, prefix + "a/b/c.txt", b"deep")
    time.sleep(1.1)
    assert os.listdir(mount.mnt) == ["a"]
    assert stat.S_ISDIR(os.stat(mount.path("a", "b")).st_mode)
    assert open(mount.path("a", "b", "c.txt")).read() == "deep"


def test_rmdir(mount, store, prefix):
    os.makedirs(mount.path("x", "y"))
    with pytest.raises(OSError) as e:
        os.rmdir(mount.path("x"))
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(mount.path("x", "y"))
    os.rmdir(mount.path("x"))
    assert not os.path.exists(mount.path("x"))
    assert store.exists(prefix + "x/") == (False, {})


def test_readdir_large_paginated(mount, store, prefix):
    names = [f"n{i:04d}" for i in range(2100)]  # more than two pages of 1000

    def put(n):
        store.client.put(BUCKET, prefix + "many/" + n, n.encode())
    list(store.transfer._pool.map(put, names))
    time.sleep(1.1)
    assert sorted(os.listdir(mount.path("many"))) == names
    assert os.stat(mount.path("many", "n2099")).st_size == 5


def test_rename_file_keeps_metadata(mount, store, prefix):
    p = mount.path("a.csv")
    with open(p, "w") as f:
        f.write("x,y\n")
    os.chmod(p, 0o600)
    os.setxattr(p, "user.state", b"new")
    with open(mount.path("b.csv"), "w") as f:
        f.write("to be replaced")
    os.rename(p, mount.path("b.csv"))
    assert not os.path.exists(p)
    assert open(mount.path("b.csv")).read() == "x,y\n"
    assert os.stat(mount.path("b.csv")).st_mode & 0o777 == 0o600
    assert os.getxattr(mount.path("b.csv"), "user.state") == b"new"
    assert store.exists(prefix + "a.csv") == (False, {})
    info = store.client.head(BUCKET, prefix + "b.csv")
    assert info.metadata["x-amz-meta-state"] == "new"
    assert info.content_type == "text/csv"


def test_rename_open_dirty_file(mount, store, prefix):
    f = open(mount.path("w1"), "wb")
    f.write(b"pending")
    f.flush()
    os.rename(mount.path("w1"), mount.path("w2"))
    f.write(b" more")
    f.close()
    assert open(mount.path("w2"), "rb").read() == b"pending more"
    assert store.client.get_bytes(BUCKET, prefix + "w2")[0] == b"pending more"
    assert store.exists(prefix + "w1") == (False, {})


def test_rename_directory(mount, store, prefix):
    os.makedirs(mount.path("src", "sub"))
    for i in range(20):
        with open(mount.path("src", f"f{i}"), "w") as f:
            f.write(str(i))
    with open(mount.path("src", "sub", "deep"), "w") as f:
        f.write("deep")
    os.rename(mount.path("src"), mount.path("dst"))
    assert not os.path.exists(mount.path("src"))
    assert sorted(os.listdir(mount.path("dst"))) == sorted([f"f{i}" for i in range(20)] + ["sub"])
    assert open(mount.path("dst", "sub", "deep")).read() == "deep"
    keys = [o.key for p in store.client.list_all(BUCKET, prefix, None) for o in p.objects]
    assert not [k for k in keys if k.startswith(prefix + "src/")]
    assert prefix + "dst/f7" in keys


def test_rename_errors(mount):
    os.makedirs(mount.path("d1"))
    os.makedirs(mount.path("d2"))
    with open(mount.path("d2", "x"), "w") as f:
        f.write("x")
    with open(mount.path("file"), "w") as f:
        f.write("f")
    with pytest.raises(OSError) as e:
        os.rename(mount.path("d1"), mount.path("d2"))
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        os.rename(mount.path("d1"), mount.path("file"))
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        os.rename(mount.path("file"), mount.path("d2"))
    assert e.value.errno in (errno.EISDIR, errno.ENOTEMPTY)


def test_symlink(mount, store, prefix):
    with open(mount.path("target"), "w") as f:
        f.write("t")
    os.symlink("target", mount.path("link"))
    assert os.readlink(mount.path("link")) == "target"
    assert open(mount.path("link")).read() == "t"
    assert stat.S_ISLNK(os.lstat(mount.path("link")).st_mode)
    info = store.client.head(BUCKET, prefix + "link")
    assert int(info.metadata["x-amz-meta-mode"]) == 0o120777
    assert store.client.get_bytes(BUCKET, prefix + "link")[0] == b"target"


def test_hard_link_refused(mount):
    with open(mount.path("h"), "w") as f:
        f.write("h")
    with pytest.raises(OSError) as e:
        os.link(mount.path("h"), mount.path("h2"))
    assert e.value.errno == errno.EPERM


def test_chmod_chown_utimens(mount, store, prefix):
    p = mount.path("attrs.txt")
    with open(p, "w") as f:
        f.write("content")
    store_before = store.client.head(BUCKET, prefix + "attrs.txt")
    os.chmod(p, 0o751)
    os.chown(p, 1234, 5678)
    os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_250_000_000))
    st = os.stat(p)
    assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_uid == 1234 and st.st_gid == 5678
    assert st.st_mtime_ns == 1_600_000_000_250_000_000
    info = store.client.head(BUCKET, prefix + "attrs.txt")
    assert info.metadata["x-amz-meta-mode"] == str(0o100751)
    assert info.metadata["x-amz-meta-uid"] == "1234" and info.metadata["x-amz-meta-gid"] == "5678"
    assert info.metadata["x-amz-meta-mtime"] == "1600000000.250000000"
    assert info.content_type == store_before.content_type
    assert store.client.get_bytes(BUCKET, prefix + "attrs.txt")[0] == b"content"


def test_name_too_long(mount):
    with pytest.raises(OSError) as e:
        open(mount.path("x" * 256), "w")
    assert e.value.errno == errno.ENAMETOOLONG
    deep = mount.path(*(["d" * 250] * 5), "f")  # a key over 1024 bytes
    with pytest.raises(OSError) as e:
        os.makedirs(os.path.dirname(deep))
        open(deep, "w").close()
    assert e.value.errno == errno.ENAMETOOLONG


def test_odd_keys_on_moto(moto, workdir):
    """Keys that cannot be paths, on a server that can hold them."""
    st = s3.RemoteStore(moto.connection())
    bucket = "odd-keys"
    st.client.create_bucket(bucket)
    for key in ("ok.txt", "a//b", "./x", "y/../z", "..", "n" * 300, "file", "file/under",
                "dir/", "dir/inside", "//lead"):
        st.client.put(bucket, key, key.encode())
    with Mount(moto.endpoint, bucket, workdir=os.path.join(workdir, "m")) as m:
        top = sorted(os.listdir(m.mnt))
        assert "ok.txt" in top and "file" in top and "dir" in top
        assert all(n not in ("", ".", "..") and len(n.encode()) <= 255 for n in top)
        assert os.path.isfile(m.path("file"))  # the file wins over keys under file/
        assert open(m.path("file")).read() == "file"
        assert os.listdir(m.path("dir")) == ["inside"]
        for root, dirs, files in os.walk(m.mnt):
            assert os.path.realpath(root).startswith(os.path.realpath(m.mnt))
        assert "a" in top and os.listdir(m.path("a")) == []  # 'a//b': its empty name is hidden
        assert "y" in top and os.listdir(m.path("y")) == []  # 'y/../z': '..' is hidden
