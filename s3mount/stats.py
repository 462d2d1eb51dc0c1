"""Live statistics of a running mount: a Unix socket the daemon answers on, and the
`s3mount stats MOUNTPOINT` client that prints what it says."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Callable

log = logging.getLogger("s3mount.stats")


def socket_path(mountpoint: str) -> str:
    """Where the daemon of `mountpoint` listens: one socket per mountpoint, owner-only."""
    real = os.path.realpath(mountpoint)
    digest = hashlib.sha256(real.encode()).hexdigest()[:16]
    base = "/run/s3mount" if os.geteuid() == 0 else os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/s3mount-{os.geteuid()}", "s3mount")
    return os.path.join(base, f"{digest}.sock")


class StatsServer:
    def __init__(self, mountpoint: str, collect: Callable[[], dict]):
        self.path = socket_path(mountpoint)
        self.collect = collect
        self.started = time.time()
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old)
        self.sock.listen(8)
        threading.Thread(target=self._serve, name="stats", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    data = dict(self.collect(), uptime_seconds=round(time.time() - self.started, 1))
                    conn.sendall(json.dumps(data).encode())
                except Exception as e:  # noqa: BLE001 - a stats failure must not hurt the mount
                    log.warning("stats request failed: %s", e)

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def fetch(mountpoint: str, timeout: float = 5.0) -> dict:
    path = socket_path(mountpoint)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def render(d: dict) -> str:
    lines = [f"mount       {d.get('mountpoint')}  (s3://{d.get('bucket')}/{d.get('prefix', '')})",
             f"uptime      {d.get('uptime_seconds')} s"]
    req = d.get("requests", {})
    lines.append(f"requests    {sum(req.values())} total: " +
                 ", ".join(f"{k} {v}" for k, v in sorted(req.items())))
    lines.append(f"transfer    up {_mib(d.get('bytes_up', 0))}, down {_mib(d.get('bytes_down', 0))}")
    hits, misses = d.get("block_hits", 0), d.get("block_misses", 0)
    rate = f"{100 * hits / (hits + misses):.1f}%" if hits + misses else "n/a"
    lines.append(f"cache       {_mib(d.get('cache_bytes', 0))} of {_mib(d.get('cache_capacity', 0))}, "
                 f"hit rate {rate} ({hits} hits, {misses} misses)")
    lines.append(f"kernel      {_mib(d.get('kernel_cache_bytes', 0))} of filled objects stored in "
                 "the page cache")
    lines.append(f"dirty       {_mib(d.get('dirty_bytes', 0))} waiting for upload")
    ups = d.get("uploads", [])
    lines.append(f"uploads     {len(ups)} in flight")
    for u in ups:
        pct = 100 * u["sent"] / u["size"] if u["size"] else 100.0
        lines.append(f"  {u['path']}: {_mib(u['sent'])} of {_mib(u['size'])} ({pct:.0f}%)")
    errs = d.get("errors", {})
    lines.append(f"errors      {sum(errs.values())} since mount" +
                 (": " + ", ".join(f"{k} {v}" for k, v in sorted(errs.items())) if errs else "") +
                 f"; retries {d.get('retries', 0)}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: s3mount stats MOUNTPOINT [--json]\n  prints requests, bytes, cache, "
              "uploads in flight and errors of the mount at MOUNTPOINT", file=sys.stderr)
        return 2 if len(argv) != 1 else 0
    try:
        data = fetch(argv[0])
    except (OSError, ValueError) as e:
        print(f"s3mount: no running s3mount answers for {argv[0]} ({e})", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=1) if as_json else render(data))
    return 0
