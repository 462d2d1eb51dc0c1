"""On-disk data cache: one sparse local file per object, keyed by (bucket, key, ETag).

Knows nothing of S3 or FUSE: missing ranges are fetched through a callable the caller passes in.
"""

from .datacache import CacheEntry, DataCache

__all__ = ["CacheEntry", "DataCache"]
