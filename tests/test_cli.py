"""The s3mount command: clear one-line failures, detaching once ready, -o options, --help."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ACCESS_KEY, BUCKET, SECRET_KEY, free_port
from mountutil import Mount, force_unmount, mounted
from s3mount.options import OptionError, parse_args


def run(args, env_extra=None, timeout=60, cwd=None):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_REGION="us-east-1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "s3mount", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.fixture
def mnt(workdir):
    path = os.path.join(workdir, "mnt")
    os.makedirs(path)
    yield path
    force_unmount(path)


def one_line(out) -> str:
    lines = [l for l in out.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_detaches_only_when_ready_and_unmounts(seaweed, mnt):
    t0 = time.monotonic()
    out = run([BUCKET, mnt, "--endpoint", seaweed.endpoint])
    assert out.returncode == 0, out.stderr
    assert mounted(mnt)  # already answering when the command returned
    os.listdir(mnt)
    assert time.monotonic() - t0 < 30
    subprocess.run(["fusermount3", "-u", mnt], check=True)
    deadline = time.monotonic() + 10
    while mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not mounted(mnt)


def test_relative_mountpoint(seaweed, mnt):
    t0 = time.monotonic()
    out = run([BUCKET, "mnt", "--endpoint", seaweed.endpoint], cwd=os.path.dirname(mnt))
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 20  # ready is announced, not waited out
    assert mounted(mnt)
    os.listdir(mnt)


def test_default_bucket_from_config(seaweed, mnt, workdir):
    cfg = os.path.join(workdir, "c.yaml")
    with open(cfg, "w") as f:
        yaml.safe_dump({"s3": {"endpoint": seaweed.endpoint, "default_bucket": BUCKET,
                               "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}}, f)
    os.chmod(cfg, 0o600)
    out = run(["--config", cfg, mnt])
    assert out.returncode == 0, out.stderr
    assert mounted(mnt)


def test_wrong_credentials(seaweed, mnt):
    out = run([BUCKET, mnt, "--endpoint", seaweed.endpoint],
              env_extra={"AWS_SECRET_ACCESS_KEY": "wrong-secret-value"})
    assert out.returncode != 0
    line = one_line(out)
    assert "access denied" in line and "wrong-secret-value" not in out.stderr
    assert not mounted(mnt)


def test_no_such_bucket(seaweed, mnt):
    out = run(["no-such-bucket-xyz", mnt, "--endpoint", seaweed.endpoint])
    assert out.returncode != 0
    assert "no such bucket 'no-such-bucket-xyz'" in one_line(out)


def test_unreachable_endpoint_fails_fast(mnt, workdir):
    cfg = os.path.join(workdir, "c.yaml")
    with open(cfg, "w") as f:
        yaml.safe_dump({"s3": {"endpoint": f"http://127.0.0.1:{free_port()}", "max_retry_time": 3}}, f)
    t0 = time.monotonic()
    out = run([BUCKET, mnt, "--config", cfg])
    assert out.returncode != 0
    assert "cannot reach the S3 endpoint" in one_line(out)
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("case", ["missing", "file"])
def test_bad_mountpoint(seaweed, workdir, case):
    target = os.path.join(workdir, "nope")
    if case == "file":
        open(target, "w").close()
    out = run([BUCKET, target, "--endpoint", seaweed.endpoint])
    assert out.returncode != 0
    assert ("does not exist" if case == "missing" else "is not a directory") in one_line(out)


def test_fuse_unavailable_message(monkeypatch, tmp_path):
    from s3mount import cli
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: False if p == "/dev/fuse" else real_exists(p))
    with pytest.raises(SystemExit) as e:
        cli.check_mountpoint(str(tmp_path))
    assert e.value.code == 1


def test_unknown_config_key_and_option(seaweed, mnt, workdir):
    cfg = os.path.join(workdir, "c.yaml")
    with open(cfg, "w") as f:
        yaml.safe_dump({"s3": {"endpoint": seaweed.endpoint, "bukket": "x"}}, f)
    os.chmod(cfg, 0o600)
    out = run([BUCKET, mnt, "--config", cfg])
    assert out.returncode != 0 and "bukket" in one_line(out)
    out = run([BUCKET, mnt, "-o", "frobnicate=1"])
    assert out.returncode == 2 and "frobnicate" in one_line(out)


def test_help_documents_every_option_with_examples():
    out = run(["--help"])
    assert out.returncode == 0
    for opt in ("--config", "--endpoint", "--region", "--profile", "--cache-dir", "--foreground",
                "-o", "allow_other", "uid=", "umask=", "file_mode=", "dir_mode=", "examples:",
                "stats"):
        assert opt in out.stdout, opt


def test_version():
    out = run(["--version"])
    assert out.returncode == 0 and out.stdout.startswith("s3mount ")


def test_o_options_parse():
    o = parse_args(["b:/p/q", "/m", "-o", "ro,allow_other,uid=7,gid=8,umask=027,_netdev,"
                    "config=/c.yaml,cache-dir=/var/c,metadata_ttl=2.5,x-systemd.automount"])
    assert (o.bucket, o.prefix, o.mountpoint) == ("b", "p/q", "/m")
    assert o.read_only and o.allow_other and (o.uid, o.gid) == (7, 8)
    assert (o.file_mode, o.dir_mode) == (0o640, 0o750)
    assert o.config == "/c.yaml" and o.cache_dir == "/var/c" and o.metadata_ttl == 2.5
    with pytest.raises(OptionError):
        parse_args(["b", "/m", "-o", "umask=9z"])


def test_ro_uid_gid_modes_through_mount(seaweed, store, prefix, workdir):
    store.client.put(BUCKET, prefix + "f", b"x")
    opts = ["-o", "ro,uid=4321,gid=8765,file_mode=0600,dir_mode=0700"]
    with Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), options=opts,
               workdir=os.path.join(workdir, "m")) as m:
        st = os.stat(m.path("f"))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 8765, 0o600)
        assert stat.S_IMODE(os.stat(m.mnt).st_mode) == 0o700
        with pytest.raises(OSError):
            open(m.path("new"), "w")
        assert open(m.path("f")).read() == "x"


def test_read_ahead_option_parse():
    assert parse_args(["b", "/m"]).read_ahead == 4 << 20
    assert parse_args(["b", "/m", "-o", "read_ahead=16M"]).read_ahead == 16 << 20
    assert parse_args(["b", "/m", "--read-ahead", "512K"]).read_ahead == 512 << 10
    for bad in ("64K", "1G", "lots", "nan"):
        with pytest.raises(OptionError, match="read_ahead"):
            parse_args(["b", "/m", "-o", f"read_ahead={bad}"])


def test_read_ahead_and_spliced_reads_through_mount(seaweed, store, prefix, workdir):
    """The mount's bdi gets the readahead asked for, reads are at most MAX_READ (a spliced
    reply fits a 1 MiB pipe), and data read in large and odd pieces is the object's."""
    data = os.urandom(9 << 20)
    store.client.put(BUCKET, prefix + "big", data)
    with Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), options=["-o", "read_ahead=8M"],
               workdir=os.path.join(workdir, "m")) as m:
        dev = os.stat(m.mnt).st_dev
        bdi = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        # With -f, Mount returns once the mount is in mountinfo; the daemon sets the readahead
        # just after, before it reports ready (the detached command waits for that).
        deadline = time.monotonic() + 10
        while open(bdi).read().strip() != "8192" and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(bdi) as f:
            assert f.read().strip() == "8192"
        with open("/proc/self/mountinfo") as f:
            line = next(l for l in f if f" {m.mnt} " in l)
        assert "max_read=1032192" in line
        with open(m.path("big"), "rb") as f:
            assert f.read() == data
        fd = os.open(m.path("big"), os.O_RDONLY)
        try:
            for off, n in ((0, 1), (1032191, 3), (4 << 20, 1 << 20), ((9 << 20) - 5, 100),
                           (12345, 2 << 20)):
                assert os.pread(fd, n, off) == data[off:off + n]
        finally:
            os.close(fd)
