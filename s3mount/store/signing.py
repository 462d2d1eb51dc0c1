"""SigV4 for the store: botocore's S3 signer, given a light request to sign.

botocore computes the canonical request, the string to sign and the signature. What it is handed
here is not its AWSRequest: that one keeps headers in an `email.message.Message`, whose every
lookup goes through `email.policy`, and the signer looks headers up a few dozen times per request
(over half of its ~150 µs per request on this project's VMs). `SigningRequest` has the attributes
botocore's SigV4 signer reads and a plain case-insensitive header map.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

import botocore.auth
from botocore.auth import SIGNED_HEADERS_BLACKLIST, S3SigV4Auth

_UNSIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)


class HeaderMap:
    """Case-insensitive headers, one value per name, with the operations the signer uses
    (those of botocore's HTTPHeaders), in the order they were set."""

    __slots__ = ("_d",)

    def __init__(self, items=()):
        self._d: dict[str, tuple[str, str]] = {}
        for k, v in items:
            self._d[k.lower()] = (k, v)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._d

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()][1]

    def get(self, name: str, default=None):
        entry = self._d.get(name.lower())
        return default if entry is None else entry[1]

    def get_all(self, name: str, failobj=None):
        entry = self._d.get(name.lower())
        return failobj if entry is None else [entry[1]]

    def __setitem__(self, name: str, value: str) -> None:
        self._d[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        self._d.pop(name.lower(), None)  # as email.message: deleting a missing name is no error

    def __iter__(self):
        return (k for k, _ in self._d.values())

    def __len__(self) -> int:
        return len(self._d)

    def keys(self):
        return list(self)

    def items(self):
        return list(self._d.values())


class SigningRequest:
    """What botocore's SigV4 signer reads of a request: method, URL, headers, body, and the
    context it keeps its timestamp in. The query string is part of the URL."""

    __slots__ = ("method", "url", "headers", "body", "context", "params")

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes = b""):
        self.method, self.url, self.body = method, url, body
        self.headers = HeaderMap(headers.items())
        self.context: dict = {}
        self.params: dict = {}


class Signer(S3SigV4Auth):
    """SigV4 for S3. A body with a Content-MD5 or CRC32 (which S3 verifies, and the signature covers) is
    sent as UNSIGNED-PAYLOAD over http too, as botocore does over https: hashing every byte with
    SHA-256 as well costs more CPU than the transfer itself."""

    def _should_sha256_sign_payload(self, request):
        if "Content-MD5" in request.headers or "x-amz-checksum-crc32" in request.headers:
            return False
        return super()._should_sha256_sign_payload(request)

    def signature(self, string_to_sign, request):
        # botocore derives the signing key with four HMACs per request; it changes only with
        # the secret, the day and the region, so it is derived once per (secret, day, region).
        key = _signing_key(self.credentials.secret_key, request.context["timestamp"][0:8],
                           self._region_name, self._service_name)
        return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()

    def headers_to_sign(self, request):
        # botocore's rule (every header but its hop-by-hop list, names lowercased, Host added),
        # into a HeaderMap, once per request: botocore asks twice (canonical request,
        # Authorization header) and the request does not change in between.
        cached = request.context.get("s3mount_headers_to_sign")
        if cached is None:
            cached = HeaderMap((k.lower(), v) for k, v in request.headers.items()
                               if k.lower() not in _UNSIGNED)
            if "host" not in cached:
                cached["host"] = botocore.auth._host_from_url(request.url)
            request.context["s3mount_headers_to_sign"] = cached
        return cached


# Small: a rotated secret's key is dropped after a few rotations, and a key is a day's only.
@functools.lru_cache(maxsize=4)
def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    k = (f"AWS4{secret}").encode("utf-8")
    for part in (day, region, service, "aws4_request"):
        k = hmac.new(k, part.encode("utf-8"), hashlib.sha256).digest()
    return k


@functools.lru_cache(maxsize=64)
def signed_host(scheme: str, host: str) -> str:
    """The Host header botocore signs for this URL (default ports dropped), worked out once
    per host instead of by two URL parses per request."""
    return botocore.auth._host_from_url(f"{scheme}://{host}/")


def sign(credentials, region: str, method: str, url: str, headers: dict[str, str],
         body: bytes) -> dict[str, str]:
    """The headers to send: `headers` plus the date, payload hash and Authorization."""
    req = SigningRequest(method, url, headers, body)
    Signer(credentials, "s3", region).add_auth(req)
    return dict(req.headers.items())
