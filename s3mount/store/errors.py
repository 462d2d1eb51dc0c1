"""Typed S3 errors: the one place where an HTTP answer or a transport failure becomes an exception.

Everything above the store (RemoteStore, the file system, the FUSE layer) reasons about these
types and their fields, never about the text of a message.
"""

from __future__ import annotations


class RemoteStoreError(Exception):
    """Base of every failure the store reports."""

    retryable = False

    def __init__(self, message: str, *, operation: str = "", bucket: str | None = None,
                 key: str | None = None, status: int | None = None, code: str | None = None,
                 request_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.message]
        where = "/".join(p for p in (self.bucket, self.key) if p)
        if self.operation:
            parts.append(f"op={self.operation}")
        if where:
            parts.append(f"object={where}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class ConfigError(RemoteStoreError, ValueError):
    """Bad configuration: unknown keys, unreadable file, unusable endpoint."""


class InvalidKeyError(RemoteStoreError, ValueError):
    """A key S3 cannot hold (empty, over 1024 bytes UTF-8); raised before any request."""


class S3Error(RemoteStoreError):
    """An error answer from the server."""


class NotFoundError(S3Error):
    """404 on an object (NoSuchKey, or a HEAD with no body)."""


class NoSuchBucketError(S3Error):
    pass


class NoSuchUploadError(S3Error):
    pass


class AccessDeniedError(S3Error):
    """403: wrong secret, unknown access key, policy denial, expired token."""


class PreconditionFailedError(S3Error):
    """412: an If-Match / If-None-Match condition did not hold."""


class InvalidRangeError(S3Error):
    pass


class ConflictError(S3Error):
    """409: e.g. a concurrent conditional write."""


class ServerError(S3Error):
    """5xx, 429 and SlowDown: the server is struggling; retried before it reaches a caller."""

    retryable = True


class TransportError(RemoteStoreError):
    """No usable answer: connection refused or reset, timeout, truncated body."""

    retryable = True


class IntegrityError(RemoteStoreError):
    """Data arrived with the wrong length or checksum."""

    retryable = True


# S3 error codes that mean "try again" whatever their status says.
# BadDigest: the body's checksum did not match, i.e. it was damaged on the way; the local
# bytes are intact, so sending them again is the cure.
_RETRYABLE_CODES = frozenset({"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable",
                              "RequestTimeTooSkewed", "OperationAborted", "BadDigest"})

_BY_CODE: dict[str, type[S3Error]] = {
    "NoSuchKey": NotFoundError,
    "NotFound": NotFoundError,
    "NoSuchBucket": NoSuchBucketError,
    "NoSuchUpload": NoSuchUploadError,
    "AccessDenied": AccessDeniedError,
    "SignatureDoesNotMatch": AccessDeniedError,
    "InvalidAccessKeyId": AccessDeniedError,
    "ExpiredToken": AccessDeniedError,
    "InvalidToken": AccessDeniedError,
    "PreconditionFailed": PreconditionFailedError,
    "InvalidRange": InvalidRangeError,
    "ConditionalRequestConflict": ConflictError,
}

_BY_STATUS: dict[int, type[S3Error]] = {
    403: AccessDeniedError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    416: InvalidRangeError,
}


def error_from_response(status: int, code: str | None, message: str | None, request_id: str | None,
                        *, operation: str, bucket: str | None, key: str | None) -> S3Error:
    """Map one error answer to its exception type (code first, then status)."""
    if code in _BY_CODE:
        cls = _BY_CODE[code]
    elif code in _RETRYABLE_CODES or status >= 500 or status == 429:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, S3Error)
    if cls is NotFoundError and key is None:
        cls = NoSuchBucketError
    text = message or code or f"HTTP {status}"
    err = cls(text, operation=operation, bucket=bucket, key=key, status=status, code=code,
              request_id=request_id)
    if code in _RETRYABLE_CODES:
        err.retryable = True
    return err
