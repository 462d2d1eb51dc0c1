"""100 mkdirs through a fresh mount: wall time and the S3 requests they cost.

Needs a running server (`../shared/bench/s3server start ... --bucket bench1`) with its
credentials in the environment (`eval "$(../shared/bench/s3server env --dir DIR)"`), S3_ENDPOINT
among them. With BASE_TREE=/path/to/a/worktree of an older commit, that tree and this one are
alternated twice (`PYTHONPATH=tree python -m s3mount`); without it, this tree only.
"""
import os
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
from s3mount.stats import fetch  # noqa: E402

endpoint = os.environ["S3_ENDPOINT"]
trees = [("this", HERE)]
if os.environ.get("BASE_TREE"):
    trees.insert(0, ("base", os.environ["BASE_TREE"]))
work = tempfile.mkdtemp(prefix="mkdir-bench-")
mnt, cache = os.path.join(work, "m"), os.path.join(work, "c")
os.makedirs(mnt)
for rnd in range(2):
    for name, tree in trees:
        subprocess.run([sys.executable, "-m", "s3mount", "bench1", mnt, "--endpoint", endpoint,
                        "--cache-dir", cache], check=True, env=dict(os.environ, PYTHONPATH=tree),
                       cwd=work)  # python -m puts the cwd first on sys.path
        try:
            d = os.path.join(mnt, "mk", uuid.uuid4().hex[:8])
            os.makedirs(d)
            r0 = fetch(mnt)["requests"]
            t0 = time.perf_counter()
            for i in range(100):
                os.mkdir(f"{d}/d{i:03d}")
            dt = time.perf_counter() - t0
            r1 = fetch(mnt)["requests"]
            print(name, "100 mkdirs: %.0f ms" % (dt * 1000),
                  {k: r1[k] - r0.get(k, 0) for k in r1 if r1[k] != r0.get(k, 0)})
        finally:
            subprocess.run(["fusermount3", "-u", mnt], check=True)
            time.sleep(1)
