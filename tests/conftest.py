"""Fixtures: a real SeaweedFS S3 server for the session, moto's server for keys SeaweedFS cannot
hold, a fault-injecting proxy, and a connection/store per test with its own key prefix."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

import s3mount as s3
from s3mount.store import S3Client
from s3mount.store.transport import Transport

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ACCESS_KEY = "s3mountTestAK"
SECRET_KEY = "s3mountTestSecret0123456789abcdef"
BUCKET = "s3mount-test"
# Every mount's log is copied here at teardown, for the final scan for secrets.
LOG_ARCHIVE = os.environ.setdefault("S3MOUNT_TEST_LOGS", tempfile.mkdtemp(prefix="s3mount-test-logs-"))
OTHER_BUCKET = "my-other-bucket"


def s3server_path() -> str:
    path = os.environ.get("S3SERVER") or os.path.join(REPO, "..", "shared", "bench", "s3server")
    if not os.path.exists(path):
        pytest.exit(f"cannot find the s3server script at {path} (set S3SERVER)", returncode=3)
    return path


class Server:
    def __init__(self, endpoint: str, workdir: str):
        self.endpoint = endpoint
        self.workdir = workdir
        self.host, self.port = endpoint.split("//")[1].split(":")
        self.port = int(self.port)

    def connection(self, **kw) -> s3.S3Connection:
        args = dict(access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, endpoint=self.endpoint,
                    default_bucket=BUCKET, max_retry_time=20.0)
        args.update(kw)
        return s3.S3Connection(**args)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS for the whole run (ports from S3MOUNT_TEST_PORT_BASE, default 21700)."""
    workdir = str(tmp_path_factory.mktemp("seaweed"))
    base = os.environ.get("S3MOUNT_TEST_PORT_BASE", "21700")
    script = s3server_path()
    out = subprocess.run([sys.executable, script, "start", "--dir", workdir, "--port-base", base,
                          "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
                          "--bucket", f"{BUCKET},{OTHER_BUCKET}"],
                         capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        pytest.exit(f"SeaweedFS did not start: {out.stderr[-2000:]}", returncode=3)
    server = Server(out.stdout.strip().splitlines()[-1], workdir)
    yield server
    subprocess.run([sys.executable, script, "stop", "--dir", workdir], capture_output=True,
                   timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto():
    """moto's S3 server: it stores keys SeaweedFS rejects ('//', '.', '..' segments)."""
    exe = shutil.which("moto_server")
    if not exe:
        pytest.fail("moto_server not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    server = Server(endpoint, "")
    client = S3Client(Transport(server.connection()))
    client.create_bucket(BUCKET)
    yield server
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}/"


@pytest.fixture
def conn(seaweed):
    return seaweed.connection()


@pytest.fixture
def store(conn):
    st = s3.RemoteStore(conn)
    yield st
    st.close()


@pytest.fixture
def client(store) -> S3Client:
    return store.client


@pytest.fixture
def proxy(seaweed):
    from faultproxy import FaultProxy
    p = FaultProxy(seaweed.host, seaweed.port)
    yield p
    p.close()


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="s3mount-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_file(path: str, size: int, seed: int = 0) -> bytes:
    """A file of `size` pseudo-random bytes (fast: a repeated random 1 MiB block, offset per MiB)."""
    import random
    rnd = random.Random(seed)
    block = rnd.randbytes(min(size, 1 << 20) or 1)
    with open(path, "wb") as f:
        written = 0
        i = 0
        while written < size:
            chunk = (i.to_bytes(8, "little") + block)[: min(len(block), size - written)]
            f.write(chunk)
            written += len(chunk)
            i += 1
    with open(path, "rb") as f:
        return f.read() if size <= 64 << 20 else b""


@pytest.fixture
def mount(seaweed, prefix):
    """A fresh mount of BUCKET:/<unique prefix> with a 1 s metadata TTL."""
    from mountutil import Mount
    m = Mount(seaweed.endpoint, BUCKET, prefix.rstrip("/"), options=["-o", "metadata_ttl=1"])
    m.start()
    yield m
    m.cleanup()


def resident_bytes(path: str) -> int:
    """How much of `path` is in the page cache (util-linux fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def wait_resident_at_most(path: str, limit: int, timeout: float = 60) -> int:
    """resident_bytes(path) once it is <= limit, or its last value after `timeout` seconds:
    the page cache writeback thread drops ranges only once the disk has them."""
    deadline = time.monotonic() + timeout
    while (res := resident_bytes(path)) > limit and time.monotonic() < deadline:
        time.sleep(0.2)
    return res
