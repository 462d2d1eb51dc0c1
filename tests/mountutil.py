"""Real FUSE mounts for tests: s3mount runs in a subprocess and is always unmounted in teardown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

from conftest import ACCESS_KEY, SECRET_KEY


def mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def force_unmount(path: str) -> None:
    for cmd in (["fusermount3", "-u", path], ["fusermount3", "-uz", path], ["umount", "-l", path]):
        if not mounted(path):
            return
        subprocess.run(cmd, capture_output=True, timeout=60)
        time.sleep(0.05)


def archive_log(path: str) -> None:
    """Keep a copy of a log for the end-of-suite scan for secrets (test_zz_logs.py)."""
    dest = os.environ.get("S3MOUNT_TEST_LOGS")
    if dest and os.path.exists(path):
        shutil.copy(path, os.path.join(dest, f"{time.time_ns()}-{os.path.basename(path)}"))


class Mount:
    """`s3mount BUCKET[:/PREFIX] MNT -f` in a subprocess, credentials from the environment."""

    def __init__(self, endpoint: str, bucket: str, prefix: str = "", *, options: list[str] = (),
                 config: dict | None = None, env: dict | None = None, workdir: str | None = None,
                 launcher: list[str] = ()):
        self.workdir = workdir or tempfile.mkdtemp(prefix="s3mount-mnt-")
        self.mnt = os.path.join(self.workdir, "mnt")
        self.cache = os.path.join(self.workdir, "cache")
        self.log = os.path.join(self.workdir, "s3mount.log")
        os.makedirs(self.mnt, exist_ok=True)
        source = f"{bucket}:/{prefix}" if prefix else bucket
        # launcher: e.g. nsenter into a network namespace, in front of the command
        self.argv = [*launcher, sys.executable, "-m", "s3mount", source, self.mnt, "-f",
                     "--cache-dir", self.cache, "--log-level", "debug", *options]
        if config is not None:
            path = os.path.join(self.workdir, "s3mount.yaml")
            with open(path, "w") as f:
                yaml.safe_dump({"s3": {"endpoint": endpoint, **config}}, f)
            os.chmod(path, 0o600)
            self.argv += ["--config", path]
        else:
            self.argv += ["--endpoint", endpoint]
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                        AWS_REGION="us-east-1", **(env or {}))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "Mount":
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if mounted(self.mnt):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3mount exited {self.proc.returncode}: {self.log_text()[-3000:]}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mount did not come up: {self.log_text()[-3000:]}")

    def stop(self) -> int | None:
        force_unmount(self.mnt)
        if self.proc is not None:
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(timeout=10)
        return None

    def restart(self, keep_cache: bool = False) -> "Mount":
        self.stop()
        if not keep_cache:
            shutil.rmtree(self.cache, ignore_errors=True)
        return self.start()

    def path(self, *parts: str) -> str:
        return os.path.join(self.mnt, *parts)

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        archive_log(self.log)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Mount":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
