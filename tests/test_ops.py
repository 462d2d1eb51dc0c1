"""Running s3mount for real: the systemd unit, mount(8) and fstab, signals, dead mounts, logs
and live stats."""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml

from conftest import ACCESS_KEY, BUCKET, REPO, SECRET_KEY
from mountutil import Mount, archive_log, force_unmount, mounted

UNIT = os.path.join(REPO, "systemd", "s3mount@.service")
MiB = 1 << 20


def write_config(path: str, endpoint: str, **mount) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump({"s3": {"endpoint": endpoint, "access_key_id": ACCESS_KEY,
                               "secret_access_key": SECRET_KEY}, "mount": mount}, f)
    os.chmod(path, 0o600)
    return path


def daemon_pid(mountpoint: str) -> int:
    real = os.path.realpath(mountpoint)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if any(b"s3mount" in c for c in cmd[:3]) and real.encode() in cmd:
            return int(pid)
    raise LookupError(f"no s3mount daemon for {mountpoint}")


def test_systemd_unit_verifies():
    assert shutil.which("systemd-analyze"), "systemd-analyze missing (apt-get install systemd)"
    out = subprocess.run(["systemd-analyze", "verify", UNIT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "s3mount" not in out.stderr, out.stderr  # no warnings about our unit either


def _exec_start(instance: str) -> list[str]:
    cp = configparser.RawConfigParser(strict=False)
    cp.optionxform = str
    with open(UNIT) as f:
        cp.read_file(f)
    assert cp["Service"]["Type"] == "notify"
    line = cp["Service"]["ExecStart"].replace("%i", instance)
    return shlex.split(line)


def test_unit_execstart_ready_after_mount_and_sigterm_finishes_upload(seaweed, store, workdir):
    instance = f"pytest-{uuid.uuid4().hex[:8]}"
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    conf = write_config(f"/etc/s3mount/{instance}.yaml", seaweed.endpoint, bucket=BUCKET,
                        prefix=instance, mountpoint=mnt)
    notify_path = os.path.join(workdir, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(60)
    argv = _exec_start(instance)
    assert argv[0] == "/usr/local/bin/s3mount" and os.path.exists(argv[0])
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "NOTIFY_SOCKET": notify_path, "LANG": "C.UTF-8"}
    log_path = os.path.join(workdir, "journal.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        msg = notify.recv(4096).decode()
        assert "READY=1" in msg
        assert mounted(mnt)  # ready means answering, not "about to be"
        os.listdir(mnt)
        # A large write is under way when SIGTERM arrives.
        h = hashlib.sha256()
        block = os.urandom(MiB)
        with open(os.path.join(mnt, "big"), "wb") as f:
            for i in range(160):
                chunk = i.to_bytes(4, "little") + block[4:]
                h.update(chunk)
                f.write(chunk)
                if i == 80:
                    proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 0
        assert "STOPPING=1" in notify.recv(4096).decode()
        assert not mounted(mnt)
        info = store.client.head(BUCKET, f"{instance}/big")
        assert info.size == 160 * MiB
        back = os.path.join(workdir, "back")
        assert store.read(f"{instance}/big", back)[0]
        with open(back, "rb") as fb:
            assert hashlib.sha256(fb.read()).hexdigest() == h.hexdigest()
    finally:
        if proc.poll() is None:
            proc.kill()
        force_unmount(mnt)
        notify.close()
        log.close()
        archive_log(log_path)
        os.unlink(conf)
        shutil.rmtree(f"/var/cache/s3mount/{instance}", ignore_errors=True)


def _mount_env():
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def test_mount_t_fuse_s3mount_and_fstab_line(seaweed, store, workdir, prefix):
    conf = write_config(os.path.join(workdir, "data.yaml"), seaweed.endpoint)
    store.client.put(BUCKET, prefix + "hello", b"via mount(8)")
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    opts = f"config={conf},cache_dir={workdir}/c1,logfile={workdir}/m.log"
    try:
        out = subprocess.run(["mount", "-t", "fuse.s3mount", f"{BUCKET}:/{prefix}", mnt, "-o", opts],
                             capture_output=True, text=True, env=_mount_env(), timeout=60)
        assert out.returncode == 0, out.stderr
        assert open(os.path.join(mnt, "hello")).read() == "via mount(8)"
        assert subprocess.run(["umount", mnt], timeout=60).returncode == 0
        assert not mounted(mnt)
        fstab = os.path.join(workdir, "fstab")
        with open(fstab, "w") as f:
            f.write(f"{BUCKET}:/{prefix} {mnt} fuse.s3mount _netdev,{opts},allow_other 0 0\n")
        out = subprocess.run(["mount", "-T", fstab, mnt], capture_output=True, text=True,
                             env=_mount_env(), timeout=60)
        assert out.returncode == 0, out.stderr
        assert "allow_other" in open("/proc/mounts").read()
        assert open(os.path.join(mnt, "hello")).read() == "via mount(8)"
        assert subprocess.run(["umount", mnt], timeout=60).returncode == 0
        assert not mounted(mnt)
    finally:
        force_unmount(mnt)
        archive_log(f"{workdir}/m.log")


def test_sigkill_then_mount_again(seaweed, workdir, prefix):
    conf = write_config(os.path.join(workdir, "c.yaml"), seaweed.endpoint)
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    argv = ["/usr/local/bin/s3mount", f"{BUCKET}:/{prefix}", mnt, "--config", conf,
            "--cache-dir", f"{workdir}/cache", "-o", f"logfile={workdir}/m.log"]
    try:
        assert subprocess.run(argv, timeout=60).returncode == 0
        os.kill(daemon_pid(mnt), signal.SIGKILL)
        time.sleep(0.3)
        with pytest.raises(OSError) as e:
            os.listdir(mnt)
        assert e.value.errno == 107  # ENOTCONN: the dead mount peers complain about
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        with open(os.path.join(mnt, "alive"), "w") as f:
            f.write("yes")
        assert os.listdir(mnt) == ["alive"]
        assert "dead FUSE mount" in open(f"{workdir}/m.log").read()
    finally:
        force_unmount(mnt)
        archive_log(f"{workdir}/m.log")


def test_stats_shows_upload_in_flight(mount):
    seen = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            out = subprocess.run([sys.executable, "-m", "s3mount", "stats", mount.mnt, "--json"],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                d = json.loads(out.stdout)
                if d["uploads"]:
                    seen.append(d)
            time.sleep(0.02)
    t = threading.Thread(target=poll)
    t.start()
    try:
        block = os.urandom(MiB)
        with open(mount.path("upload"), "wb") as f:
            for _ in range(200):
                f.write(block)
    finally:
        stop.set()
        t.join()
    assert seen, "no stats sample showed the upload"
    up = seen[-1]["uploads"][0]
    assert up["path"] == "/upload" and up["size"] > 0 and 0 <= up["sent"] <= up["size"]
    text = subprocess.run([sys.executable, "-m", "s3mount", "stats", mount.mnt],
                          capture_output=True, text=True).stdout
    for word in ("requests", "transfer", "cache", "hit rate", "kernel", "dirty", "uploads",
                 "errors"):
        assert word in text
    assert json.loads(subprocess.run([sys.executable, "-m", "s3mount", "stats", mount.mnt,
                                      "--json"], capture_output=True, text=True).stdout
                      )["requests"]["UploadPart"] >= 10


def test_failed_request_logged_once_with_details(seaweed, proxy, store, prefix, workdir):
    store.client.put(BUCKET, prefix + "f", b"data")
    config = {"max_attempts": 2, "retry_base_delay": 0.01}
    with Mount(proxy.endpoint, BUCKET, prefix.rstrip("/"), config=config,
               workdir=os.path.join(workdir, "m")) as m:
        proxy.rule = lambda meth, t, h: ("status", 500, "InternalError") if meth == "GET" and "list" not in t else None
        with pytest.raises(OSError) as e:
            open(m.path("f")).read()
        assert e.value.errno == 5
        lines = [l for l in m.log_text().splitlines() if "S3 request failed" in l]
        # each failed request (2 attempts each, both injected) is logged exactly once
        assert lines and len(lines) == proxy.injected["status-500"] // 2, lines
        for part in ("op=GetObject", f"object={BUCKET}/{prefix}f", "status=500",
                     "code=InternalError", "request_id=FAULT"):
            assert all(part in line for line in lines)


def test_sighup_reopens_log(seaweed, prefix, workdir):
    logfile = os.path.join(workdir, "rotating.log")
    with Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), options=["-o", f"logfile={logfile}"],
               workdir=os.path.join(workdir, "m")) as m:
        deadline = time.time() + 10
        while "mount ready" not in open(logfile).read() and time.time() < deadline:
            time.sleep(0.05)  # logged just after the mount appears
        assert "mount ready" in open(logfile).read()
        os.rename(logfile, logfile + ".1")  # what logrotate does
        os.kill(daemon_pid(m.mnt), signal.SIGHUP)
        deadline = time.time() + 10
        while not os.path.exists(logfile) and time.time() < deadline:
            with open(m.path("x"), "w") as f:
                f.write("x")
            time.sleep(0.2)
        assert os.path.exists(logfile)
        archive_log(logfile + ".1")
    archive_log(logfile)


def test_version_and_help_list_subcommands():
    out = subprocess.run([sys.executable, "-m", "s3mount", "--help"], capture_output=True, text=True)
    assert "s3mount stats MOUNTPOINT" in out.stdout and "examples:" in out.stdout
