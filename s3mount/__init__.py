"""s3mount: an S3 bucket as a local directory, and the RemoteStore S3 client it stands on.

Library use::

    import s3mount as s3
    connection = s3.S3Connection(**yaml.safe_load(open("s3.yaml"))["s3"])
    store = s3.RemoteStore(connection)
    ok = store.write("example", "example-in-s3")
"""

from .store import (ConfigError, InvalidKeyError, RemoteStore, RemoteStoreError, S3Connection,
                    S3Name, load_config)

__version__ = "0.1.0"

__all__ = ["S3Connection", "S3Name", "RemoteStore", "RemoteStoreError", "ConfigError",
           "InvalidKeyError", "load_config", "__version__"]
