"""A random workload through a fault-injecting proxy, against a model: every call either
succeeds with the model's data or fails with an errno, and afterwards the bucket equals the model
for every name whose calls all succeeded. Counts go to the suite's log archive."""

from __future__ import annotations

import json
import os
import random
import time

from conftest import BUCKET, LOG_ARCHIVE
from mountutil import Mount

FAULTS = [("status", 500, "InternalError"), ("status", 503, "SlowDown"), ("reset",),
          ("reset_mid_body",), ("truncate",), ("stall", 2.0)]


def test_random_workload_under_faults(seaweed, proxy, store, prefix, workdir):
    rnd = random.Random(20261125)
    fault_rnd = random.Random(7)
    config = {"max_attempts": 8, "retry_base_delay": 0.01, "retry_max_delay": 0.2,
              "read_timeout": 1.0, "max_retry_time": 30.0}
    names = [f"f{i}" for i in range(6)]
    files: dict[str, bytes] = {}
    xattrs: dict[str, dict[str, bytes]] = {}
    uncertain: set[str] = set()
    counts = {"operations": 0, "failed_with_errno": 0, "wrong_data": 0}

    def rule(method, target, headers):
        if fault_rnd.random() < 0.2:
            f = fault_rnd.choice(FAULTS)
            if f[0] == "stall" and fault_rnd.random() < 0.7:
                return ("status", 503, "SlowDown")  # keep stalls (each costs a timeout) rare
            return f
        return None

    with Mount(proxy.endpoint, BUCKET, prefix.rstrip("/"), config=config,
               options=["-o", "metadata_ttl=1"], workdir=os.path.join(workdir, "m")) as m:
        proxy.rule = rule
        for _ in range(160):
            op = rnd.choice(["write", "write", "read", "read", "rename", "xattr", "unlink"])
            name = rnd.choice(names)
            counts["operations"] += 1
            try:
                if op == "write":
                    data = rnd.randbytes(rnd.choice([0, 10, 5000, 300_000, 1_200_000]))
                    try:
                        with open(m.path(name), "wb") as f:
                            f.write(data)
                    finally:
                        uncertain.add(name)
                    uncertain.discard(name)
                    files[name] = data
                    xattrs.setdefault(name, {})
                elif op == "read" and name in files and name not in uncertain:
                    with open(m.path(name), "rb") as f:
                        got = f.read()
                    if got != files[name]:
                        counts["wrong_data"] += 1
                elif op == "rename" and name in files:
                    dst = rnd.choice(names)
                    if dst == name:
                        continue
                    uncertain.update({name, dst})
                    os.rename(m.path(name), m.path(dst))
                    files[dst] = files.pop(name)
                    xattrs[dst] = xattrs.pop(name, {})
                    uncertain.difference_update({name, dst})
                elif op == "xattr" and name in files:
                    key, value = f"user.k{rnd.randint(0, 2)}", rnd.randbytes(rnd.randint(0, 40))
                    uncertain.add(name)
                    os.setxattr(m.path(name), key, value)
                    xattrs[name][key] = value
                    uncertain.discard(name)
                elif op == "unlink" and name in files:
                    uncertain.add(name)
                    os.unlink(m.path(name))
                    del files[name]
                    xattrs.pop(name, None)
                    uncertain.discard(name)
            except OSError as e:
                assert e.errno, f"{op} {name} failed without an errno: {e!r}"
                counts["failed_with_errno"] += 1
        proxy.rule = None
        injected = dict(proxy.injected)
    # The bucket, read directly, equals the model wherever every call succeeded.
    time.sleep(0.1)
    listed = {o.key[len(prefix):] for p in store.client.list_all(BUCKET, prefix, None)
              for o in p.objects}
    for name in names:
        if name in uncertain:
            continue
        if name in files:
            assert store.client.get_bytes(BUCKET, prefix + name)[0] == files[name], name
            from s3mount.fs.attrs import decode_xattr_value
            meta = store.client.head(BUCKET, prefix + name).raw_metadata
            for k, v in xattrs[name].items():
                assert decode_xattr_value(meta["x-amz-meta-" + k[5:]]) == v, (name, k)
        else:
            assert name not in listed, name
    assert counts["wrong_data"] == 0
    report = {**counts, "faults_injected": sum(injected.values()), "by_kind": injected,
              "names_uncertain_at_end": len(uncertain)}
    print(json.dumps(report))
    with open(os.path.join(LOG_ARCHIVE, "fault-report.json"), "w") as f:
        json.dump(report, f)
    assert report["faults_injected"] >= 20
