"""The S3 client: configuration, signing, retries, typed errors, transfers. Knows nothing of FUSE."""

from .client import S3Client
from .objects import ObjectInfo
from .config import S3Connection, load_config
from .errors import (AccessDeniedError, ConfigError, IntegrityError, InvalidKeyError, NoSuchUploadError,
                     NoSuchBucketError, NotFoundError, PreconditionFailedError, RemoteStoreError,
                     S3Error, ServerError, TransportError)
from .names import S3Name
from .remote_store import RemoteStore

__all__ = ["S3Connection", "S3Name", "RemoteStore", "RemoteStoreError", "S3Client", "ObjectInfo",
           "load_config", "ConfigError", "InvalidKeyError", "S3Error", "NotFoundError",
           "NoSuchBucketError", "AccessDeniedError", "PreconditionFailedError", "ServerError",
           "TransportError", "IntegrityError", "NoSuchUploadError"]
