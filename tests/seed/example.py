# The two example blocks of the seed (the `s3` package's README, RemoteStore edition), verbatim
# but for `import s3` -> `import s3mount as s3`. Runs in a directory holding `s3.yaml` and a file
# named `example`; the YAML points at the test server.
import subprocess

import yaml

import s3mount as s3
from s3mount import RemoteStoreError

with open('s3.yaml', 'r') as fi:
    config = yaml.safe_load(fi)

connection = s3.S3Connection(**config['s3'])
storage = s3.RemoteStore(connection)

# The following code uses the default bucket and uploads a file named "example" from the local
# filesystem as "example-in-s3" in s3. It then checks that "example-in-s3" exists in storage,
# downloads the file as "example-from-s3", compares the original with the downloaded copy to ensure
# they are the same, deletes "example-in-s3", and finally checks that it is no longer in storage.

try:
    assert storage.write("example", "example-in-s3")
    exists, metadata = storage.exists("example-in-s3")
    assert exists
    success, metadata = storage.read("example-in-s3", "example-from-s3")
    assert success
    assert 0 == subprocess.call(['diff', "example", "example-from-s3"])
    assert storage.delete("example-in-s3")
    exists, metadata = storage.exists("example-in-s3")
    assert not exists
except RemoteStoreError as e:
    print('failed:', e)
    raise

# The following code again uploads "example" as "example-in-s3". This time it uses the bucket
# "my-other-bucket" explicitly, and it sets some metadata and checks that the metadata is set
# correctly. Then it changes the metadata and checks that as well.

headers = {
    'x-amz-meta-state': 'unprocessed',
    }
remote_name = s3.S3Name("example-in-s3", bucket="my-other-bucket")
try:
    assert storage.write("example", remote_name, headers=headers)
    exists, metadata = storage.exists(remote_name)
    assert exists
    assert metadata == headers
    headers['x-amz-meta-state'] = 'processed'
    assert storage.update_metadata(remote_name, headers)
    success, metadata = storage.read(remote_name, "example-from-s3")
    assert metadata == headers
except RemoteStoreError as e:
    print('failed:', e)
    raise
print("seed examples OK")
