"""Where the CPU goes in a cold sequential read through s3mount: wall time and the CPU seconds
of the daemon, the S3 server (every `weed` process), the reader and the whole machine.

The reader mimics fsbench's seq read row: 1 MiB read()s, sha256 in a second thread
(--no-hash: the same without the hashing, which fsbench's direct-download ceiling does untimed).

    python bench/seq_cpu.py --bucket bench1 --key big.bin --reps 3 [-- extra s3mount args]

Needs a server (../shared/bench/s3server start ... ; eval "$(s3server env --dir D | grep export)")
with the object in it; root for --drop-caches. A measuring tool only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import resource
import shutil
import subprocess
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / HZ


def procs(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def machine() -> dict[str, float]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return {n: v[i] / HZ for i, n in enumerate(names)}


def read_file(path: str, hash_it: bool = True) -> int:
    q: queue.Queue = queue.Queue(maxsize=8)
    h = hashlib.sha256()

    def hasher():
        while (b := q.get()) is not None:
            if hash_it:
                h.update(b)
    t = threading.Thread(target=hasher)
    t.start()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while b := f.read(1 << 20):
            n += len(b)
            q.put(b)
    q.put(None)
    t.join()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", default="/tmp/seqcpu")
    ap.add_argument("--s3mount", default="s3mount")
    ap.add_argument("--drop-caches", action="store_true")
    ap.add_argument("--no-hash", action="store_true", help="read only (fsbench hashes as it reads)")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    mnt, cache = os.path.join(a.work, "mnt"), os.path.join(a.work, "cache")
    os.makedirs(mnt, exist_ok=True)
    for rep in range(a.reps):
        shutil.rmtree(cache, ignore_errors=True)
        if a.drop_caches:  # fsbench does not: the server then reads its volumes from disk
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1")
        subprocess.run([a.s3mount, a.bucket, mnt, "--endpoint", os.environ["S3_ENDPOINT"],
                        "--cache-dir", cache, "-o", f"logfile={a.work}/log", *a.extra],
                       check=True)
        daemon = procs(f"s3mount {a.bucket} {mnt}")[0]
        weeds = procs("weed")
        d0, w0 = proc_cpu(daemon), sum(proc_cpu(p) for p in weeds)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        m0 = machine()
        t0 = time.monotonic()
        n = read_file(os.path.join(mnt, a.key), not a.no_hash)
        wall = time.monotonic() - t0
        m1 = machine()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        d1, w1 = proc_cpu(daemon), sum(proc_cpu(p) for p in weeds)
        reader = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        busy = sum(m1[k] - m0[k] for k in m0 if k not in ("idle", "iowait"))
        print(f"rep{rep}: {n / wall / 2**20:6.0f} MiB/s  wall {wall:5.2f} s  cpu-s: daemon "
              f"{d1 - d0:4.2f} server {w1 - w0:4.2f} reader {reader:4.2f} machine busy {busy:4.2f}"
              f" (steal {m1['steal'] - m0['steal']:.2f}, softirq {m1['softirq'] - m0['softirq']:.2f},"
              f" idle {m1['idle'] - m0['idle']:.2f})", flush=True)
        subprocess.run(["fusermount3", "-u", mnt], check=True)
        time.sleep(1)


if __name__ == "__main__":
    main()
