"""Write 1 GiB into a new file in 256 KiB pwrites, with or without recycling page cache.

    python bench/pagecache_write.py 0 0     # plain: every byte takes a new page
    python bench/pagecache_write.py 8 4     # fadvise(DONTNEED) each 8 MiB window when written
                                            # and again 4 windows later (what pagecache.py does)

Prints MiB/s and the sys CPU seconds. Run each a few times with a pause (sleep 3) in between:
on VMs that hand freed memory back to the host the plain case is bimodal (bench/TRANSFER.md).
"""
import os
import sys
import time

path = os.environ.get("PAGECACHE_TEST_FILE", "/tmp/pagecache-test")
size, chunk = 1 << 30, 256 * 1024
win, lag = int(sys.argv[1]) << 20, int(sys.argv[2])
buf = os.urandom(chunk)
fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
t, c = time.perf_counter(), os.times()
for off in range(0, size, chunk):
    os.pwrite(fd, buf, off)
    end = off + chunk
    if win and end % win == 0:
        os.posix_fadvise(fd, end - win, win, os.POSIX_FADV_DONTNEED)
        if end >= (lag + 1) * win:
            os.posix_fadvise(fd, end - (lag + 1) * win, win, os.POSIX_FADV_DONTNEED)
dt, c1 = time.perf_counter() - t, os.times()
print(f"window {win >> 20} MiB, lag {lag}: {size / dt / 2**20:.0f} MiB/s, sys {c1.system - c.system:.2f} s")
os.close(fd)
os.unlink(path)
