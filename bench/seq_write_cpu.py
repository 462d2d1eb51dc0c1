"""CPU seconds of the daemon, the S3 server and the writer in a 512 MiB sequential write through a
fresh s3mount (1 MiB writes, timed to close, which returns once the object is in S3).

    python bench/seq_write_cpu.py    # server env as for seq_cpu.py, object keys w0..w2.bin
"""
import os, sys, time, resource, subprocess, shutil
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seq_cpu import proc_cpu, procs, machine
mnt = "/tmp/seq_write_cpu/mnt"; os.makedirs(mnt, exist_ok=True)
data = os.urandom(1 << 20)
for rep in range(3):
    shutil.rmtree("/tmp/seq_write_cpu/cache", ignore_errors=True)
    subprocess.run(["s3mount", "bench1", mnt, "--endpoint", os.environ["S3_ENDPOINT"], "--cache-dir", "/tmp/seq_write_cpu/cache", "-o", "logfile=/tmp/seq_write_cpu/log"], check=True)
    dpid = procs(f"s3mount bench1 {mnt}")[0]; weeds = procs("weed")
    d0, w0 = proc_cpu(dpid), sum(proc_cpu(p) for p in weeds); r0 = resource.getrusage(resource.RUSAGE_SELF); m0 = machine()
    t = time.monotonic()
    with open(f"{mnt}/w{rep}.bin", "wb", buffering=0) as f:
        for i in range(512): f.write(data)
    wall = time.monotonic() - t
    m1 = machine(); r1 = resource.getrusage(resource.RUSAGE_SELF); d1, w1 = proc_cpu(dpid), sum(proc_cpu(p) for p in weeds)
    busy = sum(m1[k] - m0[k] for k in m0 if k not in ("idle", "iowait"))
    print(f"write rep{rep}: {512/wall:.0f} MiB/s daemon {d1-d0:.2f} server {w1-w0:.2f} writer {(r1.ru_utime-r0.ru_utime)+(r1.ru_stime-r0.ru_stime):.2f} busy {busy:.2f} idle {m1['idle']-m0['idle']:.2f} iowait {m1['iowait']-m0['iowait']:.2f}", flush=True)
    subprocess.run(["fusermount3", "-u", mnt]); time.sleep(1)
