"""Two mounts of one bucket, each with its own cache: close-to-open consistency after the
metadata TTL, no block served under an old ETag, and concurrent writers: last close wins,
the overwrite is logged."""

from __future__ import annotations

import os
import time

from conftest import BUCKET
from mountutil import Mount


def test_close_to_open_across_two_mounts(seaweed, store, prefix, workdir):
    a = Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), options=["-o", "metadata_ttl=1"],
              workdir=os.path.join(workdir, "a"))
    b = Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), options=["-o", "metadata_ttl=1"],
              workdir=os.path.join(workdir, "b"))
    with a, b:
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
