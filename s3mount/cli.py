"""The s3mount command: parses options, builds store, cache, file system and FUSE ops, mounts.

The only module that wires the layers together. Without -f it re-executes itself in the
foreground in a new session and exits 0 only after the child reports the mount answers.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import NoReturn

from . import __version__
from .options import MAX_READ, MountOptions, OptionError, parse_args

log = logging.getLogger("s3mount")


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"s3mount: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def mountinfo_has(mountpoint: str) -> bool:
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and parts[4].encode().decode("unicode_escape") == target:
                    return True
    except OSError:
        pass
    return False


def setup_logging(opts: MountOptions) -> None:
    level = getattr(logging, opts.log_level.upper(), logging.INFO)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if opts.logfile:
        from .logs import ReopeningFileHandler
        handler: logging.Handler = ReopeningFileHandler(opts.logfile)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(max(level, logging.WARNING))
    logging.getLogger("botocore").setLevel(max(level, logging.WARNING))
    logging.getLogger("fuse").setLevel(max(level, logging.WARNING))


def check_mountpoint(path: str, nonempty: bool = False) -> None:
    if is_dead_mount(path):
        return  # a dead FUSE mount: the mount step recovers it
    try:
        st = os.stat(path)
    except FileNotFoundError:
        fail(f"mountpoint {path} does not exist")
    except OSError as e:
        fail(f"mountpoint {path}: {e.strerror}")
    else:
        import stat as st_mod
        if not st_mod.S_ISDIR(st.st_mode):
            fail(f"mountpoint {path} is not a directory")
        if not nonempty and os.listdir(path):
            fail(f"mountpoint {path} is not empty (its files would be hidden); "
                 "use -o nonempty to mount over them")
    if not os.path.exists("/dev/fuse"):
        fail("FUSE is not available (/dev/fuse is missing; load the fuse module)")


def build_connection(opts: MountOptions):
    from .store import ConfigError, S3Connection, load_config
    section: dict = {}
    if opts.config:
        try:
            section = dict(load_config(opts.config, allow_insecure=opts.allow_insecure_config)["s3"])
        except ConfigError as e:
            fail(str(e))
    for key in ("endpoint", "region", "profile"):
        value = getattr(opts, key)
        if value:
            section[key] = value
    if opts.no_verify_tls:
        section["verify_tls"] = False
    try:
        conn = S3Connection(**section)
    except ConfigError as e:
        fail(str(e))
    return conn


def preflight(store, bucket: str, prefix: str) -> None:
    """One request that proves credentials, bucket and endpoint, with one clear line on failure."""
    from .store import (AccessDeniedError, NoSuchBucketError, NotFoundError, RemoteStoreError,
                        TransportError)
    host = store.connection.endpoint_info.host
    try:
        store.client.list_page(bucket, prefix, "/", max_keys=1)
    except AccessDeniedError as e:
        fail(f"access denied to bucket {bucket!r} at {host} ({e.code or e.status}): "
             "check the credentials and their permissions")
    except (NoSuchBucketError, NotFoundError):
        fail(f"no such bucket {bucket!r} at {host}")
    except TransportError as e:
        fail(f"cannot reach the S3 endpoint {host}: {e.message}")
    except RemoteStoreError as e:
        fail(f"S3 check of bucket {bucket!r} failed: {e}")


def detach(argv: list[str], opts: MountOptions) -> None:
    """Re-run ourselves in the foreground, in a new session; exit when it reports ready or dies."""
    r, w = os.pipe()
    env = dict(os.environ, S3MOUNT_READY_FD=str(w))
    child = subprocess.Popen([sys.executable, "-m", "s3mount", *argv, "-f"], pass_fds=(w,),
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    os.close(w)
    with os.fdopen(r) as ready:
        line = ready.readline().strip()
    if line == "READY":
        child.stderr.close()
        sys.exit(0)
    if line.startswith("FAILED "):
        child.stderr.close()
        fail(line.removeprefix("FAILED "))
    err = child.stderr.read().decode(errors="replace").strip().splitlines()
    child.wait(timeout=30)
    fail(err[-1].removeprefix("s3mount: ") if err else f"mount failed (exit {child.returncode})")


def limit_malloc_arenas(count: int = 2) -> None:
    """glibc gives each busy thread its own malloc arena; with dozens of I/O threads moving
    megabyte buffers, that fragmentation alone grows RSS for hours."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, count)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def run_mount(opts: MountOptions) -> None:
    limit_malloc_arenas()
    check_mountpoint(opts.mountpoint, opts.nonempty)
    conn = build_connection(opts)
    bucket = opts.bucket or conn.default_bucket
    if not bucket:
        fail("no bucket: give BUCKET on the command line or default_bucket in the config")
    cache_dir = opts.cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "s3mount", bucket)
    if not opts.logfile and "S3MOUNT_READY_FD" in os.environ:
        opts.logfile = os.path.join(cache_dir, "s3mount.log")  # detached: stderr goes nowhere
    setup_logging(opts)

    if opts.libfuse == 3:
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    from .cache import DataCache
    from .fs import Defaults, S3FileSystem
    from .fuse_kernel import KernelPageCache
    from .fuse_ops import S3FUSE, S3Operations
    from .store import RemoteStore

    store = RemoteStore(conn)
    preflight(store, bucket, opts.prefix)
    recover_dead_mount(opts.mountpoint)
    lock_cache_dir(cache_dir)
    cache = DataCache(cache_dir, capacity=opts.cache_size or default_cache_size(cache_dir))
    defaults = Defaults(uid=opts.uid if opts.uid is not None else os.getuid(),
                        gid=opts.gid if opts.gid is not None else os.getgid(),
                        file_mode=opts.file_mode, dir_mode=opts.dir_mode,
                        force_owner=opts.uid is not None or opts.gid is not None,
                        store_all=opts.posix_meta == "all")
    # Page cache is reclaimable, but an object stored there whole pushes out other files'
    # pages: at most an eighth of the machine's memory per object.
    kernel_cache = KernelPageCache(opts.mountpoint, max_bytes=os.sysconf("SC_PHYS_PAGES")
                                   * os.sysconf("SC_PAGE_SIZE") // 8)
    fs = S3FileSystem(store, cache, bucket, opts.prefix, defaults=defaults,
                      metadata_ttl=opts.metadata_ttl, read_only=opts.read_only,
                      kernel_cache=kernel_cache)

    if cache.recovered:
        from .fs.recovery import recover
        done, kept = recover(fs)
        log.info("crash recovery: %d file(s) uploaded, %d kept in the cache", len(done), len(kept))

    def on_init() -> None:
        threading.Thread(target=announce_ready, args=(opts.mountpoint, opts.read_ahead),
                         daemon=True).start()

    destroyed_clean = threading.Event()

    def on_destroy() -> None:
        failed = fs.flush_all()
        if failed:
            log.error("unmounting with %d file(s) not uploaded, kept in %s: %s", len(failed),
                      cache_dir, ", ".join(failed))
        else:
            destroyed_clean.set()
        log.info("unmounted %s", opts.mountpoint)

    from .stats import StatsServer

    def collect() -> dict:
        return {"mountpoint": os.path.realpath(opts.mountpoint), "bucket": bucket,
                "prefix": opts.prefix, **store.transport.stats.snapshot(), **cache.stats(),
                "uploads": fs.upload_progress(), "kernel_cache_bytes": kernel_cache.stored_bytes}
    stats_server = StatsServer(opts.mountpoint, collect)
    ops = S3Operations(fs, on_init=on_init, on_destroy=on_destroy, max_read=MAX_READ,
                       kernel_cache=kernel_cache)
    log.info("mounting s3://%s/%s at %s (s3mount %s, endpoint %s, credentials from %s)", bucket,
             opts.prefix, opts.mountpoint, __version__, conn.endpoint_info.host,
             conn.credential_source)
    install_signal_handlers(opts.mountpoint)
    # botocore and the rest leave ~46,000 objects that live as long as the daemon; every full
    # collection walked them all again (+30 ms on every other 10,000-entry listing, bench).
    gc.collect()
    gc.freeze()
    try:
        S3FUSE(ops, opts.mountpoint, foreground=True, nothreads=False,
                     **opts.fuse_kwargs(bucket))
    except RuntimeError as e:
        if not destroyed_clean.is_set():
            fail(f"FUSE mount of {opts.mountpoint} failed: {e}")
        # Seen on Linux 6.18: when a lazily detached mount's last file closes, a libfuse worker's
        # read of /dev/fuse can get ECONNABORTED after destroy() has run, and fuse_main returns
        # 8. Everything was uploaded by then: that is a clean stop, not a failure to restart.
        log.info("FUSE session ended with status %s after a clean unmount", e)
    finally:
        stats_server.close()
        cache.close()
        store.close()


def default_cache_size(cache_dir: str) -> int:
    """10 GiB, or half the free space under the cache directory if that is less."""
    st = os.statvfs(cache_dir)
    return max(64 << 20, min(10 << 30, st.f_bavail * st.f_frsize // 2))


_cache_lock_fd: int | None = None


def lock_cache_dir(cache_dir: str) -> None:
    """One mount per cache directory: its blocks and index are not shared."""
    import fcntl
    global _cache_lock_fd
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(cache_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"cache directory {cache_dir} is in use by another s3mount; give each mount its own --cache-dir")
    _cache_lock_fd = fd


def announce_ready(mountpoint: str, read_ahead: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if mountinfo_has(mountpoint):
            try:
                os.stat(mountpoint)
                break
            except OSError:
                pass
        time.sleep(0.02)
    else:
        log.error("the mount did not answer within 30 s")
        tell_parent(f"FAILED the mount at {mountpoint} did not answer within 30 s; its daemon "
                    f"(pid {os.getpid()}) is still running")
        return
    raise_readahead(mountpoint, read_ahead // 1024)
    log.info("mount ready at %s", mountpoint)
    tell_parent("READY")
    from .notify import sd_notify
    sd_notify("READY=1\nSTATUS=mounted " + mountpoint)


def tell_parent(line: str) -> None:
    """Answer the `s3mount` command waiting in detach(), once: READY, or FAILED and why."""
    fd = os.environ.pop("S3MOUNT_READY_FD", None)
    if fd:
        try:
            os.write(int(fd), line.encode() + b"\n")
            os.close(int(fd))
        except OSError:
            pass


def raise_readahead(mountpoint: str, kib: int) -> None:
    """Set the mount's kernel readahead (its bdi's read_ahead_kb; needs root): FUSE INIT cannot
    ask for more than 1 MiB, and the kernel starts a mount at 128 KiB."""
    try:
        dev = os.stat(mountpoint).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path, "w") as f:
            f.write(str(kib))
        log.info("kernel readahead %d KiB", kib)
    except OSError as e:
        log.info("kept the kernel's readahead: %s (needs root)", e)


def is_dead_mount(mountpoint: str) -> bool:
    """statvfs always asks the daemon (stat may be answered from the kernel's attr cache)."""
    try:
        os.statvfs(mountpoint)
        return False
    except OSError as e:
        return e.errno == errno.ENOTCONN


def recover_dead_mount(mountpoint: str) -> None:
    if not is_dead_mount(mountpoint):
        return
    log.warning("%s is a dead FUSE mount (transport endpoint not connected); unmounting it lazily",
                mountpoint)
    if first_success([["fusermount3", "-uz", mountpoint], ["fusermount", "-uz", mountpoint],
                      ["umount", "-l", mountpoint]], timeout=30) is None:
        fail(f"{mountpoint} is a dead mount and could not be unmounted")


def first_success(commands: list[list[str]], timeout: float) -> list[str] | None:
    """Run the commands in order until one exits 0; return it (None if none did)."""
    for cmd in commands:
        try:
            if subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0:
                return cmd
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def unmount(mountpoint: str) -> bool:
    """Unmount; if files are still open (a close may be uploading), detach lazily: the kernel
    then ends the session when the last one is closed, and destroy() uploads what is left."""
    cmd = first_success([["fusermount3", "-u", mountpoint], ["fusermount", "-u", mountpoint],
                         ["umount", mountpoint], ["fusermount3", "-uz", mountpoint],
                         ["umount", "-l", mountpoint]], timeout=60)
    if cmd is not None and ("-uz" in cmd or "-l" in cmd):
        log.info("%s was busy: detached lazily; exiting once open files are closed", mountpoint)
    return cmd is not None


def install_signal_handlers(mountpoint: str) -> None:
    """SIGTERM/SIGINT unmount cleanly (destroy() then uploads what is pending); SIGHUP reopens
    the log file. The main thread spends its life inside libfuse's C loop, where Python signal
    handlers never run, so signals arrive through a wakeup pipe read by a thread of their own."""
    def stop(signum: int) -> None:
        log.info("signal %d: unmounting %s", signum, mountpoint)
        from .notify import sd_notify
        sd_notify("STOPPING=1")
        if not unmount(mountpoint):
            log.error("could not unmount %s on signal %d", mountpoint, signum)

    def reopen() -> None:
        for h in logging.getLogger().handlers:
            if hasattr(h, "reopen"):
                h.reopen()
        log.info("log file reopened (SIGHUP)")

    r, w = os.pipe()
    os.set_blocking(w, False)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: None)  # the C-level handler feeds the wakeup pipe
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            for signum in os.read(r, 64):
                if signum == signal.SIGHUP:
                    reopen()
                else:
                    threading.Thread(target=stop, args=(signum,), daemon=True).start()
    threading.Thread(target=watch, name="signals", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stats"]:
        from .stats import main as stats_main
        sys.exit(stats_main(argv[1:]))
    try:
        opts = parse_args(argv)
    except OptionError as e:
        fail(str(e), 2)
    if opts.version:
        print(f"s3mount {__version__}")
        return
    if not opts.foreground:
        # Before detaching, a failure is one line on stderr (fail), not log records too.
        logging.basicConfig(level=logging.ERROR, format="s3mount: %(message)s")
        check_mountpoint(opts.mountpoint, opts.nonempty)
        conn = build_connection(opts)
        bucket = opts.bucket or conn.default_bucket
        if not bucket:
            fail("no bucket: give BUCKET on the command line or default_bucket in the config")
        from .store import RemoteStore
        store = RemoteStore(conn)
        preflight(store, bucket, opts.prefix)
        store.close()
        detach(argv, opts)
    run_mount(opts)


if __name__ == "__main__":
    main()
