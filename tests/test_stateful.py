"""Stateful property test: random sequences of file and xattr operations on a real mount, checked
against an in-memory model after every step, and against S3 itself at the end of each example.

The namespace is one flat directory with a handful of names, so that writes, truncates, renames,
unlinks and xattr changes keep colliding on the same files. Every rule that opens a file closes
it again, so by docs/SEMANTICS.md (close/truncate/rename/unlink/setxattr are in S3 before they
return) S3 must hold exactly the model at the end of each example, while still mounted. A
remount rule (with or without the old cache) makes later steps start from what S3 holds.

S3MOUNT_STATEFUL_EXAMPLES sets the number of examples (default 25) for a longer local run.
"""

from __future__ import annotations

import errno
import os
import random
import uuid

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

import s3mount as s3
from conftest import BUCKET
from mountutil import Mount
from s3mount.fs.attrs import META, POSIX_KEYS, decode_xattr_value

MiB = 1 << 20
NAMES = ["a", "b", "c", "d", "e"]
# Mixed-case names: S3 lower-cases metadata names, so user.Tag and user.tag are one attribute.
XATTR_NAMES = ["user.a", "user.tag", "user.Tag", "user.x-1", "user.long_name.v2"]

names = st.sampled_from(NAMES)
xattr_names = st.sampled_from(XATTR_NAMES)
# Offsets near the start, and around the 1 MiB and 2 MiB block boundaries.
offsets = st.one_of(st.integers(0, 8192),
                    st.integers(MiB - 4096, MiB + 4096),
                    st.integers(2 * MiB - 4096, 2 * MiB + 64))
# Or relative to the file's current end: ("eof", d) writes at len + d, often in its last block.
write_offsets = st.one_of(offsets, st.tuples(st.just("eof"), st.integers(0, 4096)))
sizes = st.one_of(st.integers(0, 16), st.integers(0, 4096))
truncate_sizes = st.one_of(st.integers(0, 8192), st.integers(MiB - 16, MiB + 4096),
                           st.just(0), st.just(MiB), st.just(2 * MiB + 1))
xattr_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"plain", b" edge spaces ", b"  ", b"trailing ", b" leading", b"",
                     b"\xff\xfe\x00\x80", bytes(range(0, 256, 7)), "Zoë 日本".encode(),
                     b"=?UTF-8?B?Zm9v?=", b"=?x-binary?B?AAE=?=", b"tab\tnew\nline"]),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def data_for(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def xattr_key(name: str) -> str:
    """The model's key for an xattr name: what the mount lists it as."""
    return "user." + name[len("user."):].lower()


class MountMachine(RuleBasedStateMachine):
    """One mount per example, on a fresh prefix of the test bucket."""

    server = None  # set by the test function: the session's SeaweedFS

    def __init__(self):
        super().__init__()
        self.mount = None
        self.store = None
        self.files: dict[str, bytearray] = {}
        self.xattrs: dict[str, dict[str, bytes]] = {}
        self.prefix = f"t-stateful-{uuid.uuid4().hex[:10]}/"

    @initialize()
    def start_mount(self):
        self.store = s3.RemoteStore(self.server.connection())
        self.mount = Mount(self.server.endpoint, BUCKET, self.prefix.rstrip("/"),
                           options=["-o", "metadata_ttl=1"])
        self.mount.start()

    def teardown(self):
        try:
            if self.mount is not None and self.store is not None:
                self.check_s3()
        finally:
            try:
                if self.mount is not None:
                    self.mount.cleanup()
            finally:
                if self.store is not None:
                    self.store.close()

    # -- helpers ----------------------------------------------------------------------------
    def p(self, name: str) -> str:
        return self.mount.path(name)

    def expect_errno(self, code: int, fn, *args):
        with pytest.raises(OSError) as e:
            fn(*args)
        assert e.value.errno == code, f"{fn.__name__}{args}: {e.value!r}, expected {errno.errorcode[code]}"

    def read_all(self, name: str) -> bytes:
        with open(self.p(name), "rb") as f:
            return f.read()

    def check_content(self, name: str):
        got = self.read_all(name)
        want = bytes(self.files[name])
        if got != want:
            first = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y),
                         min(len(got), len(want)))
            raise AssertionError(f"{name}: mount has {len(got)} bytes, model {len(want)}; "
                                 f"first difference at offset {first}")

    def check_s3(self):
        keys = {}
        for page in self.store.client.list_all(BUCKET, self.prefix, delimiter="/"):
            assert not page.prefixes, f"unexpected prefixes in S3: {page.prefixes}"
            for obj in page.objects:
                if obj.key == self.prefix and obj.size == 0:
                    # SeaweedFS keeps listing an emptied folder as 'prefix/' after its last
                    # object is deleted (docs/SEAWEEDFS.md); s3mount never wrote it.
                    continue
                keys[obj.key[len(self.prefix):]] = obj
        assert sorted(keys) == sorted(self.files), "S3 keys differ from the model"
        for name, want in self.files.items():
            body, info = self.store.client.get_bytes(BUCKET, self.prefix + name)
            if body != bytes(want):
                raise AssertionError(f"S3 object {name}: {len(body)} bytes, model {len(want)} "
                                     f"(equal prefix: {body[:len(want)] == bytes(want)[:len(body)]})")
            stored = {"user." + k[len(META):]: decode_xattr_value(v)
                      for k, v in info.raw_metadata.items()
                      if k.startswith(META) and k not in POSIX_KEYS}
            assert stored == self.xattrs[name], f"S3 metadata of {name}: {info.raw_metadata}"
            # And RemoteStore sees the x-amz-meta-NAME headers.
            exists, meta = self.store.exists(self.prefix + name)
            assert exists
            for xname in self.xattrs[name]:
                assert META + xname[len("user."):] in meta, (name, xname, meta)

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def listing_matches(self):
        if self.mount is None:
            return
        assert sorted(os.listdir(self.mount.mnt)) == sorted(self.files)
        for name, content in self.files.items():
            assert os.stat(self.p(name)).st_size == len(content), name

    # -- rules ------------------------------------------------------------------------------
    @rule(name=names, offset=write_offsets, size=sizes, seed=st.integers(0, 2**32 - 1),
          mode=st.sampled_from(["rdwr", "wronly", "append", "trunc", "excl"]))
    def write(self, name, offset, size, seed, mode):
        data = data_for(seed, size)
        if isinstance(offset, tuple):
            offset = len(self.files.get(name, b"")) + offset[1]
        flags = {"rdwr": os.O_RDWR, "wronly": os.O_WRONLY, "append": os.O_WRONLY | os.O_APPEND,
                 "trunc": os.O_WRONLY | os.O_TRUNC, "excl": os.O_WRONLY | os.O_EXCL}[mode]
        exists = name in self.files
        if mode == "excl" and exists:
            self.expect_errno(errno.EEXIST, os.open, self.p(name), flags | os.O_CREAT, 0o644)
            return
        fd = os.open(self.p(name), flags | os.O_CREAT, 0o644)
        try:
            if mode == "append":
                assert os.write(fd, data) == len(data)
            else:
                assert os.pwrite(fd, data, offset) == len(data)
        finally:
            os.close(fd)
        if not exists:
            self.files[name] = bytearray()
            self.xattrs[name] = {}
        content = self.files[name]
        if mode == "trunc":
            del content[:]
        if mode == "append":
            offset = len(content)
        if size:  # a zero-length write does not extend the file
            if len(content) < offset:
                content.extend(bytes(offset - len(content)))
            content[offset:offset + size] = data

    @rule(name=names, size=truncate_sizes, open_handle=st.booleans())
    def truncate(self, name, size, open_handle):
        if name not in self.files:
            self.expect_errno(errno.ENOENT, os.truncate, self.p(name), size)
            return
        if open_handle:
            fd = os.open(self.p(name), os.O_RDWR)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        else:
            os.truncate(self.p(name), size)
        content = self.files[name]
        if size < len(content):
            del content[size:]
        else:
            content.extend(bytes(size - len(content)))

    @rule(src=names, dst=names)
    def rename(self, src, dst):
        if src not in self.files:
            self.expect_errno(errno.ENOENT, os.rename, self.p(src), self.p(dst))
            return
        os.rename(self.p(src), self.p(dst))
        if src != dst:
            self.files[dst] = self.files.pop(src)
            self.xattrs[dst] = self.xattrs.pop(src)

    @rule(name=names)
    def unlink(self, name):
        if name not in self.files:
            self.expect_errno(errno.ENOENT, os.unlink, self.p(name))
            return
        os.unlink(self.p(name))
        del self.files[name]
        del self.xattrs[name]

    @rule(name=names, xname=xattr_names, value=xattr_values)
    def setxattr(self, name, xname, value):
        if name not in self.files:
            self.expect_errno(errno.ENOENT, os.setxattr, self.p(name), xname, value)
            return
        os.setxattr(self.p(name), xname, value)
        self.xattrs[name][xattr_key(xname)] = value

    @rule(name=names, xname=xattr_names)
    def removexattr(self, name, xname):
        if name not in self.files:
            self.expect_errno(errno.ENOENT, os.removexattr, self.p(name), xname)
            return
        if xattr_key(xname) not in self.xattrs[name]:
            self.expect_errno(errno.ENODATA, os.removexattr, self.p(name), xname)
            return
        os.removexattr(self.p(name), xname)
        del self.xattrs[name][xattr_key(xname)]

    @rule(name=names)
    def read_whole(self, name):
        if name not in self.files:
            self.expect_errno(errno.ENOENT, self.read_all, name)
            return
        self.check_content(name)

    @rule(name=names, offset=offsets, size=st.integers(1, 8192))
    def read_range(self, name, offset, size):
        if name not in self.files:
            return
        fd = os.open(self.p(name), os.O_RDONLY)
        try:
            got = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        assert got == bytes(self.files[name][offset:offset + size]), (name, offset, size)

    @rule(name=names)
    def check_xattrs(self, name):
        if name not in self.files:
            self.expect_errno(errno.ENOENT, os.listxattr, self.p(name))
            return
        assert sorted(os.listxattr(self.p(name))) == sorted(self.xattrs[name]), name
        for xname, value in self.xattrs[name].items():
            assert os.getxattr(self.p(name), xname) == value, (name, xname)
        missing = [x for x in XATTR_NAMES if xattr_key(x) not in self.xattrs[name]]
        if missing:
            self.expect_errno(errno.ENODATA, os.getxattr, self.p(name), missing[0])

    @rule(keep_cache=st.booleans())
    def remount(self, keep_cache):
        """Unmount and mount again: what is in S3 is all there is; with keep_cache=False the
        next reads and writes start from a cold cache, else from the cache the last run left."""
        self.mount.restart(keep_cache=keep_cache)

    @precondition(lambda self: self.files)
    @rule()
    def check_all_contents(self):
        for name in self.files:
            self.check_content(name)


def test_mount_state_machine(seaweed):
    MountMachine.server = seaweed
    run_state_machine_as_test(
        MountMachine,
        settings=settings(max_examples=int(os.environ.get("S3MOUNT_STATEFUL_EXAMPLES", "25")),
                          stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture,
                                                 HealthCheck.filter_too_much],
                          derandomize=False, database=None, print_blob=True))
