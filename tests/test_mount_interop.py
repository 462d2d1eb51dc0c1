"""A bucket written by s3fs-fuse mounts here with the same modes and mtimes, and the reverse.

File attributes are checked on SeaweedFS. SeaweedFS keeps no metadata on directory markers, so
directory modes are checked on moto's server, which keeps them as AWS does.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time

import pytest

import s3mount as s3
from conftest import ACCESS_KEY, SECRET_KEY
from mountutil import Mount, force_unmount, mounted

pytestmark = pytest.mark.skipif(shutil.which("s3fs") is None, reason="s3fs not installed")


class S3fs:
    def __init__(self, endpoint: str, bucket: str, workdir: str):
        self.mnt = os.path.join(workdir, "s3fs-mnt")
        os.makedirs(self.mnt, exist_ok=True)
        passwd = os.path.join(workdir, "passwd")
        with open(passwd, "w") as f:
            f.write(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        os.chmod(passwd, 0o600)
        self.argv = ["s3fs", bucket, self.mnt, "-o", f"passwd_file={passwd},url={endpoint},"
                     "use_path_request_style,endpoint=us-east-1,stat_cache_expire=1,"
                     f"tmpdir={workdir},dbglevel=warn"]

    def __enter__(self):
        subprocess.run(self.argv, check=True, timeout=60)
        deadline = time.monotonic() + 30
        while not mounted(self.mnt):
            if time.monotonic() > deadline:
                raise RuntimeError("s3fs did not mount")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        force_unmount(self.mnt)

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)


def _snapshot(root: str) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                             int(st.st_mtime), st.st_size)
    return out


def _files_only(snap: dict) -> dict:
    return {k: v for k, v in snap.items() if not stat.S_ISDIR(v[0])}


def test_s3fs_interop_files_both_ways(seaweed, store, workdir):
    bucket = "interop-files"
    store.client.create_bucket(bucket)
    with S3fs(seaweed.endpoint, bucket, workdir) as fs3:
        os.makedirs(fs3.path("dir"))
        for name, mode, mtime in (("a.txt", 0o600, 1_500_000_000), ("dir/b.bin", 0o751, 1_600_000_123),
                                  ("c", 0o444, 1_700_000_000)):
            with open(fs3.path(name), "w") as f:
                f.write(name * 3)
            os.chmod(fs3.path(name), mode)
            os.utime(fs3.path(name), (mtime, mtime))
        os.symlink("a.txt", fs3.path("link"))
        theirs = _snapshot(fs3.mnt)
    with Mount(seaweed.endpoint, bucket, workdir=os.path.join(workdir, "m")) as m:
        ours = _snapshot(m.mnt)
        assert _files_only(ours) == _files_only(theirs)
        assert os.readlink(m.path("link")) == "a.txt"
        # and the reverse: written here, read by s3fs
        with open(m.path("mine.txt"), "w") as f:
            f.write("from s3mount")
        os.chmod(m.path("mine.txt"), 0o640)
        os.utime(m.path("mine.txt"), (1_650_000_000, 1_650_000_000))
        os.chmod(m.path("a.txt"), 0o604)
        os.symlink("c", m.path("link2"))
        ours = _snapshot(m.mnt)
    with S3fs(seaweed.endpoint, bucket, workdir) as fs3:
        theirs = _snapshot(fs3.mnt)
        assert theirs["mine.txt"][1:] == (0o640, 1_650_000_000, len("from s3mount"))
        assert theirs["a.txt"][1] == 0o604
        assert os.readlink(fs3.path("link2")) == "c"
        assert _files_only(theirs) == _files_only(ours)


def test_s3fs_interop_directories_on_moto(moto, workdir):
    bucket = "interop-dirs"
    s3.RemoteStore(moto.connection()).client.create_bucket(bucket)
    with S3fs(moto.endpoint, bucket, workdir) as fs3:
        os.makedirs(fs3.path("private"))
        os.chmod(fs3.path("private"), 0o700)
        os.makedirs(fs3.path("shared"))
        os.chmod(fs3.path("shared"), 0o775)
        with open(fs3.path("private", "f"), "w") as f:
            f.write("f")
        theirs = _snapshot(fs3.mnt)
    with Mount(moto.endpoint, bucket, workdir=os.path.join(workdir, "m")) as m:
        ours = _snapshot(m.mnt)
        assert {k: v[:2] for k, v in ours.items()} == {k: v[:2] for k, v in theirs.items()}
        os.mkdir(m.path("made-here"), 0o710)
    with S3fs(moto.endpoint, bucket, workdir) as fs3:
        assert stat.S_IMODE(os.stat(fs3.path("made-here")).st_mode) == 0o710
