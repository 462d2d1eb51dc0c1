"""Bad input gets a clear error and loses nothing; the security promises hold."""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
import subprocess
import threading
import time

import pytest
import yaml

import s3mount as s3
from conftest import ACCESS_KEY, BUCKET, SECRET_KEY
from mountutil import Mount, force_unmount, mounted
from test_cli import one_line, run


def _yaml(path, doc, mode=0o600):
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("doc, words", [
    ("s3: [unclosed", "not valid YAML"),
    ("just a string", "s3:"),
    ({"s3": {"secret_access_key": "x"}}, "both access_key_id and secret_access_key"),
    ({"s3": {"endpoint": "ftp://host"}}, "http or https"),
    ({"s3": {"part_size": 1024}}, "part_size"),
    ({"s3": {"read_timeout": "soon"}}, "read_timeout"),
    ({"s3": {}, "mount": {"colour": "blue"}}, "colour"),
    ({"s3": {}, "extra": {}}, "extra"),
])
def test_bad_config_is_one_clear_line(seaweed, workdir, doc, words):
    cfg = _yaml(os.path.join(workdir, "bad.yaml"), doc)
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    out = run([BUCKET, mnt, "--config", cfg])
    assert out.returncode != 0
    assert words in one_line(out)
    assert not mounted(mnt)


def test_config_with_secret_readable_by_others_is_refused(seaweed, workdir):
    cfg = _yaml(os.path.join(workdir, "open.yaml"),
                {"s3": {"endpoint": seaweed.endpoint, "access_key_id": ACCESS_KEY,
                        "secret_access_key": SECRET_KEY}}, mode=0o644)
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    out = run([BUCKET, mnt, "--config", cfg])
    assert out.returncode != 0
    line = one_line(out)
    assert "accessible by group/others" in line and "chmod 600" in line
    assert SECRET_KEY not in out.stderr
    with pytest.raises(s3.ConfigError):
        s3.load_config(cfg)
    assert s3.load_config(cfg, allow_insecure=True)["s3"]["access_key_id"] == ACCESS_KEY
    out = run([BUCKET, mnt, "--config", cfg, "--allow-insecure-config"])
    assert out.returncode == 0, out.stderr
    force_unmount(mnt)


def test_mountpoint_not_empty_refused(seaweed, workdir):
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    open(os.path.join(mnt, "local-file"), "w").close()
    out = run([BUCKET, mnt, "--endpoint", seaweed.endpoint])
    assert out.returncode != 0 and "not empty" in one_line(out)
    assert os.listdir(mnt) == ["local-file"]
    out = run([BUCKET, mnt, "--endpoint", seaweed.endpoint, "-o", "nonempty",
               "--cache-dir", os.path.join(workdir, "c")])
    assert out.returncode == 0, out.stderr
    force_unmount(mnt)


def test_cache_and_log_permissions(mount):
    with open(mount.path("secret-data"), "w") as f:
        f.write("x" * 5000)
    assert open(mount.path("secret-data")).read() == "x" * 5000
    for root, dirs, files in os.walk(mount.cache):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o600, name


def test_not_allow_other_unless_asked(mount):
    line = [l for l in open("/proc/mounts") if f" {mount.mnt} " in l][0]
    assert "allow_other" not in line


def test_tls_is_verified_by_default(workdir):
    key, crt = os.path.join(workdir, "k.pem"), os.path.join(workdir, "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            try:
                ctx.wrap_socket(c, server_side=True).close()
            except (ssl.SSLError, OSError):
                c.close()
    threading.Thread(target=serve, daemon=True).start()
    try:
        st = s3.RemoteStore(s3.S3Connection(endpoint=f"https://127.0.0.1:{port}",
                                            access_key_id="a", secret_access_key="b",
                                            default_bucket=BUCKET))
        t0 = time.monotonic()
        with pytest.raises(s3.RemoteStoreError, match="TLS"):
            st.exists("k")
        assert time.monotonic() - t0 < 5  # a certificate failure is not retried
        # The same server with its certificate as the CA bundle: the handshake succeeds (the
        # server then hangs up, which is a transport failure, not a TLS one).
        for verify in (crt, False):
            st = s3.RemoteStore(s3.S3Connection(endpoint=f"https://127.0.0.1:{port}",
                                                access_key_id="a", secret_access_key="b",
                                                default_bucket=BUCKET, verify_tls=verify,
                                                max_attempts=1))
            with pytest.raises(s3.RemoteStoreError) as info:
                st.exists("k")
            assert "TLS" not in str(info.value)
    finally:
        srv.close()


def test_disabling_tls_verification_is_logged(caplog):
    with caplog.at_level("WARNING"):
        s3.S3Connection(endpoint="https://example.invalid", verify_tls=False,
                        access_key_id="a", secret_access_key="b")
    assert "verification is OFF" in caplog.text


def test_full_disk_under_cache_gives_enospc_and_loses_nothing(seaweed, store, prefix, workdir):
    cachefs = os.path.join(workdir, "cachefs")
    os.makedirs(cachefs)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", cachefs], check=True)
    try:
        m = Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), workdir=os.path.join(workdir, "m"))
        m.cache = os.path.join(cachefs, "c")
        m.argv[m.argv.index("--cache-dir") + 1] = m.cache
        with m:
            with open(m.path("safe"), "wb") as f:
                f.write(b"s" * 1000)
            err = None
            try:
                with open(m.path("big"), "wb") as f:
                    for _ in range(64):
                        f.write(os.urandom(1 << 20))
            except OSError as e:
                err = e
            assert err is not None and err.errno == errno.ENOSPC
            assert store.client.get_bytes(BUCKET, prefix + "safe")[0] == b"s" * 1000
            assert open(m.path("safe"), "rb").read() == b"s" * 1000
    finally:
        subprocess.run(["umount", "-l", cachefs])


def test_object_changed_or_deleted_behind_an_open_file(mount, store, prefix, workdir):
    src = os.path.join(workdir, "src")
    with open(src, "wb") as f:
        f.write(os.urandom(4 << 20))
    assert store.write(src, prefix + "moving")
    time.sleep(1.1)
    f = open(mount.path("moving"), "rb", buffering=0)
    first = f.read(1024)
    assert first == open(src, "rb").read(1024)
    store.client.put(BUCKET, prefix + "moving", b"replaced behind our back")
    f.seek(3 << 20)
    with pytest.raises(OSError) as e:
        f.read(1024)  # never old-and-new mixed: the ranged GET is pinned to the ETag read
    assert e.value.errno == errno.ESTALE
    f.close()
    time.sleep(1.1)
    assert open(mount.path("moving"), "rb").read() == b"replaced behind our back"
    g = open(mount.path("moving"), "rb", buffering=0)
    store.client.delete(BUCKET, prefix + "moving")
    assert g.read() == b"replaced behind our back"  # cached whole at open: still readable
    g.close()
    time.sleep(1.1)
    assert not os.path.exists(mount.path("moving"))


def test_no_bucket_anywhere(seaweed, workdir):
    cfg = _yaml(os.path.join(workdir, "nobucket.yaml"), {"s3": {"endpoint": seaweed.endpoint}})
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    out = run(["--config", cfg, mnt])
    assert out.returncode != 0 and "no bucket" in one_line(out)
