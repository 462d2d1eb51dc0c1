"""Crash safety: writes not yet uploaded when the daemon is SIGKILLed are found in the cache by
the next mount and uploaded, or kept and reported, never dropped silently."""

from __future__ import annotations

import os
import signal
import time

from conftest import BUCKET, make_file
from mountutil import Mount, force_unmount
from test_ops import daemon_pid

MiB = 1 << 20


def _kill(m: Mount) -> None:
    os.kill(daemon_pid(m.mnt), signal.SIGKILL)
    m.proc.wait(timeout=30)
    force_unmount(m.mnt)


def test_sigkill_mid_write_then_remount_uploads(seaweed, store, prefix, workdir):
    base = os.path.join(workdir, "base")
    original = bytearray(make_file(base, 6 * MiB, seed=31))
    assert store.write(base, prefix + "edited")
    m = Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), workdir=os.path.join(workdir, "m"))
    try:
        m.start()
        new = open(m.path("new"), "wb")
        new.write(b"N" * (3 * MiB + 5))
        new.flush()
        edit = open(m.path("edited"), "r+b")
        edit.seek(4 * MiB + 3)
        edit.write(b"EDIT")
        edit.flush()
        original[4 * MiB + 3: 4 * MiB + 7] = b"EDIT"
        time.sleep(0.2)
        assert store.exists(prefix + "new") == (False, {})  # nothing uploaded yet
        _kill(m)
        for f in (new, edit):
            try:
                f.close()
            except OSError:
                pass  # the daemon is gone: this close cannot upload
        m.start()  # same cache directory
        assert "recovered" in m.log_text() and "uploaded" in m.log_text()
        assert store.client.get_bytes(BUCKET, prefix + "new")[0] == b"N" * (3 * MiB + 5)
        assert store.client.get_bytes(BUCKET, prefix + "edited")[0] == bytes(original)
        assert open(m.path("new"), "rb").read() == b"N" * (3 * MiB + 5)
    finally:
        m.cleanup()


def test_recovery_keeps_and_reports_when_object_changed(seaweed, store, prefix, workdir):
    store.client.put(BUCKET, prefix + "c", b"version one")
    m = Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), workdir=os.path.join(workdir, "m"))
    try:
        m.start()
        f = open(m.path("c"), "r+b")
        f.write(b"LOCAL")
        f.flush()
        _kill(m)
        try:
            f.close()
        except OSError:
            pass
        store.client.put(BUCKET, prefix + "c", b"version two from elsewhere")
        m.start()
        log = m.log_text()
        assert "are kept in" in log and "changed in S3" in log
        kept = [n for n in os.listdir(os.path.join(m.cache, "data")) if not n.endswith(".json")]
        assert kept, "the unsent data must still be in the cache"
        assert store.client.get_bytes(BUCKET, prefix + "c")[0] == b"version two from elsewhere"
    finally:
        m.cleanup()
