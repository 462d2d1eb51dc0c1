#!/usr/bin/env python3
"""fsbench's small-file and xattr rows against one s3mount, with the S3 requests each phase
cost (from `s3mount stats`): a quick check of what a change does to requests per file.

    python3 bench/small_phases.py [--files 500] [--port-base 23500] [--workdir DIR]

Starts its own SeaweedFS with ../shared/bench/s3server and stops it at the end. Phases, each
after a cold remount where fsbench has one: create, `ls -l`, stat, read, delete, setxattr,
getxattr. Prints rate, wall time and request counts per phase; rates drift a lot between runs
on a small VM, request counts do not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import benchserver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AK, SK, BUCKET = "smallAK", "smallSK", "small"


class Mount:
    def __init__(self, endpoint: str, work: str):
        self.endpoint = endpoint
        self.mnt = os.path.join(work, "mnt")
        self.cache = os.path.join(work, "cache")
        self.log = os.path.join(work, "s3mount.log")
        os.makedirs(self.mnt, exist_ok=True)

    def start(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)  # cold: nothing cached locally
        env = dict(os.environ, AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK)
        subprocess.run([sys.executable, "-m", "s3mount", BUCKET, self.mnt, "--endpoint",
                        self.endpoint, "--cache-dir", self.cache, "-o", "logfile=" + self.log],
                       check=True, env=env, cwd=REPO)

    def stop(self) -> None:
        subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        time.sleep(0.3)

    def restart(self) -> None:
        self.stop()
        self.start()

    def requests(self) -> dict[str, int]:
        out = subprocess.run([sys.executable, "-m", "s3mount", "stats", self.mnt, "--json"],
                             capture_output=True, text=True, check=True, cwd=REPO).stdout
        return json.loads(out)["requests"]


def phase(m: Mount, name: str, fn, n: int) -> None:
    before = m.requests()
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    after = m.requests()
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    print(f"{name:9s} {n / dt:8.0f}/s {dt * 1000:8.1f} ms  {delta}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--port-base", default="23500")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="s3mount-small-")
    server = os.path.join(work, "server")
    endpoint = benchserver.start(server, a.port_base, AK, SK, BUCKET)
    m = Mount(endpoint, work)
    n = a.files
    data = os.urandom(4096)
    d, x = os.path.join(m.mnt, "small"), os.path.join(m.mnt, "xattr")
    names = [os.path.join(d, f"f{i:04d}") for i in range(n)]
    try:
        m.start()
        os.makedirs(d)

        def create():
            for p in names:
                with open(p, "wb") as f:
                    f.write(data)

        def read():
            for p in names:
                with open(p, "rb") as f:
                    assert f.read() == data
        phase(m, "create", create, n)
        m.restart()
        phase(m, "ls -l", lambda: subprocess.run(["ls", "-l", d], stdout=subprocess.DEVNULL,
                                                 check=True), n)
        m.restart()
        phase(m, "stat", lambda: [os.stat(p) for p in names], n)
        m.restart()
        phase(m, "read", read, n)
        phase(m, "delete", lambda: [os.unlink(p) for p in names], n)
        os.makedirs(x)
        tagged = [os.path.join(x, f"f{i:03d}") for i in range(100)]
        for p in tagged:
            with open(p, "wb") as f:
                f.write(b"x")
        phase(m, "setxattr", lambda: [os.setxattr(p, "user.bench", p.encode()) for p in tagged],
              len(tagged))
        m.restart()
        phase(m, "getxattr", lambda: [os.getxattr(p, "user.bench") for p in tagged], len(tagged))
    finally:
        m.stop()
        benchserver.stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
