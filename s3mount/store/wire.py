"""HTTP/1.1 exchanges on the session's pooled connections: the request head written in one
piece, the response head read without the email package.

urllib3's `urlopen` and http.client's `putrequest`/`putheader` cost about 270 µs of CPU per
request on this project's 2-core VMs (bench/README.md, "Per-request CPU"), more than the signing
and more than everything else the store does for a HEAD. The store takes a connection from the
requests session's urllib3 pool (which owns connecting, TLS settings, dropped-connection checks
and reuse), writes the request with `exchange` and reads the answer with `FastResponse`.

http.client parses every response's header block with `email.feedparser` and answers each
header lookup through `email.policy`: 150-200 µs of CPU per S3 request on this project's 2-core
VMs, a fifth of a HEAD's whole client cost (bench/README.md, "Per-request CPU"). The connections
of the store's pools build `FastResponse` instead, which reads the same status line and header
block into an `HTTPMessage` whose lookups are list scans. Everything after the head (bodies,
chunked decoding, when a connection must close) is http.client's own code.
"""

from __future__ import annotations

import http.client
import socket

SMALL_BODY = 64 * 1024  # sent in the same write as the head; larger bodies follow it

MAX_LINE = 65536   # http.client's limits, so a hostile server is refused at the same points
MAX_HEADERS = 100


class Headers(http.client.HTTPMessage):
    """An HTTPMessage holding (name, value) pairs as parsed; lookups ignore case like
    email.message's, without its per-access policy calls."""

    def __init__(self, pairs: list[tuple[str, str]]):
        super().__init__()
        self._headers = pairs

    def get(self, name, failobj=None):
        name = name.lower()
        for k, v in self._headers:
            if k.lower() == name:
                return v
        return failobj

    def __getitem__(self, name):
        return self.get(name)

    def __contains__(self, name):
        name = name.lower()
        return any(k.lower() == name for k, _ in self._headers)

    def get_all(self, name, failobj=None):
        name = name.lower()
        found = [v for k, v in self._headers if k.lower() == name]
        return found or failobj

    def keys(self):
        return [k for k, _ in self._headers]

    def values(self):
        return [v for _, v in self._headers]

    def items(self):
        return list(self._headers)


def read_header_block(fp) -> list[tuple[str, str]]:
    """Header lines up to the blank line, as http.client reads them (Latin-1, the same limits).
    A folded line (obsolete, never sent by S3) continues the previous value."""
    pairs: list[tuple[str, str]] = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return pairs
        if len(pairs) >= MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        text = line.decode("iso-8859-1")
        if text[0] in " \t" and pairs:
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {text.strip()}")
            continue
        name, colon, value = text.partition(":")
        if colon:
            pairs.append((name, value.lstrip(" \t").rstrip("\r\n")))


class FastResponse(http.client.HTTPResponse):
    """http.client's response with its head read by read_header_block; the attributes begin()
    sets are the ones http.client's own begin() sets, by the same rules."""

    def begin(self):
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            read_header_block(self.fp)  # the head of a 100 Continue
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = Headers(read_header_block(self.fp))
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                n = int(length)
            except ValueError:
                n = -1
            self.length = n if n >= 0 else None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) \
                or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # no length: the body ends when the server closes


def request_head(method: str, target: str, headers: dict[str, str],
                 body_length: int | None) -> bytes:
    """The request line and headers. A CR or LF inside a name, value or target would let a
    metadata value smuggle headers or a second request, so such a request is refused whole."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body_length is not None:
        lines.append(f"Content-Length: {body_length}")
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1 \
            or " " in target or "\0" in text:
        raise ValueError("CR, LF or NUL in an HTTP header or request target")
    return (text + "\r\n\r\n").encode("latin-1")


def exchange(conn, method: str, target: str, headers: dict[str, str], body: bytes | memoryview,
             read_timeout: float | None) -> FastResponse:
    """Send one request on `conn` (a urllib3 connection, connected here if it is not) and read
    the response head. The body is left to the caller."""
    with_length = bool(body) or method in ("PUT", "POST")
    head = request_head(method, target, headers, len(body) if with_length else None)
    if conn.sock is None:
        conn.connect()
    sock: socket.socket = conn.sock
    sock.settimeout(read_timeout)
    if len(body) <= SMALL_BODY:
        sock.sendall(head + body if body else head)
    else:
        sock.sendall(head)
        sock.sendall(body)
    resp = FastResponse(sock, method=method)
    try:
        resp.begin()
    except BaseException:
        resp.close()
        raise
    return resp
