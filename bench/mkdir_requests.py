"""100 mkdirs through a fresh mount of bucket bench1 on a local server (../shared/bench/s3server,
port 23900, credentials in the environment): wall time and the S3 requests they cost, for the tree
at PYTHONPATH=/tmp/wt_base (a git worktree of an older commit) and this one, alternated twice."""
import os, subprocess, sys, time, uuid
sys.path.insert(0, "/work/main")
from s3mount.stats import fetch
mnt = "/tmp/xt/m"
for rnd in range(2):
  for name, pp in (("base", "/tmp/wt_base"), ("new", "/work/main")):
    subprocess.run(f"PYTHONPATH={pp} python -m s3mount bench1 {mnt} --endpoint http://127.0.0.1:23900 --cache-dir /tmp/xt/c -o logfile=/tmp/xt/log", shell=True, check=True)
    d = os.path.join(mnt, "mk", uuid.uuid4().hex[:8])
    os.makedirs(d)
    r0 = fetch(mnt)["requests"]
    t0 = time.perf_counter()
    for i in range(100):
        os.mkdir(f"{d}/d{i:03d}")
    dt = time.perf_counter() - t0
    r1 = fetch(mnt)["requests"]
    print(name, "100 mkdirs: %.0f ms" % (dt * 1000), {k: r1[k] - r0.get(k, 0) for k in r1 if r1[k] != r0.get(k, 0)})
    subprocess.run(f"fusermount3 -u {mnt}", shell=True, check=True); time.sleep(1)
