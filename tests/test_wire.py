"""wire.py's response-head parser against canned HTTP answers (the edge cases a real S3 server
rarely sends), and through the store against SeaweedFS."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest
import urllib3

from conftest import BUCKET
from s3mount.store import wire


class Canned:
    """A loopback server answering each request on a connection with the next canned reply."""

    def __init__(self, replies: list[bytes]):
        self.replies = list(replies)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                buf = b""
                while self.replies:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    if b"\r\n\r\n" not in buf:
                        break
                    buf = buf.split(b"\r\n\r\n", 1)[1]
                    reply = self.replies.pop(0)
                    conn.sendall(reply)
                    if b"connection: close" in reply.lower() or b"content-length" not in reply.lower() \
                            and b"chunked" not in reply.lower() and not reply.startswith(b"HTTP/1.1 204"):
                        break

    def pool(self) -> urllib3.HTTPConnectionPool:
        pool = urllib3.HTTPConnectionPool("127.0.0.1", self.port, maxsize=1)
        pool.ConnectionCls = wire.HTTPConnection
        return pool

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Canned":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def get(pool, method="GET", path="/"):
    return pool.urlopen(method, path, retries=False, preload_content=True)


def test_headers_are_case_insensitive_and_kept_in_order():
    with Canned([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Amz-Meta-A:  one \r\n"
                 b"x-amz-meta-a: two\r\nETag: \"abc\"\r\nX-Folded: first\r\n  second\r\n\r\nok"]) as srv:
        r = get(srv.pool())
        assert r.status == 200 and r.data == b"ok"
        assert r.headers["etag"] == '"abc"' and r.headers["ETAG"] == '"abc"'
        assert r.headers.getlist("X-AMZ-META-A") == ["one ", "two"]  # as http.client keeps them
        assert r.headers["x-folded"] == "first second"
        msg = r._original_response.msg
        assert isinstance(msg, http.client.HTTPMessage) and "etag" in msg and "nope" not in msg
        assert msg.get_all("nope") is None and msg.get("nope", "d") == "d"


def test_head_and_no_content_have_no_body_and_keep_the_connection():
    with Canned([b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n",
                 b"HTTP/1.1 204 No Content\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"]) as srv:
        pool = srv.pool()
        r = get(pool, "HEAD")
        assert r.status == 200 and r.data == b"" and r.headers["content-length"] == "12345"
        assert get(pool, "DELETE").status == 204
        assert get(pool).data == b"abc"
        assert srv.connections == 1  # all three on one kept-alive connection


def test_chunked_body_and_100_continue():
    with Canned([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"]) as srv:
        r = get(srv.pool())
        assert r.status == 200 and r.data == b"hello world"


def test_body_without_length_ends_at_close():
    with Canned([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"]) as srv:
        r = get(srv.pool())
        assert r.data == b"until the end"
        assert r._original_response.will_close


def test_hostile_heads_are_refused():
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(wire.MAX_HEADERS + 1))
    with Canned([b"HTTP/1.1 200 OK\r\n" + many + b"\r\n",
                 b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (wire.MAX_LINE + 10) + b"\r\n\r\n",
                 b"NOT-HTTP garbage\r\n\r\n"]) as srv:
        for _ in range(3):
            with pytest.raises((http.client.HTTPException, urllib3.exceptions.HTTPError)):
                get(srv.pool())


def test_store_connections_use_the_fast_parser(client, prefix):
    client.put(BUCKET, prefix + "w", b"x" * 10, {"x-amz-meta-colour": "blue"})
    info = client.head(BUCKET, prefix + "w")
    assert info.size == 10 and info.metadata["x-amz-meta-colour"] == "blue"
    pool = next(iter(client.t._pools.values()))
    assert pool.ConnectionCls in (wire.HTTPConnection, wire.HTTPSConnection)


@pytest.mark.parametrize("method,url,headers,body", [
    ("HEAD", "http://127.0.0.1:9000/b/k%20ey", {}, b""),
    ("GET", "http://127.0.0.1:9000/b/k?list-type=2&prefix=a%2Fb", {"range": "bytes=0-9"}, b""),
    ("PUT", "http://127.0.0.1:9000/b/k", {"x-amz-meta-Colour": "blue", "Content-Type": "text/plain"},
     b"body"),
    ("PUT", "https://s3.example.com/b/k?partNumber=2&uploadId=x", {"Content-MD5": "abc=="}, b"body"),
    ("POST", "http://127.0.0.1:9000/b?delete", {"x-amz-checksum-crc32": "AAAA"}, b"<Delete/>"),
])
def test_signing_matches_botocores_own_request(monkeypatch, method, url, headers, body):
    """The light request botocore signs here gets the very headers its AWSRequest would."""
    import datetime

    import botocore.auth
    import botocore.credentials
    from botocore.awsrequest import AWSRequest

    from s3mount.store import signing

    class Reference(botocore.auth.S3SigV4Auth):  # botocore's, with our payload rule only
        def _should_sha256_sign_payload(self, request):
            if "Content-MD5" in request.headers or "x-amz-checksum-crc32" in request.headers:
                return False
            return super()._should_sha256_sign_payload(request)

    fixed = datetime.datetime(2026, 12, 2, 12, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)
    for token in (None, "session-token"):
        creds = botocore.credentials.Credentials("AK", "SK", token).get_frozen_credentials()
        host = url.split("/")[2]
        hdrs = {**headers, "host": signing.signed_host(url.split(":")[0], host)}
        ours = signing.sign(creds, "eu-west-1", method, url, hdrs, body)
        ref = AWSRequest(method=method, url=url, data=body, headers=hdrs)
        Reference(creds, "s3", "eu-west-1").add_auth(ref)
        assert ours == dict(ref.headers.items())
        assert ours["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AK/20261202/eu-west-1/s3/")
