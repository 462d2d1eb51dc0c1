"""Extended attributes <-> x-amz-meta-* through a real mount (docs/SEMANTICS.md claims 19-23)."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

import s3mount as s3
from conftest import BUCKET
from mountutil import Mount

XATTR_CREATE, XATTR_REPLACE = os.XATTR_CREATE, os.XATTR_REPLACE


def test_seed_examples_through_the_mount(mount, store, prefix, workdir):
    """The seed's flows, with the mount in the middle."""
    example = os.path.join(workdir, "example")
    with open(example, "w") as f:
        f.write("example data\n" * 100)
    subprocess.run(["cp", example, mount.path("copied")], check=True)
    back = os.path.join(workdir, "from-s3")
    ok, _ = store.read(prefix + "copied", back)
    assert ok and open(back).read() == open(example).read()

    headers = {"x-amz-meta-state": "unprocessed", "content-type": "text/x-example"}
    assert store.write(example, prefix + "tagged", headers=headers)
    out = subprocess.run(["getfattr", "-d", mount.path("tagged")], capture_output=True, text=True,
                         check=True).stdout
    assert 'user.state="unprocessed"' in out
    subprocess.run(["setfattr", "-n", "user.state", "-v", "processed", mount.path("tagged")],
                   check=True)
    exists, metadata = store.exists(prefix + "tagged")
    assert exists and metadata["x-amz-meta-state"] == "processed"
    assert {k: v for k, v in metadata.items() if k == "x-amz-meta-state"} == \
        {"x-amz-meta-state": "processed"}
    info = store.client.head(BUCKET, prefix + "tagged")
    assert info.content_type == "text/x-example"
    ok, _ = store.read(prefix + "tagged", back)
    assert ok and open(back).read() == open(example).read()


def test_seed_metadata_exactly_after_setfattr(mount, store, prefix, workdir):
    """An object written by the library carries only its own metadata; setfattr keeps it so."""
    example = os.path.join(workdir, "e")
    with open(example, "w") as f:
        f.write("x")
    assert store.write(example, prefix + "obj", headers={"x-amz-meta-state": "unprocessed"})
    subprocess.run(["setfattr", "-n", "user.state", "-v", "processed", mount.path("obj")], check=True)
    assert store.exists(prefix + "obj") == (True, {"x-amz-meta-state": "processed"})


def test_xattr_roundtrip_and_store_view(mount, store, prefix):
    p = mount.path("f")
    with open(p, "w") as f:
        f.write("data")
    os.setxattr(p, "user.Color", b"blue")
    assert os.getxattr(p, "user.color") == b"blue"
    assert sorted(os.listxattr(p)) == ["user.color"]  # mode/uid/gid/mtime are not listed
    assert store.exists(prefix + "f")[1]["x-amz-meta-color"] == "blue"
    os.removexattr(p, "user.color")
    assert os.listxattr(p) == []
    assert "x-amz-meta-color" not in store.exists(prefix + "f")[1]
    assert open(p).read() == "data"
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.mode", b"777")
    assert e.value.errno == errno.EPERM


def test_xattr_on_file_with_unsaved_writes(mount, store, prefix):
    p = mount.path("dirty")
    f = open(p, "wb")
    f.write(b"pending")
    f.flush()
    os.setxattr(p, "user.k", b"v")
    assert os.getxattr(p, "user.k") == b"v"
    f.close()
    assert store.exists(prefix + "dirty")[1]["x-amz-meta-k"] == "v"
    assert store.client.get_bytes(BUCKET, prefix + "dirty")[0] == b"pending"


def test_xattr_empty_file(mount, store, prefix):
    p = mount.path("empty")
    open(p, "w").close()
    os.setxattr(p, "user.a", b"1")
    assert os.getxattr(p, "user.a") == b"1"
    assert store.exists(prefix + "empty")[1]["x-amz-meta-a"] == "1"


def test_xattr_errors(mount):
    p = mount.path("e")
    with open(p, "w") as f:
        f.write("x")
    os.setxattr(p, "user.a", b"1", XATTR_CREATE)
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.a", b"2", XATTR_CREATE)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.b", b"2", XATTR_REPLACE)
    assert e.value.errno == errno.ENODATA
    os.setxattr(p, "user.a", b"3", XATTR_REPLACE)
    assert os.getxattr(p, "user.a") == b"3"
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.missing")
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        os.removexattr(p, "user.missing")
    assert e.value.errno == errno.ENODATA
    for name in ("trusted.x", "security.x", "system.x"):
        with pytest.raises(OSError) as e:
            os.setxattr(p, name, b"1")
        assert e.value.errno in (errno.ENOTSUP, errno.EPERM), name
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.bad name", b"1")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.big", b"v" * 2100)
    assert e.value.errno == errno.E2BIG
    os.setxattr(p, "user.fill", b"v" * 1000)
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.fill2", b"v" * 1100)
    assert e.value.errno == errno.E2BIG
    assert os.getxattr(p, "user.a") == b"3"


@pytest.mark.parametrize("value", [b"plain", b"  edge spaces  ", "Zoë 日本".encode(),
                                   bytes(range(256)), b"", b"=?UTF-8?B?Zm9v?=", b"tab\tnew\nline"])
def test_xattr_binary_values(mount, value):
    p = mount.path("b")
    if not os.path.exists(p):
        open(p, "w").close()
    os.setxattr(p, "user.v", value)
    assert os.getxattr(p, "user.v") == value


def test_xattr_values_survive_remount(mount, store, prefix):
    p = mount.path("r")
    with open(p, "w") as f:
        f.write("x")
    os.setxattr(p, "user.bin", bytes(range(40)))
    os.setxattr(p, "user.text", "naïve".encode())
    mount.restart()
    assert os.getxattr(mount.path("r"), "user.bin") == bytes(range(40))
    assert os.getxattr(mount.path("r"), "user.text") == "naïve".encode()
    assert store.exists(prefix + "r")[1]["x-amz-meta-text"] == "naïve"


def test_xattr_on_directory_seaweedfs_refuses_honestly(mount):
    os.mkdir(mount.path("d"))
    with pytest.raises(OSError) as e:
        os.setxattr(mount.path("d"), "user.a", b"1")
    assert e.value.errno == errno.ENOTSUP


def test_xattr_on_directory(moto, workdir):
    st = s3.RemoteStore(moto.connection())
    st.client.create_bucket("xdir")
    st.client.put("xdir", "implicit/file", b"x")
    with Mount(moto.endpoint, "xdir", workdir=os.path.join(workdir, "m")) as m:
        os.mkdir(m.path("d"))
        os.setxattr(m.path("d"), "user.a", b"1")
        assert os.getxattr(m.path("d"), "user.a") == b"1"
        os.chmod(m.path("d"), 0o700)
        os.setxattr(m.path("implicit"), "user.b", b"2")  # gets a marker
        m.restart()
        assert os.getxattr(m.path("d"), "user.a") == b"1"
        assert os.stat(m.path("d")).st_mode & 0o777 == 0o700
        assert os.getxattr(m.path("implicit"), "user.b") == b"2"
        assert open(m.path("implicit", "file")).read() == "x"


def test_empty_xattr_value_survives_reupload(mount, store, prefix):
    """Regression (found by test_stateful): SeaweedFS drops empty metadata values on PUT."""
    p = mount.path("e")
    open(p, "w").close()
    os.setxattr(p, "user.empty", b"")
    with open(p, "w") as f:
        f.write("re-uploaded")
    assert os.getxattr(p, "user.empty") == b""
    assert "x-amz-meta-empty" in store.client.head(BUCKET, prefix + "e").raw_metadata
