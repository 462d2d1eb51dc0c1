"""S3Connection: where the server is, how to address buckets, whose credentials, which limits.

The connection is plain configuration plus a credential provider; it opens no sockets. It accepts a
YAML file's ``s3:`` section as keyword arguments and rejects unknown keys by name.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .errors import ConfigError

log = logging.getLogger(__name__)

_AWS_HOST = re.compile(r"(^|\.)amazonaws\.com(\.cn)?$")
# s3-us-west-2.amazonaws.com, s3.eu-central-1.amazonaws.com, s3.dualstack.eu-west-1.amazonaws.com
_AWS_REGION_IN_HOST = re.compile(r"^s3[.-](?:dualstack\.)?([a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazonaws\.com")
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")

MiB = 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str  # host[:port] as it goes into URLs and the Host header
    is_aws: bool


def parse_endpoint(endpoint: str, tls: bool) -> Endpoint:
    """Turn 'host', 'host:port' or a URL into an Endpoint; `tls` picks the scheme when none is given."""
    text = endpoint.strip()
    if not text:
        raise ConfigError("endpoint is empty")
    if "://" not in text:
        text = ("https://" if tls else "http://") + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"endpoint {endpoint!r}: scheme must be http or https")
    if not parts.hostname:
        raise ConfigError(f"endpoint {endpoint!r} has no host name")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"endpoint {endpoint!r}: a path or query is not supported, give only the server")
    try:
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"endpoint {endpoint!r}: {e}") from None
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return Endpoint(parts.scheme, netloc, bool(_AWS_HOST.search(parts.hostname)))


def region_from_host(host: str) -> str | None:
    name = host.split(":")[0]
    m = _AWS_REGION_IN_HOST.match(name)
    if m:
        return m.group(1)
    if name in ("s3.amazonaws.com", "s3-external-1.amazonaws.com"):
        return "us-east-1"
    return None


def _is_ip_or_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.index("]")]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class FrozenCredentials(NamedTuple):
    """What botocore's signer reads (the shape of botocore.credentials.ReadOnlyCredentials)."""
    access_key: str
    secret_key: str
    token: str | None


class StaticCredentials:
    """Keys from the config: the part of botocore's Credentials interface the store uses."""

    method = "config"

    def __init__(self, access_key: str, secret_key: str, token: str | None):
        self._frozen = FrozenCredentials(access_key, secret_key, token)

    def get_frozen_credentials(self) -> FrozenCredentials:
        return self._frozen


class S3Connection:
    """Settings for talking to one S3 endpoint.

    Keyword arguments are the keys of a YAML ``s3:`` section, e.g.
    ``S3Connection(**yaml.safe_load(f)['s3'])``.
    """

    # Every accepted key and its default; the YAML file may use any of them.
    DEFAULTS: dict[str, Any] = {
        "access_key_id": None,
        "secret_access_key": None,
        "session_token": None,
        "default_bucket": None,
        "endpoint": None,
        "tls": True,
        "region": None,
        "profile": None,
        "addressing_style": "auto",     # auto | path | virtual
        "verify_tls": True,             # True, False, or a CA bundle path
        "connect_timeout": 5.0,         # seconds
        "read_timeout": 60.0,           # seconds without a byte
        "max_attempts": 6,              # per request, first try included
        "max_retry_time": 60.0,         # seconds a request may spend retrying
        "retry_base_delay": 0.1,        # seconds; backoff is full jitter, doubling
        "retry_max_delay": 5.0,
        "max_connections": 32,
        "multipart_threshold": 16 * MiB,
        "part_size": 8 * MiB,
        "max_concurrency": 8,
        "drop_download_cache": True,    # read(): do not leave the file in the page cache
        "upload_checksum": "auto",      # auto | crc32 | md5 (store/checksums.py UploadChecksum)
    }

    def __init__(self, **kwargs: Any):
        unknown = sorted(set(kwargs) - set(self.DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown S3 config key(s): {', '.join(unknown)}; "
                              f"known keys are: {', '.join(self.DEFAULTS)}")
        values = {**self.DEFAULTS, **{k: v for k, v in kwargs.items() if v is not None}}
        for k, v in values.items():
            setattr(self, k, v)
        self._check_types()
        for key, allowed in (("addressing_style", ("auto", "path", "virtual")),
                             ("upload_checksum", ("auto", "crc32", "md5"))):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be {', '.join(allowed[:-1])} or {allowed[-1]}, "
                                  f"not {getattr(self, key)!r}")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ConfigError("give both access_key_id and secret_access_key, or neither "
                              "(then the AWS credential chain is used)")

        self._botocore_session = None
        endpoint = (self.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL"))
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if endpoint:
            self.endpoint_info = parse_endpoint(str(endpoint), bool(self.tls))
            region = region or region_from_host(self.endpoint_info.host)
        region = region or self._session_region() or "us-east-1"
        if not endpoint:
            self.endpoint_info = Endpoint("https", f"s3.{region}.amazonaws.com", True)
        self.region = region
        if self.verify_tls is False and self.endpoint_info.scheme == "https":
            log.warning("TLS certificate verification is OFF for %s (verify_tls: false)",
                        self.endpoint_info.host)
        self._credentials = self._resolve_credentials()

    def _check_types(self) -> None:
        for key in ("connect_timeout", "read_timeout", "max_retry_time", "retry_base_delay",
                    "retry_max_delay"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{key} must be a positive number of seconds, not {v!r}")
        for key in ("max_attempts", "max_connections", "multipart_threshold", "part_size",
                    "max_concurrency"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{key} must be a positive integer, not {v!r}")
        if self.part_size < 5 * MiB:
            raise ConfigError(f"part_size must be at least 5 MiB (S3's minimum), not {self.part_size}")
        for key in ("access_key_id", "secret_access_key", "session_token", "default_bucket",
                    "endpoint", "region", "profile"):
            v = getattr(self, key)
            if v is not None and not isinstance(v, str):
                raise ConfigError(f"{key} must be a string, not {type(v).__name__}")
        for key in ("tls", "drop_download_cache"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be true or false, not {getattr(self, key)!r}")

    @property
    def _session(self):
        # botocore.session (and the credential chain) cost ~50 ms of imports; a config with
        # static keys and a known region never needs them (bench/TRANSFER.md, start-up).
        if self._botocore_session is None:
            import botocore.session
            self._botocore_session = botocore.session.Session(profile=self.profile)
        return self._botocore_session

    def _session_region(self) -> str | None:
        try:
            return self._session.get_config_variable("region")
        except Exception as e:  # a broken ~/.aws/config must not hide behind a default region
            raise ConfigError(f"cannot read the AWS config (profile {self.profile!r}): {e}") from None

    def _resolve_credentials(self):
        if self.access_key_id is not None:
            return StaticCredentials(self.access_key_id, self.secret_access_key,
                                     self.session_token)
        try:
            creds = self._session.get_credentials()
        except Exception as e:  # ProfileNotFound, bad SSO cache, ...: say which chain step failed
            raise ConfigError(f"cannot load AWS credentials: {e}") from None
        if creds is None:
            log.warning("no credentials found (config or AWS chain); requests will be anonymous")
        return creds

    def frozen_credentials(self):
        """Current credentials; refreshed by botocore when temporary ones are near expiry."""
        return None if self._credentials is None else self._credentials.get_frozen_credentials()

    @property
    def credential_source(self) -> str:
        if self._credentials is None:
            return "anonymous"
        return getattr(self._credentials, "method", "config")

    def use_virtual_host(self, bucket: str) -> bool:
        if self.addressing_style == "path":
            return False
        dns_ok = bool(_DNS_BUCKET.match(bucket)) and not (self.endpoint_info.scheme == "https"
                                                          and "." in bucket)
        if self.addressing_style == "virtual":
            return dns_ok
        return dns_ok and self.endpoint_info.is_aws and not _is_ip_or_local(self.endpoint_info.host)

    def __repr__(self) -> str:  # never shows a secret
        return (f"S3Connection(endpoint={self.endpoint_info.scheme}://{self.endpoint_info.host}, "
                f"region={self.region}, default_bucket={self.default_bucket!r}, "
                f"credentials={self.credential_source})")


def load_config(path: str, *, allow_insecure: bool = False) -> dict[str, Any]:
    """Read a YAML config file and return its ``s3:`` section (plus any other sections).

    A file that holds a secret and is readable by group or others is refused unless
    `allow_insecure`, as s3fs-fuse does for its passwd file.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            st = os.fstat(f.fileno())
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("s3"), dict):
        raise ConfigError(f"config file {path} must contain a mapping with an 's3:' section")
    secret = doc["s3"].get("secret_access_key")
    if secret and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and not allow_insecure:
        raise ConfigError(f"config file {path} holds a secret key but is accessible by group/others "
                          f"(mode {stat.S_IMODE(st.st_mode):03o}); run chmod 600 {path}, "
                          "or allow it explicitly")
    return doc
