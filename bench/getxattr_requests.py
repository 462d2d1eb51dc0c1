"""fsbench's getxattr-after-remount steps against one mount, with the S3 requests the pass cost
(from the mount's live stats) and the latency of its first calls.

Needs a server (../shared/bench/s3server start ... --bucket bench1 --access-key AK --secret-key SK;
eval "$(s3server env --dir D | grep export)") and the s3mount command. Usage:
python bench/getxattr_requests.py
"""
import os, sys, time, subprocess, shutil
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from s3mount.stats import fetch
ep = os.environ["S3_ENDPOINT"]
mnt = "/tmp/getxattr_requests/mnt"; os.makedirs(mnt, exist_ok=True)
def mount():
    shutil.rmtree("/tmp/getxattr_requests/cache", ignore_errors=True)
    subprocess.run(["s3mount", "bench1", mnt, "--endpoint", ep, "--cache-dir", "/tmp/getxattr_requests/cache", "-o", "logfile=/tmp/getxattr_requests/log"], check=True)
def umount():
    subprocess.run(["fusermount3", "-u", mnt]); time.sleep(0.5)
for rep in range(3):
    d = f"{mnt}/xattr{os.getpid()}/r{rep}"
    mount(); os.makedirs(d, exist_ok=True)
    names = [f"x{i:04d}" for i in range(100)]
    for n in names:
        with open(f"{d}/{n}", "wb") as f: f.write(b"x" * 100)
    for n in names: os.setxattr(f"{d}/{n}", "user.fsbench", b"v-" + n.encode())
    umount(); mount()
    r0 = fetch(mnt)["requests"]; lat = []
    t0 = time.perf_counter()
    for n in names:
        t = time.perf_counter(); assert os.getxattr(f"{d}/{n}", "user.fsbench") == b"v-" + n.encode(); lat.append((time.perf_counter() - t) * 1000)
    dt = time.perf_counter() - t0
    r1 = fetch(mnt)["requests"]
    print(f"{100/dt:.0f} ops/s first {[round(x,1) for x in lat[:7]]} rest-sum {sum(lat[7:]):.0f} ms; requests {({k: r1[k]-r0.get(k,0) for k in r1 if r1[k]!=r0.get(k,0)})}")
    umount()
