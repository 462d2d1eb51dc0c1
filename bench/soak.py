#!/usr/bin/env python3
"""Soak: 8 concurrent readers and writers on one s3mount for DURATION seconds, sampling the
daemon's RSS and open file descriptors; flat means no leak. Starts its own SeaweedFS.

    python3 bench/soak.py [--duration 300] [--workdir DIR] [--port-base 23300]
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import benchserver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AK, SK = "soakAK", "soakSecretKey0123456789"


def daemon_pid(mnt: str) -> int:
    real = os.path.realpath(mnt).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if any(b"s3mount" in c for c in cmd[:3]) and real in cmd:
            return int(pid)
    raise LookupError(mnt)


def sample(pid: int) -> tuple[int, int, str]:
    rss = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) // 1024
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = ("socket" if target.startswith("socket:") else "pipe" if target.startswith("pipe:")
                else "cache" if "/cache/" in target else "other")
        kinds[kind] = kinds.get(kind, 0) + 1
    return rss, sum(kinds.values()), " ".join(f"{k}={v}" for k, v in sorted(kinds.items()))


def content(version: int, size: int) -> bytes:
    """A file's bytes, recomputable from its first 16: the version number and the size."""
    head = version.to_bytes(8, "big") + size.to_bytes(8, "big")
    return (head + random.Random(version).randbytes(max(0, size - 16)))[:size]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--port-base", default="23300")
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="s3mount-soak-")
    server = os.path.join(work, "server")
    endpoint = benchserver.start(server, a.port_base, AK, SK, "soak")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK)
    subprocess.run([sys.executable, "-m", "s3mount", "soak", mnt, "--endpoint", endpoint,
                    "--cache-dir", os.path.join(work, "cache"), "--cache-size", "512M",
                    "-o", "logfile=" + os.path.join(work, "s3mount.log")], check=True, env=env)
    pid = daemon_pid(mnt)
    stop = threading.Event()
    ops = {"write": 0, "read": 0, "errors": 0, "wrong": 0, "torn": 0}
    errnos: dict[str, int] = {}

    def failed(e: OSError) -> None:
        with lock:
            ops["errors"] += 1
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            errnos[name] = errnos.get(name, 0) + 1
    written: dict[str, int] = {}  # name -> version last closed
    lock = threading.Lock()

    versions = iter(range(1, 1 << 60))

    def writer(i: int) -> None:
        rnd = random.Random(i)
        while not stop.is_set():
            name = f"w{i}-{rnd.randint(0, 19)}"
            with lock:
                version = next(versions)
            data = content(version, rnd.choice([1000, 100_000, 2_000_000, 20_000_000]))
            try:
                with open(os.path.join(mnt, name), "wb") as f:
                    f.write(data)
                with lock:
                    written[name] = version
                    ops["write"] += 1
            except OSError as e:
                failed(e)

    def check(data: bytes) -> str:
        """'ok', or 'torn' (a read overlapping a rewrite of the file: a prefix of one version,
        as on a local disk), or 'wrong' (bytes no write ever put there)."""
        if len(data) < 16:
            return "torn" if data else "ok"  # an O_TRUNC rewrite under way reads as short
        version, size = int.from_bytes(data[:8], "big"), int.from_bytes(data[8:16], "big")
        expect = content(version, size)
        if data == expect:
            return "ok"
        return "torn" if len(data) < size and expect.startswith(data[:16]) else "wrong"

    def reader(i: int) -> None:
        rnd = random.Random(100 + i)
        while not stop.is_set():
            with lock:
                if not written:
                    continue
                name = rnd.choice(sorted(written))
            try:
                try:
                    with open(os.path.join(mnt, name), "rb") as f:
                        data = f.read()
                except OSError as e:
                    if e.errno != errno.ESTALE:
                        raise
                    # replaced by a writer between lookup and read (docs/SEMANTICS.md, 27)
                    with lock:
                        ops["estale_reopened"] = ops.get("estale_reopened", 0) + 1
                    with open(os.path.join(mnt, name), "rb") as f:
                        data = f.read()
                verdict = check(data)
                with lock:
                    ops["read"] += 1
                    if verdict != "ok":
                        ops[verdict] = ops.get(verdict, 0) + 1
            except OSError as e:
                failed(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)] + \
              [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    samples = []
    t0 = time.time()
    try:
        while time.time() - t0 < a.duration:
            time.sleep(5)
            samples.append((round(time.time() - t0), *sample(pid)))
    finally:
        stop.set()
        for t in threads:
            t.join()
        subprocess.run(["fusermount3", "-u", mnt])
        benchserver.stop(server)
    # Baseline: the second fifth, after warm-up (the connection pool and the cache fill first).
    fifth = max(1, len(samples) // 5)
    first = samples[fifth: 2 * fifth] or samples[:fifth]
    last = samples[-fifth:]
    avg = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    print(f"soak {a.duration:.0f} s: {ops['write']} writes, {ops['read']} reads, "
          f"{ops['errors']} errors {errnos}, {ops.get('estale_reopened', 0)} reads reopened "
          f"after ESTALE; reads with wrong bytes: {ops['wrong']}, torn by a concurrent rewrite "
          f"(a prefix of one version): {ops['torn']}")
    print("| t (s) | RSS (MiB) | open fds | fds by kind |\n|---|---|---|---|")
    for t, rss, fds, kinds in samples[:: max(1, len(samples) // 12)] + [samples[-1]]:
        print(f"| {t} | {rss} | {fds} | {kinds} |")
    print(f"RSS second fifth avg {avg(first, 1):.0f} MiB, last fifth avg {avg(last, 1):.0f} MiB, "
          f"peak {max(r[1] for r in samples)} MiB; fds second fifth {avg(first, 2):.0f}, "
          f"last {avg(last, 2):.0f}")
    flat = avg(last, 1) <= avg(first, 1) * 1.25 + 8 and avg(last, 2) <= avg(first, 2) + 8
    print("flat (no leak):", flat)
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if flat and ops["errors"] == 0 and ops["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
