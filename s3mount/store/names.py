"""S3Name (bucket + key) and the key rules checked before any request is sent."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidKeyError

MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class S3Name:
    """An object's name: a key and, optionally, the bucket it lives in."""

    key: str
    bucket: str | None = None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.bucket else self.key


def validate_key(key: str) -> str:
    if not isinstance(key, str):
        raise InvalidKeyError(f"an S3 key must be a str, not {type(key).__name__}")
    if key == "":
        raise InvalidKeyError("an S3 key must not be empty")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"S3 key is {size} bytes in UTF-8; S3 allows at most {MAX_KEY_BYTES}",
                              key=key[:64] + "...")
    return key


def resolve(remote_name: str | S3Name, default_bucket: str | None) -> tuple[str, str]:
    """Return (bucket, key) for a str key or an S3Name; ValueError when no bucket is known."""
    if isinstance(remote_name, S3Name):
        bucket, key = remote_name.bucket or default_bucket, remote_name.key
    elif isinstance(remote_name, str):
        bucket, key = default_bucket, remote_name
    else:
        raise TypeError(f"remote_name must be a str or an S3Name, not {type(remote_name).__name__}")
    if not bucket:
        raise ValueError(f"no bucket for {key!r}: give S3Name(key, bucket=...) or a default_bucket")
    return bucket, validate_key(key)
