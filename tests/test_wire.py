"""wire.py's exchange and response-head parser against canned HTTP answers (the edge cases a
real S3 server rarely sends), and through the store against SeaweedFS."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest
import urllib3

from conftest import BUCKET
from s3mount.store import wire
from s3mount.store.transport import Response


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
        return urllib3.HTTPConnectionPool("127.0.0.1", self.port, maxsize=1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Canned":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def get(pool, method="GET", path="/", headers=None, body=b""):
    """One exchange on a pooled connection, the way Transport.send does it, body read."""
    conn = pool._get_conn()
    try:
        raw = wire.exchange(conn, method, path, headers or {"host": "x"}, body, 5.0)
    except BaseException:
        conn.close()
        pool._put_conn(conn)
        raise
    resp = Response(raw, conn, pool)
    resp.content  # noqa: B018
    return resp


def test_headers_are_case_insensitive_and_kept_in_order():
    with Canned([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Amz-Meta-A:  one \r\n"
                 b"x-amz-meta-a: two\r\nETag: \"abc\"\r\nX-Folded: first\r\n  second\r\n\r\nok"]) as srv:
        r = get(srv.pool())
        assert r.status_code == 200 and r.content == b"ok"
        assert r.headers["etag"] == '"abc"' and r.headers["ETAG"] == '"abc"'
        assert r.headers.get_all("X-AMZ-META-A") == ["one ", "two"]  # as http.client keeps them
        assert r.headers["x-folded"] == "first second"
        msg = r.headers
        assert isinstance(msg, http.client.HTTPMessage) and "etag" in msg and "nope" not in msg
        assert msg.get_all("nope") is None and msg.get("nope", "d") == "d"


def test_head_and_no_content_have_no_body_and_keep_the_connection():
    with Canned([b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n",
                 b"HTTP/1.1 204 No Content\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"]) as srv:
        pool = srv.pool()
        r = get(pool, "HEAD")
        assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "12345"
        assert get(pool, "DELETE").status_code == 204
        assert get(pool).content == b"abc"
        assert srv.connections == 1  # all three on one kept-alive connection


def test_chunked_body_and_100_continue():
    with Canned([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"]) as srv:
        r = get(srv.pool())
        assert r.status_code == 200 and r.content == b"hello world"


def test_body_without_length_ends_at_close():
    with Canned([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"]) as srv:
        r = get(srv.pool())
        assert r.content == b"until the end"
        assert r._resp.will_close


def test_hostile_heads_are_refused():
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(wire.MAX_HEADERS + 1))
    with Canned([b"HTTP/1.1 200 OK\r\n" + many + b"\r\n",
                 b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (wire.MAX_LINE + 10) + b"\r\n\r\n",
                 b"NOT-HTTP garbage\r\n\r\n"]) as srv:
        for _ in range(3):
            with pytest.raises(http.client.HTTPException):
                get(srv.pool())


class Recording(Canned):
    """A Canned server that also keeps the raw bytes of every request it read."""

    def __init__(self, replies):
        self.seen = b""
        super().__init__(replies)

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            for i, reply in enumerate(self.replies):
                while self.seen.count(b"\r\n\r\n") <= i \
                        or not self.seen.endswith((b"\r\n\r\n", b"body")):
                    self.seen += conn.recv(65536)
                conn.sendall(reply)


def test_request_head_and_body_are_sent_as_written():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    with Recording([ok, ok]) as srv:
        pool = srv.pool()
        get(pool, "PUT", "/b/k%20x?partNumber=1", {"host": "h", "x-amz-meta-a": "b"}, b"body")
        get(pool, "DELETE", "/b/k", {"host": "h"})
        assert srv.seen == (b"PUT /b/k%20x?partNumber=1 HTTP/1.1\r\nhost: h\r\nx-amz-meta-a: b\r\n"
                            b"Content-Length: 4\r\n\r\nbody"
                            b"DELETE /b/k HTTP/1.1\r\nhost: h\r\n\r\n")


@pytest.mark.parametrize("headers,target", [
    ({"x-amz-meta-a": "b\r\nx-injected: 1"}, "/k"),
    ({"x-amz-meta-a": "b\nx"}, "/k"),
    ({"x-amz-meta-a\r\nx": "b"}, "/k"),
    ({"x-amz-meta-a": "nul\0"}, "/k"),
    ({}, "/k HTTP/1.1\r\nHost: other"),
    ({}, "/k x"),
])
def test_header_or_target_smuggling_is_refused(headers, target):
    with pytest.raises(ValueError):
        wire.request_head("GET", target, headers, None)


def test_a_body_larger_than_one_write_is_sent_whole(client, prefix):
    body = bytes(range(256)) * (wire.SMALL_BODY // 256 * 3 + 7)
    client.put(BUCKET, prefix + "big", memoryview(body))
    assert client.get_bytes(BUCKET, prefix + "big")[0] == body


def test_store_exchanges_reuse_pooled_connections(client, prefix):
    client.put(BUCKET, prefix + "w", b"x" * 10, {"x-amz-meta-colour": "blue"})
    pool = next(iter(client.t._pools.values()))
    conn = pool._get_conn()
    pool._put_conn(conn)
    for _ in range(5):
        info = client.head(BUCKET, prefix + "w")
        assert info.size == 10 and info.metadata["x-amz-meta-colour"] == "blue"
    again = pool._get_conn()
    pool._put_conn(again)
    assert again is conn and again.sock is not None  # one kept-alive connection served them


def test_a_stream_closed_mid_body_does_not_go_back_to_the_pool(client, prefix):
    client.put(BUCKET, prefix + "s", b"y" * 100_000)
    resp = client.t.send("GET", BUCKET, prefix + "s", operation="GetObject", stream=True)
    view = memoryview(bytearray(10))
    assert resp.readinto(view) == 10
    conn = resp._conn
    resp.close()
    assert conn.sock is None  # closed, not handed to the next request mid-body
    assert client.get_bytes(BUCKET, prefix + "s")[0] == b"y" * 100_000


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

    # The derived signing key is cached per (secret, day, region): a new day or a rotated
    # secret must sign with a new one.
    cases = [(day, secret, token) for day in (2, 3) for secret in ("SK", "SK2")
             for token in (None, "session-token")]
    for day, secret, token in cases:
        fixed = datetime.datetime(2026, 12, day, 23, 59, 59)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)
        creds = botocore.credentials.Credentials("AK", secret, token).get_frozen_credentials()
        host = url.split("/")[2]
        hdrs = {**headers, "host": signing.signed_host(url.split(":")[0], host)}
        ours = signing.sign(creds, "eu-west-1", method, url, hdrs, body)
        ref = AWSRequest(method=method, url=url, data=body, headers=hdrs)
        Reference(creds, "s3", "eu-west-1").add_auth(ref)
        assert ours == dict(ref.headers.items())
        assert ours["Authorization"].startswith(
            f"AWS4-HMAC-SHA256 Credential=AK/2026120{day}/eu-west-1/s3/")
