"""HTTP to S3: one pooled requests session, SigV4 signing by botocore, and the one retry loop.

Every request of the store goes through `Transport.call`, so backoff, re-signing, error typing and
failure logging happen in exactly one place.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import random
import threading
import time
from typing import Callable, Mapping, TypeVar
from urllib.parse import quote

import requests
import urllib3.exceptions

from . import signing, wire, xml
from .config import S3Connection
from .errors import (NotFoundError, PreconditionFailedError, RemoteStoreError, TransportError,
                     error_from_response)

log = logging.getLogger("s3mount.store")

USER_AGENT = "s3mount"

T = TypeVar("T")

# Counters the mount's `stats` command reads; plain ints guarded by one lock.
class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.retries = 0
        self.bytes_up = 0
        self.bytes_down = 0

    def count(self, operation: str, up: int = 0) -> None:
        with self.lock:
            self.requests[operation] = self.requests.get(operation, 0) + 1
            self.bytes_up += up

    def add_down(self, n: int) -> None:
        with self.lock:
            self.bytes_down += n

    def error(self, operation: str) -> None:
        with self.lock:
            self.errors[operation] = self.errors.get(operation, 0) + 1

    def snapshot(self) -> dict:
        with self.lock:
            return {"requests": dict(self.requests), "errors": dict(self.errors),
                    "retries": self.retries, "bytes_up": self.bytes_up,
                    "bytes_down": self.bytes_down}


class Response:
    """What the store reads of an HTTP answer: status, headers, and the body, read in full or
    streamed. The connection goes back to its pool once the body is read to its end, and is
    closed instead when it was not (it cannot carry another request mid-body)."""

    __slots__ = ("_resp", "_conn", "_pool", "_data", "status_code", "headers")

    def __init__(self, resp: wire.FastResponse, conn, pool: urllib3.HTTPConnectionPool):
        self._resp, self._conn, self._pool = resp, conn, pool
        self._data: bytes | None = None
        self.status_code = resp.status
        self.headers = resp.headers  # case-insensitive

    @property
    def content(self) -> bytes:
        if self._data is None:  # read in full once, then kept
            try:
                self._data = self._resp.read()
            finally:
                self.close()
        return self._data

    def readinto(self, view: memoryview) -> int:
        """Body bytes straight from the socket into `view`."""
        return self._resp.readinto(view)

    def close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if not self._resp.isclosed() or self._resp.will_close:
            conn.close()
        self._resp.close()
        self._pool._put_conn(conn)  # a closed connection reconnects when next taken


def quote_key(key: str) -> str:
    # '.' and '..' segments are sent percent-encoded so no HTTP layer normalises them away.
    segments = quote(key, safe="/~").split("/")
    return "/".join("%2E" * len(s) if s in (".", "..") else s for s in segments)


# Outcomes the callers expect and handle; not worth a warning in the log.
_QUIET = (NotFoundError, PreconditionFailedError)


class Transport:
    def __init__(self, connection: S3Connection, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random):
        self.conn = connection
        self.sleep, self.clock, self.jitter = sleep, clock, jitter
        self.stats = Stats()
        self.session = requests.Session()
        self._adapter = requests.adapters.HTTPAdapter(pool_connections=4,
                                                      pool_maxsize=connection.max_connections,
                                                      max_retries=0)
        self.session.mount("http://", self._adapter)
        self.session.mount("https://", self._adapter)
        self.session.verify = connection.verify_tls
        self.session.trust_env = False  # proxies from env would silently reroute; not wanted
        self._pools: dict[tuple[str, str], urllib3.HTTPConnectionPool] = {}

    # -- addressing ---------------------------------------------------------------------------
    def url(self, bucket: str, key: str | None) -> str:
        ep = self.conn.endpoint_info
        path = "/" + quote_key(key) if key else "/"
        if self.conn.use_virtual_host(bucket):
            return f"{ep.scheme}://{bucket}.{ep.host}{path}"
        return f"{ep.scheme}://{ep.host}/{quote(bucket, safe='')}{path if key else ''}"

    # -- the one retry loop --------------------------------------------------------------------
    def call(self, operation: str, bucket: str | None, key: str | None, fn: Callable[[], T]) -> T:
        """Run `fn` (one attempt) until it succeeds, fails for good, or the retry budget is spent."""
        c = self.conn
        deadline = self.clock() + c.max_retry_time
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except RemoteStoreError as e:
                err = e
            except urllib3.exceptions.SSLError as e:
                err = TransportError(f"TLS failure talking to {c.endpoint_info.host}: {e}",
                                     operation=operation, bucket=bucket, key=key)
                err.retryable = False
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError,
                    TimeoutError) as e:
                err = TransportError(f"{type(e).__name__} talking to {c.endpoint_info.host}",
                                     operation=operation, bucket=bucket, key=key)
            err.operation = err.operation or operation
            err.bucket = err.bucket or bucket
            err.key = err.key if err.key is not None else key
            delay = self.jitter() * min(c.retry_max_delay, c.retry_base_delay * 2 ** (attempt - 1))
            if not err.retryable or attempt >= c.max_attempts or self.clock() + delay > deadline:
                quiet = isinstance(err, _QUIET)
                if not quiet:
                    self.stats.error(operation)
                level = logging.DEBUG if quiet else logging.WARNING
                log.log(level, "S3 request failed after %d attempt(s): %s", attempt, err)
                raise err
            with self.stats.lock:
                self.stats.retries += 1
            log.info("retrying in %.2fs (attempt %d): %s", delay, attempt, err)
            self.sleep(delay)

    # -- one signed exchange ------------------------------------------------------------------
    def _pool(self, scheme: str, host: str) -> urllib3.HTTPConnectionPool:
        """The session's connection pool for one host, with requests' TLS settings (verify, CA
        bundle). Its connections carry the requests `wire.exchange` writes: requests' per-request
        machinery (prepare, environment merging, cookies, hooks, Response building) and urllib3's
        `urlopen` cost more than half of a small request's client CPU, and s3mount needs none
        of it."""
        pool = self._pools.get((scheme, host))
        # .pool is None once closed: the pool manager keeps 4 hosts and drops the oldest
        # (virtual-hosted addressing has a host per bucket); some urllib3 versions close it.
        if pool is None or pool.pool is None:
            probe = requests.Request("GET", f"{scheme}://{host}/").prepare()
            pool = self._adapter.get_connection_with_tls_context(probe, self.session.verify)
            self._pools[(scheme, host)] = pool
        return pool

    def send(self, method: str, bucket: str, key: str | None = None, *, operation: str,
             params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
             body: bytes | memoryview = b"",
             stream: bool = False, expect: tuple[int, ...] = (200,)) -> Response:
        """One attempt: sign, send, and turn any unexpected status into a typed error."""
        url = self.url(bucket, key)
        if params:
            url += "?" + "&".join(k if v is None else f"{quote(k, safe='')}={quote(str(v), safe='-_.~')}"
                                  for k, v in sorted(params.items()))
        scheme, rest = url.split("://", 1)
        host, _, path = rest.partition("/")
        hdrs = {**(headers or {}), "host": signing.signed_host(scheme, host)}
        creds = self.conn.frozen_credentials()
        if creds is not None:
            hdrs = signing.sign(creds, self.conn.region, method, url, hdrs, body)
        hdrs["User-Agent"] = USER_AGENT
        hdrs["Accept-Encoding"] = "identity"
        self.stats.count(operation, up=len(body))
        pool = self._pool(scheme, host)
        conn = pool._get_conn()
        fresh = conn.sock is None
        try:
            conn.timeout = self.conn.connect_timeout  # what connect() uses
            raw = wire.exchange(conn, method, "/" + path, hdrs, body, self.conn.read_timeout)
        except BaseException as e:
            conn.close()
            pool._put_conn(conn)
            # A handshake that fails (certificate, protocol) fails again; a TLS error on a kept
            # connection is a dropped connection, worth a retry.
            if fresh and isinstance(e, (ssl.SSLError, urllib3.exceptions.SSLError)):
                err = TransportError(f"TLS failure talking to {host}: {e}", operation=operation,
                                     bucket=bucket, key=key)
                err.retryable = False
                raise err from e
            if isinstance(e, OSError) and not isinstance(e, (ConnectionError, TimeoutError)) \
                    or isinstance(e, ssl.SSLError):
                # e.g. no route to host: retried like a refused connection
                raise TransportError(f"{type(e).__name__} talking to {host}: {e}",
                                     operation=operation, bucket=bucket, key=key) from e
            raise
        resp = Response(raw, conn, pool)
        if not stream:
            resp.content  # noqa: B018 - read now: the connection goes back to the pool
        if resp.status_code in expect:
            return resp
        err_body = resp.content if method != "HEAD" else b""
        code, message, request_id = xml.parse_error(err_body)
        request_id = request_id or resp.headers.get("x-amz-request-id")
        raise error_from_response(resp.status_code, code, message, request_id,
                                  operation=operation, bucket=bucket, key=key)

    def request(self, method: str, bucket: str, key: str | None = None, *, operation: str,
                **kwargs) -> Response:
        """`send` inside the retry loop, body read in full (so a truncated body is retried)."""
        def attempt() -> Response:
            resp = self.send(method, bucket, key, operation=operation, **kwargs)
            if not kwargs.get("stream"):
                resp.content  # noqa: B018 - reads the body inside the retry loop
                self.stats.add_down(len(resp.content))
            return resp
        return self.call(operation, bucket, key, attempt)
