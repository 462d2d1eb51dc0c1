"""The throw-away SeaweedFS that soak.py and small_phases.py run against, through
../shared/bench/s3server (beside this repository)."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S3SERVER = os.path.join(REPO, "..", "shared", "bench", "s3server")


def start(server_dir: str, port_base: str, access_key: str, secret_key: str, bucket: str) -> str:
    """Start it (bucket created); returns the endpoint URL."""
    return subprocess.run([sys.executable, S3SERVER, "start", "--dir", server_dir, "--port-base",
                           port_base, "--access-key", access_key, "--secret-key", secret_key,
                           "--bucket", bucket], check=True, capture_output=True,
                          text=True).stdout.strip()


def stop(server_dir: str) -> None:
    subprocess.run([sys.executable, S3SERVER, "stop", "--dir", server_dir], capture_output=True)
