"""A small fault-injecting HTTP proxy for tests: sits between a client and a real S3 server.

It forwards requests unchanged (the Host header too, so SigV4 signatures still verify) and, by a
rule the test sets, answers some of them itself: 500/503 errors, connection resets before or in the
middle of a body, stalls past the client's timeout, truncated or corrupted bodies.
"""

from __future__ import annotations

import collections
import http.client
import socket
import socketserver
import threading
import time
from typing import Callable

# An action is a tuple: ("forward",), ("status", code, s3_code), ("reset",), ("reset_mid_body",),
# ("stall", seconds), ("truncate",), ("corrupt",), ("corrupt_request",): flip the request body's
# first byte on the way in; ("no_checksum_echo",): drop x-amz-checksum-* from the answer, as a
# server that ignores checksum headers would
Action = tuple
Rule = Callable[[str, str, dict], Action | None]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        sock = self.request
        rfile = sock.makefile("rb")
        upstream: http.client.HTTPConnection | None = None
        try:
            while True:
                line = rfile.readline(65537)
                if not line or line in (b"\r\n", b"\n"):
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: list[tuple[str, str]] = []
                while True:
                    h = rfile.readline(65537)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers.append((k.strip(), v.strip()))
                hmap = {k.lower(): v for k, v in headers}
                body = rfile.read(int(hmap.get("content-length", "0") or 0))
                action = proxy.decide(method, target, hmap)
                kind = action[0]
                if kind == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                if kind == "stall":
                    time.sleep(action[1])
                    return
                if kind == "status":
                    code, s3code = action[1], action[2]
                    payload = (f"<?xml version=\"1.0\"?><Error><Code>{s3code}</Code><Message>injected "
                               f"by faultproxy</Message><RequestId>FAULT</RequestId></Error>").encode()
                    if method == "HEAD":
                        payload = b""
                    sock.sendall(f"HTTP/1.1 {code} Injected\r\nContent-Type: application/xml\r\n"
                                 f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                    continue
                if upstream is None:
                    upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                          timeout=120)
                upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    upstream.putheader(k, v)
                if kind == "corrupt_request" and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                upstream.endheaders(body if body else None)
                resp = upstream.getresponse()
                data = resp.read()
                out = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n"]
                for k, v in resp.getheaders():
                    if k.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    if kind == "no_checksum_echo" and k.lower().startswith("x-amz-checksum"):
                        continue
                    out.append(f"{k}: {v}\r\n")
                length = len(data) if method != "HEAD" else int(resp.getheader("content-length") or 0)
                if kind == "corrupt" and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                out.append(f"Content-Length: {length}\r\n\r\n")
                head = "".join(out).encode("latin-1")
                if kind in ("truncate", "reset_mid_body") and method != "HEAD":
                    sock.sendall(head + data[: len(data) // 2])
                    if kind == "reset_mid_body":
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                sock.sendall(head + data)
        except (ConnectionError, OSError, ValueError):
            return
        finally:
            if upstream is not None:
                upstream.close()


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1"):
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self._server = _Server((listen_host, 0), _Handler)
        self._server.proxy = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self.endpoint = f"http://{listen_host}:{self.port}"
        self._lock = threading.Lock()
        self.plan: collections.deque[Action] = collections.deque()
        self.rule: Rule | None = None
        self.injected: collections.Counter[str] = collections.Counter()
        self.seen: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, str, str | None]] = []
        self.requests: list[tuple[str, str, dict]] = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def decide(self, method: str, target: str, headers: dict) -> Action:
        with self._lock:
            self.seen.append((method, target))
            self.ranges.append((method, target, headers.get("range")))
            self.requests.append((method, target, dict(headers)))
            action = self.rule(method, target, headers) if self.rule else None
            if action is None and self.plan:
                action = self.plan.popleft()
            action = action or ("forward",)
            if action[0] != "forward":
                self.injected[action[0] if action[0] != "status" else f"status-{action[1]}"] += 1
            return action

    def fail_next(self, *actions: Action) -> None:
        with self._lock:
            self.plan.extend(actions)

    def reset(self) -> None:
        with self._lock:
            self.plan.clear()
            self.rule = None
            self.injected.clear()
            self.seen.clear()
            self.ranges.clear()
            self.requests.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
