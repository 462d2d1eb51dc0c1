"""Per-call latency of getxattr after a remount: 100 files with user.fsbench, remounted 3 times.

Needs a server (../shared/bench/s3server start ... --bucket bench1; eval its `env`) and the
s3mount command; mounts at /tmp/m1 with cache /tmp/c1.  Usage: python bench/getxattr_trace.py
"""
import os, time, subprocess
mnt="/tmp/m1"; d=mnt+"/xa"
def mount():
    subprocess.run(["s3mount","bench1",mnt,"--endpoint",os.environ["S3_ENDPOINT"],"--cache-dir","/tmp/c1","-o","logfile=/tmp/m1.log"],check=True); time.sleep(1)
def umount():
    subprocess.run(["fusermount3","-u",mnt]); time.sleep(1)
mount()
os.makedirs(d, exist_ok=True)
for i in range(100):
    p=f"{d}/x{i:04d}"
    with open(p,"wb") as f: f.write(b"x"*100)
    os.setxattr(p,"user.fsbench",b"v%d"%i)
umount()
for r in range(3):
    mount()
    lat=[]; t0=time.perf_counter()
    for i in range(100):
        t=time.perf_counter(); os.getxattr(f"{d}/x{i:04d}","user.fsbench"); lat.append((time.perf_counter()-t)*1000)
    tot=time.perf_counter()-t0
    print(f"{100/tot:.0f} ops/s; first 8 ms: {[round(x,2) for x in lat[:8]]}; median rest {sorted(lat[8:])[46]:.2f} max {max(lat[8:]):.2f} sum-rest {sum(lat[8:]):.0f}")
    umount()
