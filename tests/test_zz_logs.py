"""Runs last (file order): every log the suite's mounts wrote holds no secret."""

from __future__ import annotations

import os

from conftest import LOG_ARCHIVE, SECRET_KEY

SECRETS = [SECRET_KEY, "wrong-secret-value", "not-the-secret-0123456789"]


def test_no_secret_in_any_log():
    files = [os.path.join(LOG_ARCHIVE, n) for n in os.listdir(LOG_ARCHIVE)]
    assert files, "no logs were archived: the scan would prove nothing"
    scanned = 0
    for path in files:
        with open(path, "rb") as f:
            text = f.read()
        scanned += len(text)
        for secret in SECRETS:
            assert secret.encode() not in text, f"{secret[:4]}... found in {path}"
    assert scanned > 0
