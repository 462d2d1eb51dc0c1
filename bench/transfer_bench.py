#!/usr/bin/env python3
"""Whole-file S3 transfer throughput: s3mount's RemoteStore vs `aws s3 cp` vs `rclone copyto`.

Starts its own SeaweedFS (../shared/bench/s3server) on loopback, primes the bucket with one
32 MiB write+delete, makes a --size-mib test file, then for each repetition every contender
uploads the file and downloads it back (order rotated per repetition). Every transfer is one
process, timed from spawn to exit (so every tool pays its own interpreter/binary start-up);
for s3mount the in-process time is also recorded. Downloads are sha256-checked afterwards,
outside the timed part. The server is stopped in a finally.

  python bench/transfer_bench.py                       # 1 GiB, 3 reps, s3mount/awscli/rclone
  python bench/transfer_bench.py --contenders s3mount,s3mount@16/16,awscli,awscli@16/16,rclone
  python bench/transfer_bench.py --profile /tmp/prof   # py-spy the s3mount worker instead

Contender specs (comma list for --contenders):
  s3mount[@PART_MIB/CONC][:SRC]  RemoteStore; defaults from S3Connection (8 MiB parts, 8 threads)
                                 unless --part-size/--concurrency say otherwise; SRC = a
                                 directory holding another copy of the `s3mount` package
  awscli[@CONC/CHUNK_MB]         aws s3 cp; with @, `aws configure set default.s3.
                                 max_concurrent_requests CONC` and `multipart_chunksize CHUNK_MB`
                                 in a private AWS_CONFIG_FILE (~/.aws is never touched)
  rclone                         rclone copyto with fsbench's baseline flags (8 x 16M chunks up,
                                 8 streams down)
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1024 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
S3SERVER = os.path.join(REPO, "..", "shared", "bench", "s3server")
QUIET = 0.35  # a transfer is "quiet" when the rest of the machine used < 0.35 core meanwhile
AK, SK, BUCKET, REGION = "benchAK", "benchSK-transfer-0123456789", "benchbucket", "us-east-1"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the s3mount worker (runs in its own process, like the other tools) ------------------------
def worker(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="transfer_bench.py _worker")
    ap.add_argument("direction", choices=("up", "down"))
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--part-size", type=int, default=None, help="MiB")
    ap.add_argument("--concurrency", type=int, default=None)
    a = ap.parse_args(argv)
    from s3mount.store import RemoteStore, S3Connection  # after PYTHONPATH, so SRC can override
    import s3mount
    kw = {}
    if a.part_size:
        kw["part_size"] = a.part_size * MiB
    if a.concurrency:
        kw["max_concurrency"] = a.concurrency
        kw["max_connections"] = max(32, a.concurrency)
    conn = S3Connection(access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                        endpoint=a.endpoint, tls=False, region=REGION, addressing_style="path",
                        default_bucket=a.bucket, **kw)
    store = RemoteStore(conn)
    t0 = time.perf_counter()
    if a.direction == "up":
        ok = store.write(a.file, a.key)
    else:
        ok, _ = store.read(a.key, a.file)
    dt = time.perf_counter() - t0
    store.close()
    print(json.dumps({"ok": bool(ok), "seconds": dt, "package": os.path.dirname(s3mount.__file__),
                      "part_size": conn.part_size, "concurrency": conn.max_concurrency}))
    sys.exit(0 if ok else 1)


# -- contenders -------------------------------------------------------------------------------
class Contender:
    def __init__(self, spec: str, args, workdir: str, endpoint: str):
        self.spec = spec
        self.args, self.workdir, self.endpoint = args, workdir, endpoint
        kind, _, src = spec.partition(":")
        self.kind, _, tune = kind.partition("@")
        self.src = os.path.abspath(src) if src else None
        self.tune = tuple(int(x) for x in tune.split("/")) if tune else None
        if self.kind not in ("s3mount", "awscli", "rclone"):
            raise SystemExit(f"unknown contender {spec!r}")
        if self.kind == "rclone" and (self.tune or self.src):
            raise SystemExit("rclone takes no @tuning or :src")
        if self.kind == "awscli" and self.src:
            raise SystemExit("awscli takes no :src")
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK,
                        AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION)
        if self.kind == "s3mount":
            part, conc = self.tune or (args.part_size, args.concurrency)
            self.part, self.conc = part, conc
            self.label = "s3mount" + (f" ({part or 8} MiB x {conc or 8})")
            if self.src:
                self.label += f" [{self.src}]"
                self.env["PYTHONPATH"] = self.src + os.pathsep + self.env.get("PYTHONPATH", "")
        elif self.kind == "awscli":
            self.aws = shutil.which("aws") or os.path.join(os.path.dirname(sys.executable), "aws")
            cfg = os.path.join(workdir, "aws-%s.config" % (spec.replace("/", "-").replace("@", "_")))
            open(cfg, "w").close()
            creds = os.path.join(workdir, "aws-empty-credentials")
            open(creds, "a").close()
            self.env.update(AWS_CONFIG_FILE=cfg, AWS_SHARED_CREDENTIALS_FILE=creds)
            if self.tune:
                conc, chunk = self.tune
                for k, v in (("default.s3.max_concurrent_requests", str(conc)),
                             ("default.s3.multipart_chunksize", f"{chunk}MB")):
                    subprocess.run([self.aws, "configure", "set", k, v], env=self.env, check=True)
                self.label = f"aws s3 cp ({conc} req x {chunk} MB)"
            else:
                self.label = "aws s3 cp (defaults: 10 req x 8 MB)"
        else:
            self.rclone = shutil.which("rclone") or os.path.join(os.path.dirname(sys.executable), "rclone")
            self.rclone_conf = os.path.join(workdir, "rclone-empty.conf")
            open(self.rclone_conf, "a").close()
            self.label = "rclone copyto (8 x 16M up, 8 streams down)"

    def command(self, direction: str, key: str, path: str) -> list[str]:
        if self.kind == "s3mount":
            cmd = [sys.executable, os.path.abspath(__file__), "_worker", direction,
                   "--endpoint", self.endpoint, "--bucket", BUCKET, "--key", key, "--file", path]
            if self.part:
                cmd += ["--part-size", str(self.part)]
            if self.conc:
                cmd += ["--concurrency", str(self.conc)]
            return cmd
        if self.kind == "awscli":
            common = [self.aws, "--endpoint-url", self.endpoint, "--region", REGION, "s3", "cp",
                      "--only-show-errors"]
            remote = f"s3://{BUCKET}/{key}"
            return common + ([path, remote] if direction == "up" else [remote, path])
        # The on-the-fly remote of fsbench's baseline, flag for flag.
        common = [self.rclone, "--config", self.rclone_conf, "--s3-provider", "Other",
                  "--s3-endpoint", self.endpoint, "--s3-access-key-id", AK,
                  "--s3-secret-access-key", SK, "--s3-region", REGION,
                  "--s3-force-path-style=true", "--s3-no-check-bucket"]
        remote = f":s3:{BUCKET}/{key}"
        if direction == "up":
            return common + ["copyto", path, remote, "--s3-upload-concurrency", "8",
                             "--s3-chunk-size", "16M", "--s3-disable-checksum", "--no-check-dest"]
        return common + ["copyto", remote, path, "--multi-thread-streams", "8",
                         "--multi-thread-cutoff", "16M", "--no-check-dest"]

    def run(self, direction: str, key: str, path: str, timeout: float) -> dict:
        cmd = self.command(direction, key, path)
        waited = wait_quiet(self.args.wait_quiet, self.args.server_pid)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0 = server_cpu(self.args.server_pid)
        b0 = busy_cpu()
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)
        wall = time.perf_counter() - t0
        s1 = server_cpu(self.args.server_pid)
        b1 = busy_cpu()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            raise RuntimeError(f"{self.label} {direction} failed ({r.returncode}): "
                               f"{(r.stderr or r.stdout)[-600:]}")
        out = {"wall": wall, "cpu": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
               "server_cpu": s1 - s0, "waited": waited}
        # Everything else the machine did meanwhile (other processes, kernel): a noise gauge.
        out["other_cpu"] = max(0.0, (b1 - b0) - out["cpu"] - out["server_cpu"])
        if self.kind == "s3mount":
            out["inner"] = json.loads(r.stdout.strip().splitlines()[-1])["seconds"]
        return out


# -- helpers ----------------------------------------------------------------------------------
def make_file(path: str, size_mib: int) -> str:
    """size_mib MiB of incompressible data: one random MiB, each copy prefixed with a counter."""
    block = bytearray(os.urandom(MiB))
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size_mib):
            block[:16] = b"%016d" % i
            f.write(block)
            h.update(block)
    return h.hexdigest()


def server_cpu(pid: int | None) -> float:
    """User+system CPU seconds the SeaweedFS process (all its threads) has used so far."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu() -> float:
    """CPU seconds all CPUs of the machine have spent busy (not idle/iowait) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float, server_pid: int | None) -> float:
    """Wait (at most `limit` s) for a 1 s window in which the machine, less the S3 server, used
    < QUIET core: on a shared box this keeps other jobs' bursts out of more samples."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        b0, s0 = busy_cpu(), server_cpu(server_pid)
        time.sleep(1.0)
        if (busy_cpu() - b0) - (server_cpu(server_pid) - s0) < QUIET:
            break
    return time.perf_counter() - t0


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 * MiB)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def server(cmd: str, sdir: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, S3SERVER, cmd, "--dir", sdir, *extra],
                          capture_output=True, text=True)


def store_for(endpoint: str):
    from s3mount.store import RemoteStore, S3Connection
    return RemoteStore(S3Connection(access_key_id=AK, secret_access_key=SK, endpoint=endpoint,
                                    tls=False, region=REGION, addressing_style="path",
                                    default_bucket=BUCKET))


def code_version() -> str:
    """The commit of the repo the bench lives in, and whether s3mount/store differs from it."""
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "s3mount/store"],
                               capture_output=True, text=True).stdout.strip()
        return f"{rev}{' (s3mount/store modified)' if dirty else ''}"
    except OSError:
        return "unknown"


def fmt(vals: list[float]) -> str:
    if not vals:
        return "FAIL"
    return f"{statistics.median(vals):.0f} [{min(vals):.0f}-{max(vals):.0f}]"


# -- profiling --------------------------------------------------------------------------------
def summarize_raw(path: str, top: int = 25) -> str:
    """Self and inclusive sample counts by function from py-spy's collapsed (raw) output."""
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(n)
            total += n
            raw = stack.split(";")
            frames = [fr.split(" (")[0] + " (" + fr.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                      if " (" in fr else fr for fr in raw]
            leaf = raw[-1].replace(os.path.dirname(REPO) + "/", "")
            self_c[leaf] = self_c.get(leaf, 0) + n
            for fr in set(frames):
                incl[fr] = incl.get(fr, 0) + n
    if not total:
        return f"{path}: no samples\n"
    lines = [f"{os.path.basename(path)}: {total} samples", "  self time (leaf frames):"]
    for fr, n in sorted(self_c.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * n / total:5.1f}%  {fr}")
    lines.append("  inclusive time:")
    for fr, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * n / total:5.1f}%  {fr}")
    return "\n".join(lines) + "\n"


def profile(c: Contender, args, data_path: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    key = "bench/profile.bin"
    down_path = os.path.join(os.path.dirname(data_path), "download.bin")
    report = []
    for mode, extra in (("cpu", []), ("gil", ["--gil"]), ("idle", ["--idle"])):
        for direction in ("up", "down"):
            path = data_path if direction == "up" else down_path
            out = os.path.join(out_dir, f"{direction}-{mode}.txt")
            cmd = [pyspy, "record", "--format", "raw", "--rate", "250", "--nonblocking",
                   "-o", out, *extra, "--", *c.command(direction, key, path)]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=c.env)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                raise RuntimeError(f"py-spy {direction}: {r.stderr[-800:]}")
            line = f"== {direction} / {mode}: {args.size_mib / dt:.0f} MiB/s under py-spy ({dt:.1f}s)"
            log(line)
            report.append(line + "\n" + summarize_raw(out))
            if direction == "down" and sha256_file(down_path) != args.sha:
                raise RuntimeError("download under py-spy returned wrong data")
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write("\n".join(report))
    print("\n".join(report))


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        return worker(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--part-size", type=int, default=None, help="MiB, for the plain `s3mount` contender")
    ap.add_argument("--concurrency", type=int, default=None, help="threads, for the plain `s3mount` contender")
    ap.add_argument("--contenders", default="s3mount,awscli,rclone")
    ap.add_argument("--workdir", default=None, help="default: a fresh temp dir, removed at the end")
    ap.add_argument("--port-base", type=int, default=22600)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per transfer")
    ap.add_argument("--json", default=None, help="write every sample here")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each transfer wait up to S seconds for a quiet second on the "
                         "machine (for shared boxes; default 0 = off)")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="instead of the table: py-spy record the first s3mount contender's "
                         "upload and download (cpu, --gil and --idle) into DIR and summarize")
    args = ap.parse_args()
    args.server_pid = None

    workdir = args.workdir or tempfile.mkdtemp(prefix="transfer-bench-")
    os.makedirs(workdir, exist_ok=True)
    sdir = os.path.join(workdir, "server")
    data_dir = os.path.join(workdir, "data")
    os.makedirs(data_dir, exist_ok=True)
    started = False
    store = None
    try:
        r = server("start", sdir, "--port-base", str(args.port_base), "--access-key", AK,
                   "--secret-key", SK, "--bucket", BUCKET)
        if r.returncode != 0:
            raise SystemExit(f"s3server start failed:\n{r.stderr[-2000:]}")
        started = True
        endpoint = r.stdout.strip().splitlines()[-1]
        with open(os.path.join(sdir, "s3server.json")) as f:
            args.server_pid = json.load(f)["pid"]
        log(f"SeaweedFS at {endpoint} (dir {sdir}, pid {args.server_pid})")

        store = store_for(endpoint)
        prime = os.path.join(data_dir, "prime.bin")
        with open(prime, "wb") as f:
            f.write(os.urandom(32 * MiB))
        if not (store.write(prime, "prime.bin") and store.delete("prime.bin")):
            raise SystemExit("priming write+delete failed")
        os.unlink(prime)

        src = os.path.join(data_dir, "src.bin")
        t0 = time.perf_counter()
        args.sha = make_file(src, args.size_mib)
        log(f"test file: {args.size_mib} MiB in {time.perf_counter() - t0:.1f}s, sha256 {args.sha[:16]}")
        dst = os.path.join(data_dir, "download.bin")

        contenders = [Contender(s.strip(), args, workdir, endpoint)
                      for s in args.contenders.split(",") if s.strip()]
        if args.profile:
            prof = next(c for c in contenders if c.kind == "s3mount")
            profile(prof, args, src, args.profile)
            return

        code_start = code_version()
        samples: dict[tuple[str, str], list[dict]] = {(c.spec, d): [] for c in contenders
                                                      for d in ("up", "down")}
        failures = []
        for rep in range(args.reps):
            k = rep % len(contenders)
            for c in contenders[k:] + contenders[:k]:
                key = f"bench/{c.spec.replace('/', '-').replace(':', '_')}-r{rep}.bin"
                try:
                    up = c.run("up", key, src, args.timeout)
                    up["mibs"] = args.size_mib / up["wall"]
                    if os.path.exists(dst):
                        os.unlink(dst)
                    down = c.run("down", key, dst, args.timeout)
                    down["mibs"] = args.size_mib / down["wall"]
                    ok = sha256_file(dst) == args.sha
                    os.unlink(dst)
                    if not ok:
                        raise RuntimeError(f"{c.label}: downloaded data differs (sha256)")
                    samples[(c.spec, "up")].append(up)
                    samples[(c.spec, "down")].append(down)
                    extra = ""
                    if "inner" in up:
                        extra = (f" (in-process {args.size_mib / up['inner']:.0f} / "
                                 f"{args.size_mib / down['inner']:.0f})")
                    log(f"rep {rep + 1}/{args.reps} {c.label}: up {up['mibs']:.0f} MiB/s "
                        f"cpu {up['cpu']:.1f}s+{up['server_cpu']:.1f}s, down {down['mibs']:.0f} MiB/s "
                        f"cpu {down['cpu']:.1f}s+{down['server_cpu']:.1f}s; other load "
                        f"{up['other_cpu']:.1f}s/{down['other_cpu']:.1f}s{extra}")
                except Exception as e:  # one tool failing must not sink the others' numbers
                    failures.append(f"rep {rep + 1} {c.label}: {e}")
                    log(f"FAIL {failures[-1]}")
                finally:
                    store.delete(key)

        # -- report ---------------------------------------------------------------------------
        def med(spec, d, field="mibs"):
            v = [s[field] for s in samples[(spec, d)]]
            return statistics.median(v) if v else None

        mine = next((c for c in contenders if c.kind == "s3mount"), None)
        code_end = code_version()
        code = code_start if code_start == code_end else f"{code_start} at start, {code_end} at end (changed mid-run!)"
        print(f"\n{datetime.datetime.now().isoformat(timespec='seconds')}, s3mount at {code}")
        peers = [c for c in contenders if c.kind != "s3mount"]
        print(f"\n{args.size_mib} MiB, {args.reps} reps, median [min-max] MiB/s, wall time of the "
              f"whole command (process start included); cpu = median CPU seconds (user+sys) of "
              f"the client process + of the SeaweedFS process during the transfer; other load = "
              f"CPU seconds the rest of the machine used meanwhile (noise gauge); quiet-only = median "
              f"over the transfers during which the rest of the machine used < {QUIET} core\n")
        print("| contender | upload MiB/s | download MiB/s | cpu up s (client+server) "
              "| cpu down s (client+server) | other load up/down s | quiet-only up / down |")
        print("|---|---|---|---|---|---|---|")
        for c in contenders:
            cells = [fmt([s["mibs"] for s in samples[(c.spec, d)]]) for d in ("up", "down")]
            quiet = []
            for d in ("up", "down"):
                q = [s["mibs"] for s in samples[(c.spec, d)] if s["other_cpu"] < QUIET * s["wall"]]
                quiet.append(f"{statistics.median(q):.0f} (n={len(q)})" if q else "- (n=0)")
            cpu = []
            for d in ("up", "down"):
                a, b = med(c.spec, d, "cpu"), med(c.spec, d, "server_cpu")
                cpu.append("-" if a is None else f"{a:.1f} + {b:.1f}")
            other = [med(c.spec, d, "other_cpu") for d in ("up", "down")]
            other_s = "/".join("-" if x is None else f"{x:.1f}" for x in other)
            print(f"| {c.label} | {cells[0]} | {cells[1]} | {cpu[0]} | {cpu[1]} | {other_s} "
                  f"| {quiet[0]} / {quiet[1]} |")
        for c in contenders:
            if c.kind == "s3mount" and samples[(c.spec, "up")]:
                inner = [fmt([args.size_mib / s["inner"] for s in samples[(c.spec, d)]])
                         for d in ("up", "down")]
                print(f"| {c.label}, in-process time only | {inner[0]} | {inner[1]} | | | | |")
        if mine and peers:
            print()
            for c in [c for c in contenders if c.kind == "s3mount"]:
                for d, name in (("up", "upload"), ("down", "download")):
                    best = max(((med(p.spec, d), p.label) for p in peers if med(p.spec, d)),
                               default=(None, None))
                    m = med(c.spec, d)
                    if m and best[0]:
                        print(f"ratio {c.label} / best peer ({best[1]}), {name}: "
                              f"{m:.0f} / {best[0]:.0f} = {m / best[0]:.2f}")
        if failures:
            print("\nfailures:\n" + "\n".join("  " + f for f in failures))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"),
                           "code": code,
                           "size_mib": args.size_mib, "reps": args.reps,
                           "samples": {f"{k[0]}|{k[1]}": v for k, v in samples.items()},
                           "labels": {c.spec: c.label for c in contenders},
                           "failures": failures}, f, indent=1)
    finally:
        if store is not None:
            store.close()
        if started:
            r = server("stop", sdir)
            log("SeaweedFS stopped" if r.returncode == 0 else f"s3server stop: {r.stderr.strip()}")
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:  # keep logs and configs; the GiBs of test file and server volumes go
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(os.path.join(sdir, "data"), ignore_errors=True)


if __name__ == "__main__":
    main()
