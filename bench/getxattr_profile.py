"""py-spy profile of the daemon over cold getxattr passes: 20 directories of 100 objects with
x-amz-meta-fsbench, put directly, then getxattr of each file in turn through one mount (each
directory is cold when its pass begins). Prints ops/s and where the samples were.

Needs a server (`../shared/bench/s3server start ... --bucket bench1`, `eval` its `env`) and
py-spy (`pip install py-spy`). Usage: python bench/getxattr_profile.py [OUT.folded]
"""
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
import s3mount as s3  # noqa: E402

endpoint = os.environ["S3_ENDPOINT"]
conn = s3.S3Connection(endpoint=endpoint, access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                       secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                       region="us-east-1", tls=endpoint.startswith("https"))
client = s3.RemoteStore(conn).client
run = time.strftime("%H%M%S")
with ThreadPoolExecutor(16) as ex:
    list(ex.map(lambda i: client.put("bench1", f"pf{run}/d{i // 100:02d}/x{i % 100:04d}", b"x" * 100,
                                     {"x-amz-meta-fsbench": f"v{i}"}), range(2000)))
work = tempfile.mkdtemp(prefix="gxprof-")
mnt, out = os.path.join(work, "m"), sys.argv[1] if len(sys.argv) > 1 else os.path.join(work, "p.folded")
os.makedirs(mnt)


def passes():
    while not os.path.ismount(mnt):
        time.sleep(0.05)
    time.sleep(0.5)
    t0 = time.perf_counter()
    for i in range(2000):
        p = f"{mnt}/pf{run}/d{i // 100:02d}/x{i % 100:04d}"
        assert os.getxattr(p, "user.fsbench") == f"v{i}".encode()
    print("%.0f ops/s over 20 cold directories" % (2000 / (time.perf_counter() - t0)))
    subprocess.run(["fusermount3", "-u", mnt], check=True)


t = threading.Thread(target=passes)
t.start()
subprocess.run(["py-spy", "record", "-r", "500", "-f", "raw", "-o", out, "--nonblocking", "--",
                sys.executable, "-m", "s3mount", "bench1", mnt, "--endpoint", endpoint,
                "--cache-dir", os.path.join(work, "c"), "-f"], check=True, cwd=work,
               env=dict(os.environ, PYTHONPATH=HERE), capture_output=True)
t.join()
tot, parts = 0, collections.Counter()
for line in open(out):
    stack, _, n = line.rstrip().rpartition(" ")
    tot += int(n)
    who = ("prefetch HEADs" if "HeadPrefetcher._work" in stack else "FUSE ops" if "FUSE._wrapper" in stack
           else "listings" if "_list_ahead" in stack else None)
    if who is None:
        continue
    what = ("waiting on the socket" if "exchange" in stack and ("readinto" in stack or "sendall" in stack
                                                                 or "wire.py:15" in stack)
            else "urllib3's connection check" if "is_connection_dropped" in stack
            else "signing" if "signing.py" in stack else "other Python")
    parts[f"{who}: {what}"] += int(n)
print(f"{tot} samples (start-up included); {out}")
for k, v in sorted(parts.items()):
    print(f"{100 * v / tot:5.1f}%  {k}")
