#!/usr/bin/env python3
"""Benchmark Python FUSE bindings (mfusepy vs fusepy) on libfuse 2 and libfuse 3.

A trivial filesystem is mounted in a *subprocess* (so the client and the daemon
do not share a GIL) at a temporary mountpoint:

  /zero       regular file of --size-mib MiB; read() returns zeros
  /w*         files created by the client; write() discards the data and only
              records the size of every write() call that reaches the daemon
  /d/<any>    every name under /d exists (regular file), for stat benchmarks
  /.dump<k>   looking this up makes the daemon dump its counters to a JSON file
              (and then answers ENOENT, which libfuse does not cache)

Client workload per configuration (each phase takes well under a few seconds):

  write      open /w, --size-mib x os.write(1 MiB), close   (same syscalls as
             `dd if=/dev/zero of=MNT/w bs=1M count=N`)
  read       open /zero, os.read(1 MiB) until EOF, close
  stat       os.stat() on --stat-n distinct paths /d/s<i>  (1 LOOKUP each)
  pstat      the same with 4 client threads on other distinct paths
  pwrite     2 client threads each writing half of --size-mib to /w0, /w1

The mount is ALWAYS removed in a `finally` (fusermount -u / fusermount3 -u,
lazy unmount as a fallback) and the daemon subprocess is killed by pid.

Usage (results and interpretation: bench/fuse_binding.md):
  python3 bench/fuse_binding.py matrix [--pin same|none|split] [--rounds 3] [--reps 3] [--json out.json]
  python3 bench/fuse_binding.py report out.json [more.json ...]     # median (min-max) over rounds
  python3 bench/fuse_binding.py micro                                # binding-only cost, no mount
  python3 bench/fuse_binding.py run --binding mfusepy --libfuse 3 --threads mt \
          [--conn-max-write 1048576] [--want-writeback-cache] [--read-ahead-kb 1024] [-o direct_io]
libfuse 3's fuse_main() rejects -o max_write/big_writes/max_background/writeback_cache: use the
--conn-* flags, which set fuse_conn_info in mfusepy's init_with_config().
"""

from __future__ import annotations

import argparse
import collections
import ctypes.util
import errno
import json
import mmap
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1 << 20
FUSE_CAP_WRITEBACK_CACHE = 1 << 16  # libfuse 3 fuse_common.h
LIBS = {'2': 'libfuse.so.2', '3': 'libfuse3.so.3'}
FUSERMOUNT = {'2': 'fusermount', '3': 'fusermount3'}
# --pin: CPU sets for (client, daemon). 'split' = client on CPU 0, daemon on CPU 1; 'same' = both on CPU 0.
PIN = {'none': (None, None), 'split': ({0}, {1}), 'same': ({0}, {0})}


# --------------------------------------------------------------------------- daemon side


def serve(args: argparse.Namespace) -> None:
    lib = ctypes.util.find_library('fuse' if args.libfuse == '2' else 'fuse3') or LIBS[args.libfuse]
    os.environ['FUSE_LIBRARY_PATH'] = lib  # honoured by both mfusepy and fusepy
    if args.binding == 'mfusepy':
        import mfusepy as fb
    else:
        import fuse as fb  # fusepy

    import warnings

    warnings.simplefilter('ignore', DeprecationWarning)

    zsize = args.size_mib * MIB
    stats_path = args.stats
    NS = 1_700_000_000 * 10**9
    DIR = {'st_mode': stat.S_IFDIR | 0o755, 'st_nlink': 2, 'st_mtime': NS, 'st_ctime': NS, 'st_atime': NS}
    SFILE = {'st_mode': stat.S_IFREG | 0o644, 'st_nlink': 1, 'st_size': 4096,
             'st_mtime': NS, 'st_ctime': NS, 'st_atime': NS}

    class BenchFS(fb.Operations):
        use_ns = True

        def __init__(self) -> None:
            self.files: dict[str, int] = {'/zero': zsize}
            self.writes: list[int] = []  # list.append is atomic under the GIL
            self.reads: list[int] = []
            self.getattrs: list[int] = []
            self.getxattrs: list[int] = []
            self.conn: dict = {}
            self.zeros: dict[int, bytes] = {}

        def _dump(self) -> None:
            data = {
                'write': collections.Counter(self.writes),
                'read': collections.Counter(self.reads),
                'n_getattr': len(self.getattrs),
                'n_getxattr': len(self.getxattrs),
                'conn': self.conn,
                'binding_version': getattr(fb, '__version__', None),
                'fuse_version': getattr(fb, 'fuse_version_major', None),
            }
            tmp = stats_path + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(data, f)
            os.replace(tmp, stats_path)

        # --- init: mfusepy passes fuse_conn_info (+ fuse_config on libfuse3) ----------------
        def init_with_config(self, conn, config) -> None:  # mfusepy only
            def snap(obj, names):
                return {n: getattr(obj, n) for n in names if hasattr(obj, n)}

            names = ['proto_major', 'proto_minor', 'async_read', 'max_write', 'max_read', 'max_readahead',
                     'capable', 'want', 'max_background', 'congestion_threshold', 'time_gran']
            self.conn['before'] = snap(conn, names)
            if args.want_writeback_cache:
                if conn.capable & FUSE_CAP_WRITEBACK_CACHE:
                    conn.want |= FUSE_CAP_WRITEBACK_CACHE
                else:
                    self.conn['error'] = 'FUSE_CAP_WRITEBACK_CACHE not in capable'
            if args.conn_max_write:
                conn.max_write = args.conn_max_write
            if args.conn_max_background:
                conn.max_background = args.conn_max_background
            self.conn['after'] = snap(conn, names)
            if config is not None:
                self.conn['config'] = snap(config, ['entry_timeout', 'negative_timeout', 'attr_timeout',
                                                    'kernel_cache', 'auto_cache', 'direct_io', 'use_ino',
                                                    'nullpath_ok'])

        if args.binding != 'mfusepy':
            del init_with_config

            def init(self, path):  # fusepy: no access to fuse_conn_info
                self.conn['note'] = 'fusepy init(path) gets no fuse_conn_info'

            def getxattr(self, path, name, position=0):
                # fusepy's Operations base class defines getxattr (ENOTSUP) anyway; count the calls.
                self.getxattrs.append(1)
                raise fb.FuseOSError(errno.ENODATA)

        def getattr(self, path, fh=None):
            self.getattrs.append(1)
            if path.startswith('/d/'):
                return SFILE
            if path == '/' or path == '/d':
                return DIR
            size = self.files.get(path)
            if size is not None:
                return {'st_mode': stat.S_IFREG | 0o644, 'st_nlink': 1, 'st_size': size,
                        'st_mtime': NS, 'st_ctime': NS, 'st_atime': NS}
            if path.startswith('/.dump'):
                self._dump()
            raise fb.FuseOSError(errno.ENOENT)

        def readdir(self, path, fh):
            if path == '/':
                return ['.', '..', 'd'] + [p[1:] for p in self.files]
            return ['.', '..']

        def open(self, path, flags):
            if path not in self.files:
                raise fb.FuseOSError(errno.ENOENT)
            return 0

        def create(self, path, mode, fi=None):
            self.files[path] = 0
            return 0

        def truncate(self, path, length, fh=None):
            self.files[path] = length
            return 0

        def read(self, path, size, offset, fh):
            self.reads.append(size)
            n = min(size, max(0, self.files.get(path, 0) - offset))
            z = self.zeros.get(n)
            if z is None:
                z = self.zeros[n] = bytes(n)
            return z

        def write(self, path, data, offset, fh):
            n = len(data)
            self.writes.append(n)
            if offset + n > self.files.get(path, 0):
                self.files[path] = offset + n
            return n

        def flush(self, path, fh):
            return 0

        def utimens(self, path, times=None):  # needed with writeback_cache (kernel sends SETATTR mtime)
            return 0

        def chmod(self, path, mode):
            return 0

        def chown(self, path, uid, gid):
            return 0

        def release(self, path, fh):
            return 0

    kwargs = {}
    for o in args.opt:
        k, _, v = o.partition('=')
        kwargs[k] = int(v) if v.isdigit() else (v if v else True)
    fb.FUSE(BenchFS(), args.mnt, foreground=True, nothreads=(args.threads == 'st'), **kwargs)


# --------------------------------------------------------------------------- in-process micro benchmark


def micro(args: argparse.Namespace) -> None:
    """Cost of the binding's Python translation layer alone: call the ctypes-facing wrapper methods of
    fb.FUSE directly (no kernel, no libfuse loop), as libfuse would, with an object built without mounting."""
    lib = ctypes.util.find_library('fuse' if args.libfuse == '2' else 'fuse3') or LIBS[args.libfuse]
    os.environ['FUSE_LIBRARY_PATH'] = lib
    import warnings

    warnings.simplefilter('ignore', DeprecationWarning)
    if args.binding == 'mfusepy':
        import mfusepy as fb
    else:
        import fuse as fb

    SFILE = {'st_mode': stat.S_IFREG | 0o644, 'st_nlink': 1, 'st_size': 4096, 'st_mtime': 1, 'st_ctime': 1,
             'st_atime': 1}
    zeros = {}

    class Ops(fb.Operations):
        use_ns = True

        def getattr(self, path, fh=None):
            return SFILE

        def write(self, path, data, offset, fh):
            return len(data)

        def read(self, path, size, offset, fh):
            z = zeros.get(size)
            if z is None:
                z = zeros[size] = bytes(size)
            return z

    f = object.__new__(fb.FUSE)
    f.operations, f.raw_fi, f.encoding, f.use_ns = Ops(), False, 'utf-8', True
    f.errors = 'surrogateescape'
    wrap = f._wrapper
    getattr_cb = getattr(f, 'getattr_fuse_%s' % args.libfuse, None) or f.getattr
    st = fb.c_stat()
    stp = ctypes.pointer(st)
    fi = fb.fuse_file_info()
    fip = ctypes.pointer(fi)
    buf = ctypes.create_string_buffer(MIB)
    bufp = ctypes.cast(buf, ctypes.POINTER(ctypes.c_byte))
    path = b'/d/some/file'
    ga_args = (path, stp, fip) if args.libfuse == '3' and args.binding == 'mfusepy' else (path, stp)
    res = {}

    def bench(name, fn, n):
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        res[name] = round(dt / n * 1e6, 2)

    bench('getattr_us', lambda: wrap(getattr_cb, *ga_args), 100000)
    for size in (4096, 131072, MIB):
        bench(f'write_{size // 1024}K_us', lambda: wrap(f.write, path, bufp, size, 0, fip), 20000)
        bench(f'read_{size // 1024}K_us', lambda: wrap(f.read, path, bufp, size, 0, fip), 20000)
    print(json.dumps(res))


# --------------------------------------------------------------------------- client side


def proc_cpu(pid: int) -> float:
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except OSError:
        return float('nan')


def percentile(counter: dict, q: float) -> int | None:
    items = sorted((int(k), v) for k, v in counter.items())
    total = sum(v for _, v in items)
    if not total:
        return None
    acc = 0
    for k, v in items:
        acc += v
        if acc >= q * total:
            return k
    return items[-1][0]


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


class Mount:
    def __init__(self, cfg: dict, size_mib: int, verbose: bool = False) -> None:
        self.cfg = cfg
        self.size_mib = size_mib
        self.tmp = tempfile.mkdtemp(prefix='fusebench-')
        self.mnt = os.path.join(self.tmp, 'mnt')
        os.mkdir(self.mnt)
        self.stats = os.path.join(self.tmp, 'stats.json')
        self.log = os.path.join(self.tmp, 'daemon.log')
        self.proc: subprocess.Popen | None = None
        self.dump_k = 0
        self.verbose = verbose

    def start(self) -> None:
        c = self.cfg
        cmd = [sys.executable, os.path.abspath(__file__), '_serve', '--binding', c['binding'],
               '--libfuse', c['libfuse'], '--threads', c['threads'], '--mnt', self.mnt,
               '--stats', self.stats, '--size-mib', str(self.size_mib)]
        for o in c.get('opts', []):
            cmd += ['-o', o]
        if c.get('want_writeback_cache'):
            cmd.append('--want-writeback-cache')
        if c.get('conn_max_write'):
            cmd += ['--conn-max-write', str(c['conn_max_write'])]
        self.logf = open(self.log, 'w')
        daemon_cpus = PIN.get(c.get('pin', 'none'), (None, None))[1]
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=(lambda: os.sched_setaffinity(0, daemon_cpus)) if daemon_cpus else None)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f'daemon exited with {self.proc.returncode}: {self.read_log()}')
            if os.path.ismount(self.mnt):
                return
            time.sleep(0.02)
        raise RuntimeError(f'mount did not appear: {self.read_log()}')

    def read_log(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()[-3000:]
        except OSError:
            return ''

    def snapshot(self) -> dict:
        self.dump_k += 1
        try:
            os.stat(os.path.join(self.mnt, f'.dump{self.dump_k}'))
        except FileNotFoundError:
            pass
        with open(self.stats) as f:
            return json.load(f)

    def bdi_read_ahead(self, kb: int) -> None:
        st = os.stat(self.mnt)
        path = f'/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb'
        with open(path, 'w') as f:
            f.write(str(kb))

    def abort(self) -> None:
        """Watchdog: kill the daemon so that blocked client syscalls fail with ENOTCONN."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        fm = FUSERMOUNT[self.cfg['libfuse']]
        try:
            if os.path.ismount(self.mnt) or self._in_proc_mounts():
                r = subprocess.run([fm, '-u', self.mnt], capture_output=True, text=True, timeout=20)
                if r.returncode != 0:
                    subprocess.run([fm, '-u', '-z', self.mnt], capture_output=True, timeout=20)
        finally:
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
            if self._in_proc_mounts():  # last resort
                subprocess.run([fm, '-u', '-z', self.mnt], capture_output=True, timeout=20)
            self.logf.close()
            if not self.verbose:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _in_proc_mounts(self) -> bool:
        with open('/proc/mounts') as f:
            return any(line.split()[1] == self.mnt for line in f)


def write_file(path: str, nmib: int) -> None:
    # Like dd: a page-aligned buffer that has been touched (dd fills it from /dev/zero first).
    # An untouched calloc'ed buffer makes the kernel split the first MiB at every page fault
    # (4048 + 48 byte writes) and an unaligned one splits every direct_io write into 1020K + 4K.
    buf = mmap.mmap(-1, MIB)
    buf.write(b'\xa5' * MIB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(nmib):
            os.write(fd, buf)
    finally:
        os.close(fd)


def read_file(path: str) -> int:
    buf = mmap.mmap(-1, MIB)  # page-aligned like dd's buffer (matters for direct_io request sizes)
    fd = os.open(path, os.O_RDONLY)
    n = 0
    try:
        while True:
            k = os.readv(fd, [buf])
            if not k:
                break
            n += k
    finally:
        os.close(fd)
    return n


def run_threads(fn, argss) -> None:
    errs = []

    def wrap(a):
        try:
            fn(*a)
        except BaseException as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=wrap, args=(a,)) for a in argss]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]


def stat_many(prefix: str, n: int) -> None:
    st = os.stat
    for i in range(n):
        st(f'{prefix}{i}')


def run_config(cfg: dict, size_mib: int, stat_n: int, reps: int = 3, timeout: float = 180,
               verbose: bool = False) -> dict:
    m = Mount(cfg, size_mib, verbose)
    res: dict = {'cfg': cfg}
    old_affinity = os.sched_getaffinity(0)
    client_cpus = PIN.get(cfg.get('pin', 'none'), (None, None))[0]
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    watchdog = threading.Timer(timeout, m.abort)
    watchdog.daemon = True
    try:
        m.start()
        watchdog.start()
        pid = m.proc.pid
        if cfg.get('read_ahead_kb'):
            m.bdi_read_ahead(cfg['read_ahead_kb'])
        s0 = m.snapshot()
        res['conn'] = s0['conn']
        res['binding_fuse_major'] = s0['fuse_version']

        def phase(name, fn, nbytes=None, nstat=None):
            """Run fn(rep) `reps` times; report the median rate, sizes/calls summed over all reps / reps."""
            before = m.snapshot()
            c0 = proc_cpu(pid)
            times = []
            for rep in range(reps):
                t0 = time.perf_counter()
                fn(rep)
                times.append(time.perf_counter() - t0)
            c1 = proc_cpu(pid)
            after = m.snapshot()
            med = sorted(times)[len(times) // 2]
            r = {'seconds': [round(t, 4) for t in times], 'daemon_cpu_s_per_rep': round((c1 - c0) / reps, 3)}
            if nbytes:
                r['MBps'] = round(nbytes / MIB / med, 1)
                r['MBps_all'] = [round(nbytes / MIB / t, 1) for t in times]
            if nstat:
                r['ops_per_s'] = round(nstat / med)
                r['ops_per_s_all'] = [round(nstat / t) for t in times]
            for key in ('write', 'read'):
                d = delta(after[key], before[key])
                if d:
                    r[f'{key}_sizes'] = dict(sorted(((int(k), v) for k, v in d.items()), key=lambda kv: -kv[1])[:6])
                    r[f'{key}_calls_per_rep'] = sum(d.values()) / reps
                    r[f'{key}_p50'] = percentile(d, 0.5)
                    r[f'{key}_max'] = max(int(k) for k in d)
            r['getattr_calls_per_rep'] = (after['n_getattr'] - before['n_getattr'] - 1) / reps
            r['getxattr_calls_per_rep'] = (after['n_getxattr'] - before['n_getxattr']) / reps
            res[name] = r

        mnt = m.mnt
        half = size_mib // 2
        phase('write', lambda rep: write_file(f'{mnt}/w', size_mib), nbytes=size_mib * MIB)
        phase('read', lambda rep: read_file(f'{mnt}/zero'), nbytes=size_mib * MIB)
        phase('stat', lambda rep: stat_many(f'{mnt}/d/s{rep}_', stat_n), nstat=stat_n)
        phase('pstat', lambda rep: run_threads(stat_many, [(f'{mnt}/d/p{rep}_{t}_', stat_n // 4) for t in range(4)]),
              nstat=stat_n // 4 * 4)
        phase('pwrite', lambda rep: run_threads(write_file, [(f'{mnt}/w{t}', half) for t in range(2)]),
              nbytes=half * 2 * MIB)
    except Exception as e:  # noqa: BLE001
        res['error'] = f'{type(e).__name__}: {e}'
        res['daemon_log'] = m.read_log()
    finally:
        watchdog.cancel()
        os.sched_setaffinity(0, old_affinity)
        m.stop()
    return res


def matrix_configs(include_fusepy3: bool) -> list[dict]:
    cfgs = []
    lib2_opts = [('default', []), ('big_writes', ['big_writes']),
                 ('big_writes,max_write=1M', ['big_writes', 'max_write=1048576'])]
    # libfuse 3's high-level fuse_main() rejects `-o max_write=...` ("unknown option"): the conn options
    # are only parsed by fuse_parse_conn_info_opts(). max_write is set in init via conn.max_write instead.
    lib3_opts = [('default (max_write 1M)', [], {}),
                 ('init conn.max_write=128K', [], {'conn_max_write': 131072}),
                 ('init conn.max_write=1M', [], {'conn_max_write': MIB}),
                 ('1M + writeback_cache (init conn.want)', [], {'conn_max_write': MIB, 'want_writeback_cache': True}),
                 ('1M + bdi read_ahead_kb=1024', [], {'conn_max_write': MIB, 'read_ahead_kb': 1024}),
                 ('1M + direct_io', ['direct_io'], {'conn_max_write': MIB})]
    for binding in ('mfusepy', 'fusepy'):
        for threads in ('st', 'mt'):
            for label, opts in lib2_opts:
                cfgs.append({'binding': binding, 'libfuse': '2', 'threads': threads, 'label': label, 'opts': opts})
    for threads in ('st', 'mt'):
        for label, opts, extra in lib3_opts:
            cfgs.append({'binding': 'mfusepy', 'libfuse': '3', 'threads': threads, 'label': label, 'opts': opts,
                         **extra})
    if include_fusepy3:
        cfgs.append({'binding': 'fusepy', 'libfuse': '3', 'threads': 'mt', 'label': 'default (unsupported)',
                     'opts': []})
    return cfgs


def fmt_row(r: dict) -> str:
    c = r['cfg']
    head = f"| {c['binding']} | {c['libfuse']} | {c['threads']} | {c['label']} "
    if 'error' in r:
        return head + '| ' + r['error'].replace('|', '/').replace('\n', ' ')[:100] + ' |' + ' |' * 9
    w, rd, s, ps, pw = r['write'], r['read'], r['stat'], r['pstat'], r['pwrite']

    def k(n):
        return '-' if n is None else (f'{n // 1024}K' if n >= 1024 else str(n))

    def cpu_us(ph, what):
        n = ph.get(f'{what}_calls_per_rep')
        return round(ph['daemon_cpu_s_per_rep'] / n * 1e6, 1) if n else '-'

    return (head + f"| {k(w.get('write_p50'))} / {k(w.get('write_max'))} | {w.get('write_calls_per_rep'):.0f} "
            f"| {w['MBps']} | {pw['MBps']} | {k(rd.get('read_p50'))} / {k(rd.get('read_max'))} | {rd['MBps']} "
            f"| {s['ops_per_s']} | {ps['ops_per_s']} | {cpu_us(w, 'write')} | {cpu_us(s, 'getattr')} |")


def cfg_key(c: dict) -> tuple:
    return (c['binding'], c['libfuse'], c['threads'], c['label'])


def fmt_agg(rs: list[dict]) -> str:
    """One row for several rounds of the same configuration: median (min-max) over rounds."""
    ok = [r for r in rs if 'error' not in r]
    if not ok:
        return fmt_row(rs[0])
    c = ok[0]['cfg']
    head = f"| {c['binding']} | {c['libfuse']} | {c['threads']} | {c['label']} "

    def med(vals):
        vals = sorted(vals)
        return vals[len(vals) // 2]

    def rng(phase, key, fmt='{:.0f}'):
        vals = [r[phase][key] for r in ok]
        if len(vals) == 1:
            return fmt.format(vals[0])
        return f"{fmt.format(med(vals))} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"

    def k(n):
        return '-' if n is None else (f'{n // 1024}K' if n >= 1024 else str(n))

    def cpu_us(phase, what):
        vals = [r[phase]['daemon_cpu_s_per_rep'] / r[phase][f'{what}_calls_per_rep'] * 1e6
                for r in ok if r[phase].get(f'{what}_calls_per_rep')]
        return f'{med(vals):.1f}' if vals else '-'

    w = ok[0]['write']
    rd = ok[0]['read']
    return (head + f"| {k(w.get('write_p50'))} / {k(w.get('write_max'))} | {w.get('write_calls_per_rep'):.0f} "
            f"| {rng('write', 'MBps')} | {rng('pwrite', 'MBps')} | {k(rd.get('read_p50'))} / {k(rd.get('read_max'))} "
            f"| {rng('read', 'MBps')} | {rng('stat', 'ops_per_s')} | {rng('pstat', 'ops_per_s')} "
            f"| {cpu_us('write', 'write')} | {cpu_us('stat', 'getattr')} |")


def print_agg(results: list[dict]) -> None:
    groups: dict = {}
    for r in results:
        groups.setdefault(cfg_key(r['cfg']), []).append(r)
    print(TABLE_HEAD)
    for rs in groups.values():
        print(fmt_agg(rs))


TABLE_HEAD = ('| binding | libfuse | loop | options | write size p50 / max | write calls | write MB/s '
              '| 2-thread write MB/s | read size p50 / max | read MB/s | stat/s | 4-thread stat/s '
              '| daemon CPU us / write call | daemon CPU us / getattr |\n'
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)

    sv = sub.add_parser('_serve', help='internal: run the daemon')
    sv.add_argument('--binding', choices=['mfusepy', 'fusepy'], required=True)
    sv.add_argument('--libfuse', choices=['2', '3'], required=True)
    sv.add_argument('--threads', choices=['st', 'mt'], default='mt')
    sv.add_argument('--mnt', required=True)
    sv.add_argument('--stats', required=True)
    sv.add_argument('--size-mib', type=int, default=256)
    sv.add_argument('-o', '--opt', action='append', default=[])
    sv.add_argument('--want-writeback-cache', action='store_true')
    sv.add_argument('--conn-max-write', type=int, default=0)
    sv.add_argument('--conn-max-background', type=int, default=0)

    mc = sub.add_parser('_micro', help='internal: in-process binding overhead')
    mc.add_argument('--binding', choices=['mfusepy', 'fusepy'], required=True)
    mc.add_argument('--libfuse', choices=['2', '3'], required=True)
    rp = sub.add_parser('report', help='aggregate JSON files written by matrix --json')
    rp.add_argument('files', nargs='+')
    mp = sub.add_parser('micro', help='in-process per-call cost of each binding (no mount)')
    mp.add_argument('--json')

    for name in ('run', 'matrix'):
        p = sub.add_parser(name)
        p.add_argument('--size-mib', type=int, default=256)
        p.add_argument('--stat-n', type=int, default=20000)
        p.add_argument('--reps', type=int, default=3, help='repetitions of each phase (median reported)')
        p.add_argument('--json', help='write raw results here')
        p.add_argument('--timeout', type=float, default=180, help='per-configuration watchdog (s)')
        p.add_argument('-v', '--verbose', action='store_true', help='keep temp dir / daemon log')
        p.add_argument('--pin', choices=list(PIN), default='none',
                       help='CPU pinning: split = client CPU0 / daemon CPU1, same = both on CPU0')
        if name == 'run':
            p.add_argument('--binding', choices=['mfusepy', 'fusepy'], default='mfusepy')
            p.add_argument('--libfuse', choices=['2', '3'], default='3')
            p.add_argument('--threads', choices=['st', 'mt'], default='mt')
            p.add_argument('-o', '--opt', action='append', default=[])
            p.add_argument('--want-writeback-cache', action='store_true')
            p.add_argument('--conn-max-write', type=int, default=0)
            p.add_argument('--read-ahead-kb', type=int, default=0)
        else:
            p.add_argument('--include-fusepy-libfuse3', action='store_true',
                           help='also try fusepy against libfuse3 (unsupported, expected to fail)')
            p.add_argument('--only', help='substring filter on "binding/libfuse/threads/label"')
            p.add_argument('--rounds', type=int, default=1, help='repeat the whole matrix (interleaved)')

    args = ap.parse_args()
    if args.cmd == '_serve':
        serve(args)
        return
    if args.cmd == 'report':
        results = []
        for path in args.files:
            with open(path) as f:
                results += json.load(f)
        print_agg(results)
        return
    if args.cmd == '_micro':
        micro(args)
        return
    if args.cmd == 'micro':
        out = []
        print('| binding | libfuse | getattr us | write 4K us | write 128K us | write 1M us | read 4K us '
              '| read 128K us | read 1M us |\n|---|---|---|---|---|---|---|---|---|')
        for b, lf in (('mfusepy', '2'), ('mfusepy', '3'), ('fusepy', '2')):
            r = json.loads(subprocess.run([sys.executable, os.path.abspath(__file__), '_micro', '--binding', b,
                                           '--libfuse', lf], check=True, capture_output=True, text=True).stdout)
            out.append({'binding': b, 'libfuse': lf, **r})
            print(f"| {b} | {lf} | {r['getattr_us']} | {r['write_4K_us']} | {r['write_128K_us']} | "
                  f"{r['write_1024K_us']} | {r['read_4K_us']} | {r['read_128K_us']} | {r['read_1024K_us']} |")
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(out, f, indent=1)
        return

    if args.cmd == 'run':
        cfgs = [{'binding': args.binding, 'libfuse': args.libfuse, 'threads': args.threads,
                 'label': ','.join(args.opt) or 'default', 'opts': args.opt,
                 'want_writeback_cache': args.want_writeback_cache, 'conn_max_write': args.conn_max_write,
                 'read_ahead_kb': args.read_ahead_kb, 'pin': args.pin}]
    else:
        cfgs = matrix_configs(args.include_fusepy_libfuse3)
        for c in cfgs:
            c['pin'] = args.pin
        if args.only:
            cfgs = [c for c in cfgs if args.only in f"{c['binding']}/{c['libfuse']}/{c['threads']}/{c['label']}"]

    results = []
    print(TABLE_HEAD, flush=True)
    for rnd in range(getattr(args, 'rounds', 1)):  # rounds interleave the configurations (noise)
        for cfg in cfgs:
            r = run_config(cfg, args.size_mib, args.stat_n, args.reps, args.timeout, args.verbose)
            r['round'] = rnd
            results.append(r)
            print(fmt_row(r), flush=True)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(results, f, indent=1)
    if getattr(args, 'rounds', 1) > 1:
        print('\nMedian (min-max) over rounds:\n')
        print_agg(results)
    if args.cmd == 'run':
        print(json.dumps(results[0], indent=1))


if __name__ == '__main__':
    main()
