"""Two mounts of one bucket, each with its own cache: close-to-open consistency after the
metadata TTL, no block served under an old ETag, and concurrent writers: last close wins,
the overwrite is logged."""

from __future__ import annotations

import os
import sys
import time

from conftest import BUCKET
from mountutil import Mount


def _check_two_mounts(a: Mount, b: Mount, store, prefix: str) -> None:
    with open(a.path("shared"), "wb") as f:
        f.write(b"one" * 1000)
    time.sleep(1.2)
    assert open(b.path("shared"), "rb").read() == b"one" * 1000  # B caches version one
    with open(a.path("shared"), "wb") as f:
        f.write(b"two" * 1000)
    time.sleep(1.2)
    assert open(b.path("shared"), "rb").read() == b"two" * 1000  # never the old blocks

    # concurrent writers: both open, both write, last close wins and is logged
    fa = open(a.path("race"), "wb")
    fb = open(b.path("race"), "wb")
    fa.write(b"from A")
    fb.write(b"from B")
    fa.close()
    fb.close()
    assert store.client.get_bytes(BUCKET, prefix + "race")[0] == b"from B"
    assert "last close wins" in b.log_text()


def test_close_to_open_across_two_mounts(seaweed, store, prefix, workdir):
    a = Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), options=["-o", "metadata_ttl=1"],
              workdir=os.path.join(workdir, "a"))
    b = Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), options=["-o", "metadata_ttl=1"],
              workdir=os.path.join(workdir, "b"))
    with a, b:
        _check_two_mounts(a, b, store, prefix)


def test_two_mounts_in_separate_network_namespaces(seaweed, store, prefix, workdir):
    """The same, with each daemon in its own network namespace: each reaches the server only
    through its own veth link (and a forwarder on the host side), as two machines would."""
    from faultproxy import FaultProxy
    from netns import NetNs
    with NetNs(1) as ns_a, NetNs(2) as ns_b:
        fwd_a = FaultProxy(seaweed.host, seaweed.port, listen_host=ns_a.host_ip)
        fwd_b = FaultProxy(seaweed.host, seaweed.port, listen_host=ns_b.host_ip)
        try:
            # inside a namespace the host's loopback server is out of reach
            probe = ns_a.run(sys.executable, "-c", "import socket; socket.create_connection("
                             f"('127.0.0.1', {seaweed.port}), timeout=2)")
            assert probe.returncode != 0
            a = Mount(fwd_a.endpoint, BUCKET, prefix.rstrip("/"), options=["-o", "metadata_ttl=1"],
                      workdir=os.path.join(workdir, "a"), launcher=ns_a.launcher)
            b = Mount(fwd_b.endpoint, BUCKET, prefix.rstrip("/"), options=["-o", "metadata_ttl=1"],
                      workdir=os.path.join(workdir, "b"), launcher=ns_b.launcher)
            with a, b:
                _check_two_mounts(a, b, store, prefix)
            assert fwd_a.seen and fwd_b.seen  # each daemon's requests went through its own link
        finally:
            fwd_a.close()
            fwd_b.close()
