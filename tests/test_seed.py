"""The seed's two example blocks, run as a script against SeaweedFS."""

import os
import subprocess
import sys

import yaml

from conftest import ACCESS_KEY, BUCKET, SECRET_KEY

HERE = os.path.dirname(os.path.abspath(__file__))


def test_seed_examples_run_verbatim(seaweed, workdir):
    config = {"s3": {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY,
                     "default_bucket": BUCKET,
                     "endpoint": seaweed.endpoint.split("//", 1)[1], "tls": False}}
    with open(os.path.join(workdir, "s3.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    os.chmod(os.path.join(workdir, "s3.yaml"), 0o600)
    with open(os.path.join(workdir, "example"), "w") as f:
        f.write("an example file\n" * 1000)
    out = subprocess.run([sys.executable, os.path.join(HERE, "seed", "example.py")], cwd=workdir,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "seed examples OK" in out.stdout
